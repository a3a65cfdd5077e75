"""``nemo-rence train [overrides]``: compose the config, build the components, fit, report.

    nemo-rence train                                   # the embedded default (conf/train.yaml)
    nemo-rence train algorithm=grpo run.iterations=20  # any Hydra override
    torchrun --nproc_per_node 2 -m nemo_rence train policy.tensor_parallel=2 model=tiny

A run directory (``run.out_dir``) receives ``config.json``, ``metrics.jsonl``, TensorBoard events
(``tb/``) and atomic checkpoints (``checkpoints/iter-NNNNNN`` + a ``latest`` pointer written last).
The run itself (resume, evaluation, checkpoints, the time budget, SIGUSR1 / SIGTERM) is
:meth:`nemo_rence.loop.Trainer.fit`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from nemo_rence.infra.metrics import format_metrics as _fmt

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides: 'group=option' (algorithm=grpo) or 'key=value' (optim.lr=2e-6)",
    )
    parser.add_argument("--config-name", default="train", help="config in conf/ (default: train)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _StopFlag:
    """Set by SIGUSR1 / SIGTERM; ``Trainer.fit`` checkpoints and exits after the current
    iteration (or the current draw of its batch search)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum


def run(args: argparse.Namespace) -> int:
    from nemo_rence.config import ConfigError, compose

    launched = time.perf_counter()
    try:
        cfg = compose(args.overrides, config_name=args.config_name)
    except ConfigError as err:
        print(f"nemo-rence train: {err}", file=sys.stderr)
        return 2

    import torch

    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    from nemo_rence.build import build_components
    from nemo_rence.infra.distributed import rank
    from nemo_rence.infra.metrics import MetricsLogger
    from nemo_rence.infra.trackers import open_trackers
    from nemo_rence.loop import Trainer
    from nemo_rence.policy.megatron.parallel import teardown
    from nemo_rence.run_state import CheckpointManager

    run_dir = Path(cfg.run.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = build_components(cfg, run_dir)
    trainer: Trainer | None = None
    try:
        if main := rank() == 0:
            (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        logger = MetricsLogger(run_dir, True, open_trackers(cfg, run_dir)) if main else None
        trainer = Trainer(cfg, parts, logger, is_main=main)
        checkpoints = CheckpointManager(run_dir / "checkpoints", keep=cfg.run.keep_checkpoints)
        result = trainer.fit(
            checkpoints, _StopFlag(), launched=launched, progress=not args.no_progress
        )
        if main:
            _report(trainer, checkpoints, result, run_dir, launched)
        return result.exit_code
    finally:
        parts.close()
        if trainer is not None and trainer.logger is not None:
            trainer.logger.close()
        teardown()


def _report(trainer: Any, checkpoints: Any, result: Any, run_dir: Path, launched: float) -> None:
    """What the run did, on rank 0: held-out accuracy before / after / best, where things are."""
    if result.stopped in ("signal", "finished"):
        print(f"\n{result.message}" if result.stopped == "signal" else result.message, flush=True)
        return
    from nemo_rence.infra.plots import write_plots

    trainer.logger.flush()
    plots = write_plots(run_dir)
    print(f"held-out after training:  {_fmt(result.after)}", flush=True)
    first = trainer.eval_history[0][1] if trainer.eval_history else {}
    if "eval/accuracy" in result.after and "eval/accuracy" in first:
        delta = 100 * (result.after["eval/accuracy"] - first["eval/accuracy"])
        print(f"held-out accuracy change: {delta:+.1f} points", flush=True)
        best = checkpoints.best()
        if best is not None:
            gain = 100 * (best.value - first["eval/accuracy"])
            print(
                f"best held-out accuracy: {100 * best.value:.1f}% at iteration {best.iteration} "
                f"({gain:+.1f} points; checkpoints/best -> {best.checkpoint})",
                flush=True,
            )
    print(
        f"run directory: {run_dir} (metrics.jsonl, tb/, checkpoints/ -> {result.latest.name}, "
        f"{len(plots)} plots in plots/); {time.perf_counter() - launched:.0f} s",
        flush=True,
    )


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="nemo-rence train")
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
