"""NeMo interop: NeMo 2 directories and NeMo 1 ``.nemo`` archives to and from HF, offline.

A NeMo 2 checkpoint has the layout of our own checkpoint (``checkpoint.dist``): ``context/``
(``model.yaml``, tokenizer files) + ``weights/`` (torch_dist, keys ``module.*``, layers stacked).
NeMo 1 ``.nemo`` archives are tar files holding ``model_config.yaml``, tokenizer files and
``model_weights/`` (the same torch_dist format, keys prefixed ``model.`` instead of ``module.``).
:func:`export_nemo` writes either layout from HF weights; :func:`import_nemo` reads either (a
``.nemo`` file, an unpacked ``.nemo`` dir, or a NeMo 2 / nemo-rence dir) into an HF directory.
No model is built: the stored tensors are the "full" megatron tensors of ``checkpoint.mapping``,
stacked on a layer axis (:func:`_stack_layers` / :func:`_unstack_layers`).

The ``context/`` files (NeMo-2 ``model.yaml``, our ``nemo_rence.json``, tokenizer files) are
written by ``checkpoint.context``, shared with ``checkpoint.dist``.

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

from nemo_rence.arch import ArchSpec
from nemo_rence.checkpoint.context import (
    META_FILE,
    copy_tokenizer,
    nemo_config_fields,
    read_yaml,
    write_context,
    write_yaml,
)
from nemo_rence.checkpoint.dist import NEMO2_PREFIX, read_full_tensors, single_process_group
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

__all__ = ["NEMO1_PREFIX", "export_nemo", "import_nemo"]

NEMO1_PREFIX = "model."
"""Prefix of the tensor keys in a ``.nemo`` archive's ``model_weights/``."""
_TE_NORM_NAMES = {  # megatron local-spec name -> the TE name used in dist checkpoints
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}


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
                write_context(tmp / "context", arch, hf_config, hf_dir)
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
                    **nemo_config_fields(arch),
                    "nemo_rence": {"arch": arch.to_dict(), "hf_config": hf_config},
                }
                write_yaml(root / "model_config.yaml", cfg)
                copy_tokenizer(hf_dir, root / "tokenizer")
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
            meta = src / "context" / META_FILE
            cfg: dict[str, Any] = (
                {"nemo_rence": json.loads(meta.read_text())}
                if meta.is_file()
                else read_yaml(src / "context" / "model.yaml")
            )
            tok = src / "context" / "nemo_tokenizer"
        elif (src / "model_weights").is_dir() and (src / "model_config.yaml").is_file():
            weights, prefix = src / "model_weights", NEMO1_PREFIX
            cfg = read_yaml(src / "model_config.yaml")
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
