"""The architecture of a supported Hugging Face decoder: :class:`ArchSpec`.

Framework-neutral facts (sizes, head layout, rotary settings, vocabulary padding) read from an HF
config, for the families ReNCE and its baselines use: Llama 3.x (incl. ``rope_type: llama3``
frequency scaling; SmolLM2 is a Llama), Qwen2 / Qwen2.5 (bias on q, k, v), Qwen3 (RMSNorm on q
and k per head). All are pre-norm RMSNorm decoders with SwiGLU MLPs, rotary embeddings and
grouped-query attention. The model builder (``policy.megatron.model``), the weight mapping
(``checkpoint.mapping``) and the memory planner (``plan``) all read it; it imports neither torch
nor megatron.

Vocabulary padding: megatron splits the embedding and output layer by vocabulary rows over the
tensor-parallel ranks, so the number of rows must be divisible by the TP size. The model is built
with :meth:`ArchSpec.padded_vocab_size` rows: the HF vocabulary size rounded up to a multiple of
``make_vocab_size_divisible_by`` (default 128, like Megatron-LM). Unlike Megatron-LM, which pads
to a multiple of ``divisible_by * tp_size``, the padding here does not depend on the TP size (TP
sizes must divide ``make_vocab_size_divisible_by``), so one checkpoint reloads at any TP size.

Example::

    from transformers import AutoConfig
    arch = ArchSpec.from_hf_config(AutoConfig.from_pretrained(hf_dir))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SUPPORTED_MODEL_TYPES", "ArchSpec", "RopeScaling"]

# HF ``model_type`` -> (q/k/v bias, RMSNorm on q and k).
_FAMILIES: dict[str, tuple[bool, bool]] = {
    "llama": (False, False),
    "qwen2": (True, False),
    "qwen3": (False, True),
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_FAMILIES)


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 rotary frequency scaling (HF ``rope_type: llama3``); field names as in HF."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ArchSpec:
    """The architecture of a supported HF decoder, as megatron needs it.

    Build it with :meth:`from_hf_config`; :meth:`to_dict` / :meth:`from_dict` round-trip it
    through JSON (stored in checkpoints), :meth:`to_hf_config` writes an HF ``config.json``.
    """

    model_type: str
    """HF ``model_type``: one of :data:`SUPPORTED_MODEL_TYPES`."""
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    """Number of key/value heads (GQA groups); equals ``num_attention_heads`` for MHA."""
    head_dim: int
    """Per-head size (megatron ``kv_channels``); may differ from hidden_size / heads (Qwen3)."""
    ffn_hidden_size: int
    vocab_size: int
    """The HF (unpadded) vocabulary size; see :meth:`padded_vocab_size`."""
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None = None
    qkv_bias: bool = False
    """Bias on the q, k, v projections (Qwen2)."""
    qk_layernorm: bool = False
    """Per-head RMSNorm on queries and keys before rope (Qwen3)."""
    tie_word_embeddings: bool = False
    make_vocab_size_divisible_by: int = 128
    """The embedding / output layer rows are padded to a multiple of this (see module doc)."""

    def __post_init__(self) -> None:
        if self.model_type not in _FAMILIES:
            raise ValueError(
                f"unsupported model_type {self.model_type!r}; supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if self.num_attention_heads % self.num_query_groups:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_query_groups})"
            )
        if self.make_vocab_size_divisible_by < 1:
            raise ValueError("make_vocab_size_divisible_by must be >= 1")

    @property
    def heads_per_group(self) -> int:
        """Query heads per key/value head."""
        return self.num_attention_heads // self.num_query_groups

    def padded_vocab_size(self, tp_size: int = 1) -> int:
        """Rows of the megatron embedding / output layer (``vocab_size`` rounded up).

        ``tp_size`` is only checked: it must divide ``make_vocab_size_divisible_by`` so that the
        padded size (and hence a checkpoint) is the same for every TP size.
        """
        m = self.make_vocab_size_divisible_by
        if m % tp_size:
            raise ValueError(
                f"tensor-parallel size {tp_size} must divide make_vocab_size_divisible_by={m} "
                "(the vocabulary is padded to a multiple of it and split over TP ranks)"
            )
        return math.ceil(self.vocab_size / m) * m

    @classmethod
    def from_hf_config(cls, cfg: Any, *, make_vocab_size_divisible_by: int = 128) -> ArchSpec:
        """Read a ``transformers.PretrainedConfig`` or a ``config.json`` dict.

        Handles both the transformers 4.x (``rope_theta`` + ``rope_scaling``) and 5.x
        (``rope_parameters``) spellings of the rotary settings.
        """
        d: dict[str, Any] = dict(cfg) if isinstance(cfg, Mapping) else cfg.to_dict()
        model_type = d.get("model_type")
        if model_type not in _FAMILIES:
            raise ValueError(
                f"unsupported model_type {model_type!r}; supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        qkv_bias, qk_layernorm = _FAMILIES[model_type]

        def unsupported(what: str) -> ValueError:
            return ValueError(f"{model_type} config with {what} is not supported")

        if d.get("hidden_act", "silu") != "silu":
            raise unsupported(f"hidden_act={d.get('hidden_act')!r} (only silu / SwiGLU)")
        if model_type != "qwen2" and d.get("attention_bias", False):
            raise unsupported("attention_bias=True (bias on o_proj)")
        if d.get("mlp_bias", False):
            raise unsupported("mlp_bias=True")
        if d.get("use_sliding_window", False):
            raise unsupported("use_sliding_window=True")

        rope = dict(d.get("rope_parameters") or {})
        legacy = d.get("rope_scaling") or {}
        rope = {**legacy, **rope}
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0)) != 1.0:
            raise unsupported("partial_rotary_factor != 1")
        scaling: RopeScaling | None = None
        if rope_type == "llama3":
            scaling = RopeScaling(
                factor=float(rope["factor"]),
                low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
            )
        elif rope_type != "default":
            raise unsupported(f"rope_type={rope_type!r} (supported: default, llama3)")

        heads = int(d["num_attention_heads"])
        hidden = int(d["hidden_size"])
        return cls(
            model_type=model_type,
            num_layers=int(d["num_hidden_layers"]),
            hidden_size=hidden,
            num_attention_heads=heads,
            num_query_groups=int(d.get("num_key_value_heads") or heads),
            head_dim=int(d.get("head_dim") or hidden // heads),
            ffn_hidden_size=int(d["intermediate_size"]),
            vocab_size=int(d["vocab_size"]),
            max_position_embeddings=int(d.get("max_position_embeddings", 4096)),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=scaling,
            qkv_bias=qkv_bias,
            qk_layernorm=qk_layernorm,
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (inverse: :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArchSpec:
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        return cls(**d)

    def to_hf_config(self) -> dict[str, Any]:
        """A minimal HF ``config.json`` dict that transformers loads into the same model."""
        arch_name = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}.get(
            self.model_type, "Qwen3ForCausalLM"
        )
        rope: dict[str, Any] = {"rope_theta": self.rope_theta, "rope_type": "default"}
        if self.rope_scaling is not None:
            rope = {**rope, "rope_type": "llama3", **dataclasses.asdict(self.rope_scaling)}
        cfg: dict[str, Any] = {
            "architectures": [arch_name],
            "model_type": self.model_type,
            "num_hidden_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_query_groups,
            "head_dim": self.head_dim,
            "intermediate_size": self.ffn_hidden_size,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "hidden_act": "silu",
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
            # Both spellings, so that transformers 4.x and 5.x read the same rope.
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
        }
        if self.rope_scaling is not None:
            cfg["rope_scaling"] = dict(rope)
        if self.model_type == "qwen2":
            cfg["use_sliding_window"] = False
        return cfg
