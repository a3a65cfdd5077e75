"""Which model ``nemo-rence eval`` evaluates: a run's checkpoint or a Hugging Face directory.

``--checkpoint`` accepts::

    runs/x                              a run directory (--select latest | best; default latest)
    runs/x/checkpoints                  the same
    runs/x/checkpoints/iter-000004      one checkpoint of a run
    runs/x/checkpoints/latest | best    a pointer file, resolved
    models/qwen3-4b                     an HF directory (config.json + safetensors / bin)

A run checkpoint is evaluated through the package's one conversion path: its policy checkpoint
(a NeMo-2-style dist checkpoint, ``checkpoint.dist``) is converted offline to an HF directory
with :func:`~nemo_rence.checkpoint.nemo.import_nemo`, using the run's base model's config.json
and tokenizer files (the run's ``config.json`` says which model that is, as
:func:`~nemo_rence.model_sources.resolve_model_dir` resolves it for training). The run's config also
supplies the defaults of the prompt template, chat template and length limits, so evaluation
sees prompts exactly as training did.

:func:`resolve_checkpoint` only inspects files (it runs before any model is loaded);
:func:`materialize_hf_dir` does the conversion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_rence.config import ConfigError, TrainConfig
from nemo_rence.evaluation.inputs import EvalInputError

__all__ = ["ModelSource", "materialize_hf_dir", "resolve_checkpoint"]

SELECT = ("latest", "best")
"""``--select`` choices for a run directory."""


@dataclass
class ModelSource:
    """A resolved ``--checkpoint``.

    Attributes:
        kind: "run" (a run checkpoint) or "hf" (an HF model directory).
        path: the checkpoint directory (``.../iter-NNNNNN``) or the HF directory.
        label: the row name in results.md.
        run_dir: the run directory (kind "run").
        iteration: the checkpoint's training iteration (kind "run").
        config: the run's training config (kind "run").
        base_dir: the HF directory the run started from: its config.json and tokenizer files
            complete the converted checkpoint (kind "run").
        selection: how ``--select`` chose the checkpoint (results.json "checkpoint.selection").
    """

    kind: str
    path: Path
    label: str
    run_dir: Path | None = None
    iteration: int | None = None
    config: TrainConfig | None = None
    base_dir: Path | None = None
    selection: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "iteration": self.iteration,
            "selection": self.selection,
        }


def _is_hf_dir(path: Path) -> bool:
    weights = [*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin")]
    return (path / "config.json").is_file() and bool(weights)


def _is_run_checkpoint(path: Path) -> bool:
    return (path / "trainer.pt").is_file() and (path / "policy").is_dir()


def _read_pointer(pointer: Path) -> str:
    text = pointer.read_text().strip()
    return str(json.loads(text)["checkpoint"]) if text.startswith("{") else text


def _from_run_dir(run_dir: Path, select: str) -> tuple[Path, dict[str, Any]]:
    root = run_dir / "checkpoints"
    if select == "best":
        from nemo_rence.run_state import select_best

        try:
            best = select_best(run_dir)
        except FileNotFoundError as err:
            raise EvalInputError(f"--select best: {err}") from err
        return root / best.checkpoint, {"select": "best", **best.to_json()}
    pointer = root / "latest"
    if not pointer.is_file():
        raise EvalInputError(f"--checkpoint {run_dir}: no 'latest' pointer in {root}")
    return root / _read_pointer(pointer), {"select": "latest"}


def _load_run_config(run_dir: Path) -> TrainConfig:
    from nemo_rence.config import build

    path = run_dir / "config.json"
    if not path.is_file():
        raise EvalInputError(
            f"--checkpoint: the run directory {run_dir} has no config.json (written by "
            "'nemo-rence train'); it names the model, tokenizer and prompt template"
        )
    try:
        return build(json.loads(path.read_text()))
    except (ConfigError, json.JSONDecodeError) as err:
        raise EvalInputError(f"--checkpoint: {path} is not a valid run config: {err}") from err


def resolve_checkpoint(text: str, select: str | None = None) -> ModelSource:
    """Resolve ``--checkpoint`` (and ``--select``) without loading any model.

    Raises:
        EvalInputError: the path does not exist or is none of the accepted kinds, ``--select``
            is not allowed here, or the run's config / base model is missing.
    """
    path = Path(text)
    if select is not None and select not in SELECT:
        raise EvalInputError(f"--select must be one of {list(SELECT)}, got {select!r}")
    if not path.exists():
        raise EvalInputError(f"--checkpoint: no such file or directory: {path}")
    selection: dict[str, Any] = {}
    if path.is_file() and path.name in SELECT:  # a pointer file in a checkpoints directory
        path, selection = path.parent / _read_pointer(path), {"pointer": path.name}
    elif (path / "checkpoints").is_dir() or (path / "latest").is_file():
        run_dir = path if (path / "checkpoints").is_dir() else path.parent
        path, selection = _from_run_dir(run_dir, select or "latest")
        select = None
    elif _is_hf_dir(path) and not _is_run_checkpoint(path):
        if select is not None:
            raise EvalInputError("--select applies to a run directory, not an HF directory")
        return ModelSource(kind="hf", path=path, label=path.resolve().name)
    if select is not None:
        raise EvalInputError(
            "--select applies to a run directory (RUN_DIR or RUN_DIR/checkpoints), not to one "
            f"checkpoint ({path})"
        )
    if not _is_run_checkpoint(path):
        raise EvalInputError(
            f"--checkpoint {text}: not a run directory, run checkpoint (iter-NNNNNN with "
            "trainer.pt and policy/), checkpoint pointer (latest, best) or HF model directory "
            "(config.json + *.safetensors)"
        )
    run_dir = path.parent.parent
    cfg = _load_run_config(run_dir)
    from nemo_rence.model_sources import resolve_model_dir

    try:
        base = resolve_model_dir(cfg.model, run_dir, cfg.run.seed)
    except FileNotFoundError as err:
        raise EvalInputError(f"--checkpoint: the run's base model is missing: {err}") from err
    meta = path / "meta.json"
    iteration = int(json.loads(meta.read_text())["iteration"]) if meta.is_file() else None
    return ModelSource(
        kind="run",
        path=path,
        label=f"{run_dir.resolve().name} {path.name}",
        run_dir=run_dir,
        iteration=iteration,
        config=cfg,
        base_dir=base,
        selection=selection,
    )


def materialize_hf_dir(source: ModelSource, work_dir: Path) -> Path:
    """An HF directory holding ``source``'s weights and tokenizer (converted for a run)."""
    if source.kind == "hf":
        return source.path
    from nemo_rence.checkpoint.context import copy_tokenizer
    from nemo_rence.checkpoint.hf import read_hf_config
    from nemo_rence.checkpoint.nemo import import_nemo

    assert source.base_dir is not None
    out = work_dir / f"hf-{source.path.name}"
    import_nemo(source.path / "policy", out, hf_config=read_hf_config(source.base_dir))
    copy_tokenizer(source.base_dir, out)  # tokenizer + generation_config of the base model
    return out
