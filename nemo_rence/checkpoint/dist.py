"""Our distributed checkpoint of the policy: save / load at any TP/PP, validation, reading.

A checkpoint directory is NeMo-2-style (the layout NeMo 2 writes and NGC ships)::

    ckpt/
      context/
        model.yaml          NeMo-2-style model config (``_target_`` + ``config:`` fields)
        nemo_rence.json     {"format": 1, "arch": ArchSpec.to_dict(), "hf_config": {...}}
        nemo_tokenizer/     tokenizer files, when known (optional)
      weights/              megatron dist checkpoint (torch_dist: .metadata, *.distcp, common.pt,
                            metadata.json); tensor keys "module.<megatron name>"
      optimizer/            (optional) optimizer state, see :func:`save_checkpoint`

Inside ``weights/`` megatron stores each tensor as ONE global (unsharded) tensor: the
transformer layers are stacked on a leading layer axis (``module.decoder.layers.
self_attention.linear_qkv.weight`` is ``[num_layers, qkv_rows, hidden]``), norms use the
Transformer Engine names (``…linear_qkv.layer_norm_weight``, ``…linear_fc1.layer_norm_weight``)
whatever the layer spec, and ``linear_fc1`` is ``[gate; up]`` - i.e. exactly the "full" layout
of ``checkpoint.mapping`` per layer. That is why a checkpoint saved at one TP/PP reloads at any
other (megatron reshards on load) and why NeMo checkpoints convert without a model
(``checkpoint.nemo``); ``checkpoint.context`` writes the ``context/`` files for both.

The writer assembles the output in a temp dir next to the target and renames it into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nemo_rence.arch import ArchSpec
from nemo_rence.checkpoint.context import META_FILE, write_context
from nemo_rence.checkpoint.hf import atomic_dir, commit_dir
from nemo_rence.checkpoint.mapping import CheckpointError
from nemo_rence.infra.distributed import barrier, broadcast_object, rank

__all__ = [
    "NEMO2_PREFIX",
    "check_dist_checkpoint",
    "load_checkpoint",
    "read_arch",
    "read_full_tensors",
    "save_checkpoint",
    "single_process_group",
]

NEMO2_PREFIX = "module."
"""Prefix of the tensor keys in ``weights/`` (NeMo 2's)."""


# --------------------------------------------------------------------------------------------
# Process group helpers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def single_process_group() -> Iterator[None]:
    """A 1-process gloo group (+ megatron TP=PP=1 state) for offline conversion, if none exists.

    Enables ``infra.cpu_compat`` on a CPU-only machine (process-wide, irreversible).
    """
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    from megatron.core import parallel_state

    from nemo_rence.infra import cpu_compat

    cpu_compat.enable()  # megatron's checkpoint strategies call torch.cuda.synchronize()
    # An in-process store: no port, and no torchrun agent store to wait for.
    dist.init_process_group("gloo", store=dist.HashStore(), world_size=1, rank=0)
    parallel_state.initialize_model_parallel(1, 1)
    try:
        yield
    finally:
        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# Validation of a torch_dist checkpoint
# --------------------------------------------------------------------------------------------


def check_dist_checkpoint(weights_dir: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Check that every tensor's bytes are in the files; return ``{key: global shape}``.

    Raises :class:`CheckpointError` naming the tensor whose data lies past the end of its file
    (a truncated ``*.distcp``) or whose file is missing.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    weights_dir = Path(weights_dir)
    if not (weights_dir / ".metadata").is_file():
        raise CheckpointError(f"{weights_dir} is not a torch_dist checkpoint (no .metadata)")
    try:
        meta = FileSystemReader(str(weights_dir)).read_metadata()
    except Exception as e:  # a cut-off .metadata fails to unpickle
        raise CheckpointError(f"{weights_dir}/.metadata is unreadable: {e}") from e
    sizes: dict[str, int] = {}
    for index, info in (meta.storage_data or {}).items():
        rel = info.relative_path
        if rel not in sizes:
            path = weights_dir / rel
            if not path.is_file():
                raise CheckpointError(f"tensor {index.fqn!r}: its file {path} is missing")
            sizes[rel] = path.stat().st_size
        if info.offset + info.length > sizes[rel]:
            raise CheckpointError(
                f"tensor {index.fqn!r} is truncated: needs bytes {info.offset}..."
                f"{info.offset + info.length} of {rel}, which has {sizes[rel]}"
            )
    return {
        k: tuple(v.size)
        for k, v in meta.state_dict_metadata.items()
        if isinstance(v, TensorStorageMetadata)
    }


# --------------------------------------------------------------------------------------------
# Policy model save / load (collective)
# --------------------------------------------------------------------------------------------


def _sharded_state_dict(model: torch.nn.Module) -> dict[str, Any]:
    return dict(model.sharded_state_dict(prefix=NEMO2_PREFIX))  # type: ignore[operator]


def _iter_sharded(sd: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for k, v in sd.items():
        if isinstance(v, Mapping):
            yield from _iter_sharded(v)
        else:
            yield k, v


def _has_sharded(obj: Any) -> bool:
    from megatron.core.dist_checkpointing.mapping import ShardedBase

    if isinstance(obj, ShardedBase):
        return True
    if isinstance(obj, Mapping):
        return any(_has_sharded(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(_has_sharded(v) for v in obj)
    return False


def _parallel_layout() -> dict[str, int]:
    import torch.distributed as dist
    from megatron.core import parallel_state

    return {
        "world_size": dist.get_world_size(),
        "tp": parallel_state.get_tensor_model_parallel_world_size(),
        "pp": parallel_state.get_pipeline_model_parallel_world_size(),
    }


def save_checkpoint(
    model: torch.nn.Module,
    ckpt_dir: str | os.PathLike[str],
    arch: ArchSpec,
    *,
    optimizer_state: Mapping[str, Any] | None = None,
    hf_config: Mapping[str, Any] | None = None,
    tokenizer_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Save this rank's model shard (collective: every rank calls it) as a NeMo-2-style dir.

    Args:
        model: this rank's ``GPTModel``.
        arch: written to ``context/nemo_rence.json`` (and a NeMo-2 ``model.yaml``).
        optimizer_state: optional. A megatron sharded optimizer state dict (containing
            ``ShardedTensor`` s, e.g. ``MegatronOptimizer.sharded_state_dict(...)``) is saved as a
            dist checkpoint in ``optimizer/`` (reshardable). A plain ``torch.optim`` state dict
            is saved per rank (``optimizer/rank_00000.pt`` ...) and reloads only at the same
            parallel layout.
        hf_config: the HF config to restore on export (default: ``arch.to_hf_config()``).
        tokenizer_dir: a directory whose tokenizer files are copied to ``context/nemo_tokenizer``.
    The directory is written to a temp dir next to ``ckpt_dir`` and renamed on rank 0 at the end
    (needs a filesystem shared by all ranks).
    """
    from megatron.core import dist_checkpointing

    out = Path(ckpt_dir)
    tmp = Path(broadcast_object(str(atomic_dir(out)) if rank() == 0 else ""))
    try:
        (tmp / "weights").mkdir(exist_ok=True)
        barrier()
        dist_checkpointing.save(_sharded_state_dict(model), str(tmp / "weights"))
        if optimizer_state is not None:
            opt_dir = tmp / "optimizer"
            if _has_sharded(optimizer_state):
                if rank() == 0:
                    opt_dir.mkdir(exist_ok=True)
                barrier()
                dist_checkpointing.save(dict(optimizer_state), str(opt_dir))
            else:
                opt_dir.mkdir(exist_ok=True)
                torch.save(dict(optimizer_state), opt_dir / f"rank_{rank():05d}.pt")
                if rank() == 0:
                    (opt_dir / "layout.json").write_text(json.dumps(_parallel_layout()))
        barrier()
        if rank() == 0:
            write_context(tmp / "context", arch, hf_config, tokenizer_dir)
            commit_dir(tmp, out)
        barrier()
    except BaseException:
        if rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_model_against_checkpoint(
    sharded: Mapping[str, Any], stored: Mapping[str, tuple[int, ...]]
) -> None:
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    for _, v in _iter_sharded(sharded):
        if isinstance(v, ShardedTensorFactory):
            key = v.key
            found = stored.get(key)
            if found is None:
                raise CheckpointError(f"tensor {key!r} is missing from the checkpoint")
            continue
        if not isinstance(v, ShardedTensor):
            continue
        found = stored.get(v.key)
        if found is None:
            raise CheckpointError(f"tensor {v.key!r} is missing from the checkpoint")
        if tuple(found) != tuple(v.global_shape):
            raise CheckpointError(
                f"tensor {v.key!r}: the model expects global shape {tuple(v.global_shape)}, "
                f"the checkpoint has {tuple(found)}"
            )


def load_checkpoint(
    model: torch.nn.Module,
    ckpt_dir: str | os.PathLike[str],
    *,
    load_optimizer: bool = True,
    optimizer_sharded_state_dict: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Load weights saved by :func:`save_checkpoint` (any TP/PP) into this rank's model.

    Collective. Before any tensor is read, the files are checked against the checkpoint index
    and every model tensor against the stored global shape: errors name the tensor.
    Returns the optimizer state when the checkpoint has one: loaded into
    ``optimizer_sharded_state_dict`` for a sharded one, this rank's plain state dict otherwise
    (``None`` when there is none or ``load_optimizer`` is false).
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    ckpt = Path(ckpt_dir)
    weights = ckpt / "weights"
    stored = check_dist_checkpoint(weights)
    sharded = _sharded_state_dict(model)
    _check_model_against_checkpoint(sharded, stored)
    stored_objects = {k for k in _all_checkpoint_keys(weights) if k not in stored}
    # Layer-spec specific extra states (e.g. TE fp8 metadata) missing from a checkpoint written
    # with another spec are left at their defaults.
    sharded = {
        k: v
        for k, v in sharded.items()
        if not (isinstance(v, ShardedObject) and v.key not in stored_objects)
    }
    loaded = dist_checkpointing.load(sharded, str(weights))
    state = {k.removeprefix(NEMO2_PREFIX): v for k, v in loaded.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("._extra_state")]
    if missing or unexpected:
        raise CheckpointError(f"load mismatch: missing {missing}, unexpected {unexpected}")
    opt_dir = ckpt / "optimizer"
    if not load_optimizer or not opt_dir.is_dir():
        return None
    if (opt_dir / "layout.json").is_file():
        saved_layout = json.loads((opt_dir / "layout.json").read_text())
        if saved_layout != _parallel_layout():
            raise CheckpointError(
                f"the optimizer state in {opt_dir} is per rank for layout {saved_layout}; this "
                f"run is {_parallel_layout()} (save a sharded optimizer state to reshard it)"
            )
        return dict(torch.load(opt_dir / f"rank_{rank():05d}.pt", weights_only=True))
    if optimizer_sharded_state_dict is None:
        raise CheckpointError(
            f"{opt_dir} holds a sharded optimizer state: pass optimizer_sharded_state_dict"
        )
    return dict(dist_checkpointing.load(dict(optimizer_sharded_state_dict), str(opt_dir)))


def _all_checkpoint_keys(weights_dir: Path) -> set[str]:
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(weights_dir)).read_metadata()
    keys = set(meta.state_dict_metadata)
    # Sharded objects are stored as "<key>/shard_<offsets>_<world>" entries.
    return keys | {k.split("/shard_")[0] for k in keys}


# --------------------------------------------------------------------------------------------
# Reading without a model
# --------------------------------------------------------------------------------------------


def read_arch(ckpt_dir: str | os.PathLike[str]) -> ArchSpec:
    """The architecture stored with a checkpoint written by this package."""
    meta = Path(ckpt_dir) / "context" / META_FILE
    if not meta.is_file():
        raise CheckpointError(f"{ckpt_dir} has no context/{META_FILE}; not a nemo-rence checkpoint")
    return ArchSpec.from_dict(json.loads(meta.read_text())["arch"])


def read_full_tensors(weights_dir: str | os.PathLike[str], prefix: str) -> dict[str, Tensor]:
    """All tensors of a torch_dist checkpoint (global, unsharded), ``prefix`` stripped."""
    from megatron.core import dist_checkpointing

    check_dist_checkpoint(weights_dir)
    with single_process_group():
        plain = dist_checkpointing.load_plain_tensors(str(weights_dir))
    out: dict[str, Tensor] = {}
    for k, v in plain.items():
        if isinstance(v, Tensor) and not k.endswith("_extra_state"):
            out[k.removeprefix(prefix)] = v
    return out
