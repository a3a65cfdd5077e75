"""Atomic checkpoints of a whole run, and resume.

Layout under ``<run_dir>/checkpoints``::

    iter-000004/policy/        the policy's own checkpoint (model + optimizer; Policy.save)
    iter-000004/trainer.pt     loop state: iteration, filter (cache Q, mastered set), KL
                               coefficient, RNG states, sampler position, evaluation history
    latest                     text file naming the last COMPLETE checkpoint, written last

A checkpoint is written to ``.tmp-iter-NNNNNN`` and renamed when complete; ``latest`` is replaced
atomically afterwards. A run killed at any moment (SIGKILL included) therefore resumes from the
last complete checkpoint; partial ``.tmp-*`` directories are ignored and cleaned up. Everything in
``trainer.pt`` is plain containers and tensors, loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointManager"]


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class CheckpointManager:
    """Saves and restores (policy, loop state) atomically under ``root``."""

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = keep

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        if not (path / "trainer.pt").is_file():
            raise FileNotFoundError(f"{pointer} names {path}, which is not a complete checkpoint")
        return path

    def save(self, trainer: Any, built: Any) -> Path:
        name = f"iter-{trainer.iteration:06d}"
        final, tmp = self.root / name, self.root / f".tmp-{name}"
        if _rank() == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        _barrier()
        built.parts.policy.save(tmp / "policy")
        if _rank() == 0:
            state = {
                "trainer": trainer.state_dict(),
                "sampler": built.sampler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            torch.save(state, tmp / "trainer.pt")
            (tmp / "meta.json").write_text(json.dumps({"iteration": trainer.iteration}))
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            pointer_tmp = self.root / "latest.tmp"
            pointer_tmp.write_text(name + "\n")
            os.replace(pointer_tmp, self.root / "latest")
            for stale in self.root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            for old in sorted(self.root.glob("iter-*"))[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return final

    def resume(self, trainer: Any, built: Any) -> bool:
        """Restore the latest complete checkpoint, if any; return whether one was restored."""
        path = self.latest()
        if path is None:
            return False
        built.parts.policy.load(path / "policy")
        state = torch.load(path / "trainer.pt", weights_only=True)
        built.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        trainer.load_state_dict(state["trainer"])
        return True
