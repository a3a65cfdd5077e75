"""The ``context/`` files of a checkpoint directory (ours and NeMo's), written without a model.

``context/`` holds a NeMo-2-style ``model.yaml`` (``_target_`` + ``config:`` fields, so NeMo 2
recognises the directory), our metadata :data:`META_FILE` (format version, :class:`ArchSpec`,
HF config) and the tokenizer files in ``nemo_tokenizer/``. Both writers use it:
``checkpoint.dist.save_checkpoint`` (a trained model) and ``checkpoint.nemo.export_nemo`` (HF
weights, offline); it depends on neither.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nemo_rence.arch import ArchSpec
from nemo_rence.checkpoint.mapping import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "META_FILE",
    "copy_tokenizer",
    "nemo_config_fields",
    "read_yaml",
    "write_context",
    "write_yaml",
]

FORMAT_VERSION = 1
"""Version of ``context/nemo_rence.json``."""
META_FILE = "nemo_rence.json"
"""Our metadata file in ``context/``: format, :class:`ArchSpec`, HF config."""

_NEMO2_TARGETS = {
    "llama": ("nemo.collections.llm.gpt.model.llama.LlamaModel", "nemo.collections.llm.gpt.model.llama.LlamaConfig"),
    "qwen2": ("nemo.collections.llm.gpt.model.qwen2.Qwen2Model", "nemo.collections.llm.gpt.model.qwen2.Qwen2Config"),
    "qwen3": ("nemo.collections.llm.gpt.model.qwen3.Qwen3Model", "nemo.collections.llm.gpt.model.qwen3.Qwen3Config"),
}  # fmt: skip


def nemo_config_fields(arch: ArchSpec) -> dict[str, Any]:
    """NeMo ``GPTConfig`` fields of ``arch`` (NeMo 2 ``model.yaml``, NeMo 1 ``model_config.yaml``)."""
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


def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    """Write a mapping as YAML (omegaconf, as NeMo does)."""
    from omegaconf import OmegaConf

    path.write_text(OmegaConf.to_yaml(OmegaConf.create(dict(data))))


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping (unresolved, so NeMo's ``${...}`` interpolations stay as written)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a YAML mapping")
    return {str(k): v for k, v in data.items()}


def copy_tokenizer(src: str | os.PathLike[str] | None, dst: Path) -> None:
    """Copy ``src``'s tokenizer and other small files (no weights, no config.json) to ``dst``."""
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


def write_context(
    ctx: Path,
    arch: ArchSpec,
    hf_config: Mapping[str, Any] | None,
    tokenizer_dir: str | os.PathLike[str] | None,
) -> None:
    """Write a checkpoint's ``context/``: NeMo-2 ``model.yaml``, our metadata, tokenizer."""
    ctx.mkdir(parents=True, exist_ok=True)
    model_target, config_target = _NEMO2_TARGETS[arch.model_type]
    write_yaml(
        ctx / "model.yaml",
        {
            "_target_": model_target,
            "config": {"_target_": config_target, **nemo_config_fields(arch)},
        },
    )
    meta = {
        "format": FORMAT_VERSION,
        "arch": arch.to_dict(),
        "hf_config": dict(hf_config) if hf_config is not None else arch.to_hf_config(),
    }
    (ctx / META_FILE).write_text(json.dumps(meta, indent=2))
    copy_tokenizer(tokenizer_dir, ctx / "nemo_tokenizer")
