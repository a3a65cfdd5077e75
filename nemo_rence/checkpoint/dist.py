"""Megatron distributed checkpoints of the policy, and NeMo / NGC checkpoint interop.

Our checkpoint directory IS a NeMo-2-style checkpoint (the layout NeMo 2 writes and NGC ships)::

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
other (megatron reshards on load) and why NeMo checkpoints convert without a model.

NeMo 1 ``.nemo`` archives are tar files holding ``model_config.yaml``, tokenizer files and
``model_weights/`` (the same torch_dist format, keys prefixed ``model.`` instead of ``module.``).
:func:`export_nemo` writes either layout from HF weights; :func:`import_nemo` reads either (a
``.nemo`` file, an unpacked ``.nemo`` dir, or a NeMo 2 dir) into an HF directory.

All writers assemble the output in a temp dir next to the target and rename it into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nemo_rence.checkpoint.hf import (
    SaveSummary,
    atomic_dir,
    commit_dir,
    load_hf_state_dict,
    read_hf_config,
    save_hf_dir,
)
from nemo_rence.checkpoint.mapping import (
    CheckpointError,
    expected_hf_shapes,
    hf_to_megatron,
    layer_index,
    megatron_to_hf,
)
from nemo_rence.policy.megatron.model import ArchSpec

__all__ = [
    "NEMO1_PREFIX",
    "NEMO2_PREFIX",
    "check_dist_checkpoint",
    "export_nemo",
    "import_nemo",
    "load_checkpoint",
    "read_arch",
    "read_full_tensors",
    "save_checkpoint",
    "single_process_group",
]

FORMAT_VERSION = 1
NEMO2_PREFIX = "module."
NEMO1_PREFIX = "model."
_META = "nemo_rence.json"
_TE_NORM_NAMES = {  # megatron local-spec name -> the TE name used in dist checkpoints
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}
_NEMO2_TARGETS = {
    "llama": ("nemo.collections.llm.gpt.model.llama.LlamaModel", "nemo.collections.llm.gpt.model.llama.LlamaConfig"),
    "qwen2": ("nemo.collections.llm.gpt.model.qwen2.Qwen2Model", "nemo.collections.llm.gpt.model.qwen2.Qwen2Config"),
    "qwen3": ("nemo.collections.llm.gpt.model.qwen3.Qwen3Model", "nemo.collections.llm.gpt.model.qwen3.Qwen3Config"),
}  # fmt: skip


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


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def _broadcast_str(value: str) -> str:
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


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
    tmp = Path(_broadcast_str(str(atomic_dir(out)) if _rank() == 0 else ""))
    try:
        (tmp / "weights").mkdir(exist_ok=True)
        _barrier()
        dist_checkpointing.save(_sharded_state_dict(model), str(tmp / "weights"))
        if optimizer_state is not None:
            opt_dir = tmp / "optimizer"
            if _has_sharded(optimizer_state):
                if _rank() == 0:
                    opt_dir.mkdir(exist_ok=True)
                _barrier()
                dist_checkpointing.save(dict(optimizer_state), str(opt_dir))
            else:
                opt_dir.mkdir(exist_ok=True)
                torch.save(dict(optimizer_state), opt_dir / f"rank_{_rank():05d}.pt")
                if _rank() == 0:
                    (opt_dir / "layout.json").write_text(json.dumps(_parallel_layout()))
        _barrier()
        if _rank() == 0:
            _write_context(tmp / "context", arch, hf_config, tokenizer_dir)
            commit_dir(tmp, out)
        _barrier()
    except BaseException:
        if _rank() == 0:
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
        return dict(torch.load(opt_dir / f"rank_{_rank():05d}.pt", weights_only=True))
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


def read_arch(ckpt_dir: str | os.PathLike[str]) -> ArchSpec:
    """The architecture stored with a checkpoint written by this package."""
    meta = Path(ckpt_dir) / "context" / _META
    if not meta.is_file():
        raise CheckpointError(f"{ckpt_dir} has no context/{_META}; not a nemo-rence checkpoint")
    return ArchSpec.from_dict(json.loads(meta.read_text())["arch"])


# --------------------------------------------------------------------------------------------
# Context files (NeMo-2-style model.yaml, our json, tokenizer)
# --------------------------------------------------------------------------------------------


def _nemo_config_fields(arch: ArchSpec) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "num_layers": arch.num_layers,
        "hidden_size": arch.hidden_size,
        "ffn_hidden_size": arch.ffn_hidden_size,
        "num_attention_heads": arch.num_attention_heads,
        "num_query_groups": arch.num_query_groups,
        "kv_channels": arch.head_dim,
        "layernorm_epsilon": arch.rms_norm_eps,
        "rotary_base": arch.rope_theta,
        "seq_length": arch.max_position_embeddings,
        "share_embeddings_and_output_weights": arch.tie_word_embeddings,
        "normalization": "RMSNorm",
        "gated_linear_unit": True,
        "add_bias_linear": False,
        "add_qkv_bias": arch.qkv_bias,
        "qk_layernorm": arch.qk_layernorm,
        "position_embedding_type": "rope",
        "vocab_size": arch.vocab_size,
        "make_vocab_size_divisible_by": arch.make_vocab_size_divisible_by,
    }
    if arch.rope_scaling is not None:
        s = arch.rope_scaling
        fields.update(
            scale_factor=s.factor,
            low_freq_factor=s.low_freq_factor,
            high_freq_factor=s.high_freq_factor,
            old_context_len=s.original_max_position_embeddings,
        )
    return fields


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    from omegaconf import OmegaConf

    path.write_text(OmegaConf.to_yaml(OmegaConf.create(dict(data))))


def _read_yaml(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a YAML mapping")
    return {str(k): v for k, v in data.items()}


def _copy_tokenizer(src: str | os.PathLike[str] | None, dst: Path) -> None:
    if src is None:
        return
    files = [
        f
        for f in Path(src).iterdir()
        if f.is_file()
        and f.suffix not in (".safetensors", ".bin", ".gguf", ".pt")
        and f.name not in ("config.json", "model.safetensors.index.json")
    ]
    if files:
        dst.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dst / f.name)


def _write_context(
    ctx: Path,
    arch: ArchSpec,
    hf_config: Mapping[str, Any] | None,
    tokenizer_dir: str | os.PathLike[str] | None,
) -> None:
    ctx.mkdir(parents=True, exist_ok=True)
    model_target, config_target = _NEMO2_TARGETS[arch.model_type]
    _write_yaml(
        ctx / "model.yaml",
        {
            "_target_": model_target,
            "config": {"_target_": config_target, **_nemo_config_fields(arch)},
        },
    )
    meta = {
        "format": FORMAT_VERSION,
        "arch": arch.to_dict(),
        "hf_config": dict(hf_config) if hf_config is not None else arch.to_hf_config(),
    }
    (ctx / _META).write_text(json.dumps(meta, indent=2))
    _copy_tokenizer(tokenizer_dir, ctx / "nemo_tokenizer")


# --------------------------------------------------------------------------------------------
# Offline NeMo export / import (no model is built)
# --------------------------------------------------------------------------------------------


def _stack_layers(full: Mapping[str, Tensor], arch: ArchSpec) -> dict[str, Tensor]:
    """Full megatron tensors (global layer names) -> dist-checkpoint tensors (layers stacked)."""
    out: dict[str, Tensor] = {}
    per_layer: dict[str, list[Tensor | None]] = {}
    for name, t in full.items():
        i = layer_index(name)
        if i is None:
            out[name] = t
            continue
        suffix = name.split(".", 3)[3]
        suffix = _TE_NORM_NAMES.get(suffix, suffix)
        per_layer.setdefault(suffix, [None] * arch.num_layers)[i] = t
    for suffix, tensors in per_layer.items():
        if any(t is None for t in tensors):
            raise CheckpointError(f"decoder.layers.*.{suffix} is missing for some layers")
        out[f"decoder.layers.{suffix}"] = torch.stack([t for t in tensors if t is not None])
    return out


def _unstack_layers(stored: Mapping[str, Tensor], arch: ArchSpec) -> Iterator[tuple[str, Tensor]]:
    """Inverse of :func:`_stack_layers`: global-layer-named full tensors, one at a time."""
    for key, t in stored.items():
        if key.startswith("decoder.layers."):
            suffix = key.removeprefix("decoder.layers.")
            if t.shape[0] != arch.num_layers:
                raise CheckpointError(
                    f"tensor {key!r}: expected {arch.num_layers} stacked layers, found "
                    f"shape {tuple(t.shape)}"
                )
            for i in range(arch.num_layers):
                yield f"decoder.layers.{i}.{suffix}", t[i]
        else:
            yield key, t


def export_nemo(
    hf_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    layout: str = "auto",
    make_vocab_size_divisible_by: int = 128,
    progress: bool = False,
) -> SaveSummary:
    """Write an HF model as a NeMo checkpoint, without building a model.

    Args:
        layout: ``'nemo2'`` (a directory with ``context/`` + ``weights/``, keys ``module.*``),
            ``'nemo1'`` (a ``.nemo`` tar with ``model_config.yaml`` + ``model_weights/``, keys
            ``model.*``) or ``'auto'`` (nemo1 when ``out`` ends with ``.nemo``).
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    out = Path(out)
    if layout == "auto":
        layout = "nemo1" if out.suffix == ".nemo" else "nemo2"
    if layout not in ("nemo1", "nemo2"):
        raise ValueError(f"layout must be 'nemo1', 'nemo2' or 'auto'; got {layout!r}")
    hf_config = read_hf_config(hf_dir)
    arch = ArchSpec.from_hf_config(
        hf_config, make_vocab_size_divisible_by=make_vocab_size_divisible_by
    )
    hf_sd = load_hf_state_dict(hf_dir)
    full = hf_to_megatron(hf_sd, arch, spec="te")
    stacked = _stack_layers(full, arch)
    prefix = NEMO1_PREFIX if layout == "nemo1" else NEMO2_PREFIX
    sharded = {}
    for k, t in _progress_iter(stacked.items(), progress, "stack", len(stacked)):
        sharded[prefix + k] = ShardedTensor.from_rank_offsets(
            prefix + k, t.contiguous(), replica_id=0
        )
    total = sum(t.numel() * t.element_size() for t in stacked.values())
    with single_process_group():
        if layout == "nemo2":
            tmp = atomic_dir(out)
            try:
                (tmp / "weights").mkdir()
                dist_checkpointing.save(sharded, str(tmp / "weights"))
                _write_context(tmp / "context", arch, hf_config, hf_dir)
                commit_dir(tmp, out)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        else:
            with tempfile.TemporaryDirectory(dir=out.parent) as work:
                root = Path(work)
                (root / "model_weights").mkdir()
                dist_checkpointing.save(sharded, str(root / "model_weights"))
                cfg = {
                    **_nemo_config_fields(arch),
                    "nemo_rence": {"arch": arch.to_dict(), "hf_config": hf_config},
                }
                _write_yaml(root / "model_config.yaml", cfg)
                _copy_tokenizer(hf_dir, root / "tokenizer")
                part = root / "archive.nemo"
                with tarfile.open(part, "w") as tar:
                    for item in ("model_config.yaml", "model_weights", "tokenizer"):
                        if (root / item).exists():
                            tar.add(root / item, arcname=f"./{item}")
                os.replace(part, out)
    # tensors: HF tensors converted (stored as fewer, layer-stacked, checkpoint tensors)
    return SaveSummary(tensors=len(full), bytes=total, files=[out.name], path=str(out))


def _progress_iter(items: Any, enabled: bool, desc: str, total: int) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit="tensor")


def _arch_from_nemo_config(
    cfg: Mapping[str, Any], vocab_rows: int
) -> tuple[ArchSpec, dict[str, Any]]:
    """(arch, hf_config) from our stored metadata, or from NeMo config fields."""
    ours = cfg.get("nemo_rence")
    if isinstance(ours, Mapping):
        return ArchSpec.from_dict(ours["arch"]), dict(ours["hf_config"])
    c = dict(cfg.get("config", cfg))
    target = str(cfg.get("_target_", c.get("_target_", ""))).lower()
    model_type = next((t for t in ("qwen3", "qwen2", "llama") if t in target), None)
    if model_type is None:
        model_type = (
            "qwen3" if c.get("qk_layernorm") else "qwen2" if c.get("add_qkv_bias") else "llama"
        )
    try:
        hf: dict[str, Any] = {
            "model_type": model_type,
            "num_hidden_layers": c["num_layers"],
            "hidden_size": c["hidden_size"],
            "intermediate_size": c["ffn_hidden_size"],
            "num_attention_heads": c["num_attention_heads"],
            "num_key_value_heads": c.get("num_query_groups") or c["num_attention_heads"],
            "head_dim": c.get("kv_channels") or c["hidden_size"] // c["num_attention_heads"],
            "rms_norm_eps": c.get("layernorm_epsilon", 1e-5),
            "rope_theta": c.get("rotary_base", 10000),
            "max_position_embeddings": c.get("seq_length")
            or c.get("max_position_embeddings", 4096),
            "tie_word_embeddings": bool(c.get("share_embeddings_and_output_weights", False)),
            "vocab_size": c.get("vocab_size") or vocab_rows,
        }
    except KeyError as e:
        raise CheckpointError(f"NeMo model config lacks {e}; pass the HF config explicitly") from e
    if "low_freq_factor" in c:
        hf["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": c.get("scale_factor", 8.0),
            "low_freq_factor": c["low_freq_factor"],
            "high_freq_factor": c["high_freq_factor"],
            "original_max_position_embeddings": c.get("old_context_len", 8192),
        }
    arch = ArchSpec.from_hf_config(
        hf, make_vocab_size_divisible_by=int(c.get("make_vocab_size_divisible_by") or 1)
    )
    return arch, arch.to_hf_config()


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


def import_nemo(
    src: str | os.PathLike[str],
    out_hf_dir: str | os.PathLike[str],
    *,
    hf_config: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> SaveSummary:
    """Convert a NeMo checkpoint to an HF safetensors directory.

    ``src``: a ``.nemo`` tar file, an unpacked ``.nemo`` directory (``model_config.yaml`` +
    ``model_weights/``), or a NeMo 2 / nemo-rence directory (``context/`` + ``weights/``).
    The architecture comes from our ``nemo_rence`` metadata when present, else from the NeMo
    model config (or ``hf_config`` when given, which also becomes the exported config.json).
    """
    src = Path(src)
    with contextlib.ExitStack() as stack:
        if src.is_file():
            work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            try:
                with tarfile.open(src) as tar:
                    tar.extractall(work, filter="data")
            except (tarfile.TarError, EOFError) as e:
                raise CheckpointError(f"{src} is not a readable .nemo archive: {e}") from e
            src = work
        if (src / "weights").is_dir() and (src / "context").is_dir():
            weights, prefix = src / "weights", NEMO2_PREFIX
            meta = src / "context" / _META
            cfg: dict[str, Any] = (
                {"nemo_rence": json.loads(meta.read_text())}
                if meta.is_file()
                else _read_yaml(src / "context" / "model.yaml")
            )
            tok = src / "context" / "nemo_tokenizer"
        elif (src / "model_weights").is_dir() and (src / "model_config.yaml").is_file():
            weights, prefix = src / "model_weights", NEMO1_PREFIX
            cfg = _read_yaml(src / "model_config.yaml")
            tok = src / "tokenizer"
        else:
            raise CheckpointError(
                f"{src}: not a NeMo checkpoint (expected context/ + weights/, or "
                "model_config.yaml + model_weights/)"
            )
        stored = read_full_tensors(weights, prefix)
        emb = stored.get("embedding.word_embeddings.weight")
        if emb is None:
            raise CheckpointError(f"tensor {prefix}embedding.word_embeddings.weight is missing")
        if hf_config is not None:
            arch, out_config = ArchSpec.from_hf_config(hf_config), dict(hf_config)
        else:
            arch, out_config = _arch_from_nemo_config(cfg, emb.shape[0])
        if emb.shape[0] < arch.vocab_size:
            raise CheckpointError(
                f"tensor {prefix}embedding.word_embeddings.weight has {emb.shape[0]} rows, fewer "
                f"than the vocabulary ({arch.vocab_size})"
            )
        # However the writer padded the vocabulary, its rows are the padded size.
        arch = dataclasses.replace(arch, make_vocab_size_divisible_by=int(emb.shape[0]))

        def tensors() -> Iterator[tuple[str, Tensor]]:
            seen: set[str] = set()
            for name, t in _unstack_layers(stored, arch):
                for hf_name, ht in megatron_to_hf(name, t, arch):
                    seen.add(hf_name)
                    yield hf_name, ht
            missing = [k for k in expected_hf_shapes(arch) if k not in seen]
            if missing:
                raise CheckpointError(
                    f"NeMo checkpoint lacks tensor(s) for {', '.join(missing[:8])}"
                )

        return save_hf_dir(
            tensors(), out_hf_dir, out_config,
            extra_files_from=tok if tok.is_dir() else None, progress=progress,
            total=len(expected_hf_shapes(arch)),
        )  # fmt: skip
