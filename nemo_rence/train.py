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
import os
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


def _quiet_progress_bars() -> None:
    """--no-progress: no transformers / huggingface_hub bars ("Loading weights" ...) either."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def run(args: argparse.Namespace) -> int:
    """Compose and check (exit 2 on a bad config or run directory), build, fit, report."""
    from nemo_rence.signals import StopFlag

    stop = StopFlag.install()  # first: a signal during start-up is recorded, not fatal
    from nemo_rence.config import ConfigError, compose
    from nemo_rence.infra.distributed import check_world_size

    launched = time.perf_counter()
    try:
        cfg = compose(args.overrides, config_name=args.config_name)
        check_world_size(cfg, int(os.environ.get("WORLD_SIZE", "1")))
        cfg.data.check_files()  # every dataset and benchmark file named by the config exists
        cfg.eval.check_files()
    except ConfigError as err:
        print(f"nemo-rence train: {err}", file=sys.stderr)
        return 2
    from nemo_rence.run_state import CheckpointError, CheckpointManager, RunLock

    run_dir = Path(cfg.run.out_dir)
    checkpoints = CheckpointManager(
        run_dir / "checkpoints",
        keep=cfg.run.keep_checkpoints,
        config=cfg.to_dict(),
        resume=cfg.run.resume,
        best_metric="eval/avg" if cfg.eval.benchmarks else "eval/accuracy",
    )
    lock = RunLock(run_dir)
    try:  # before anything heavy: the run directory's lock, the resume decision, config checks
        if int(os.environ.get("RANK", "0")) == 0:
            lock.acquire()
            if lock.note:
                print(f"{run_dir}: {lock.note}", flush=True)
        checkpoints.prepare()
        done = checkpoints.finished(cfg.run.iterations)
    except CheckpointError as err:
        lock.release()
        print(f"nemo-rence train: {err}", file=sys.stderr)
        return 2
    if done is not None:
        lock.release()
        print(
            f"{run_dir} is finished: iteration {done['iteration']} of run.iterations="
            f"{cfg.run.iterations}, held-out after training: {_fmt(done.get('metrics', {}))}; "
            "nothing to do (raise run.iterations to train further)",
            flush=True,
        )
        return 0
    if args.no_progress:
        _quiet_progress_bars()
    return _build_and_fit(cfg, args, checkpoints, lock, stop, launched)


def _build_and_fit(
    cfg: Any, args: argparse.Namespace, checkpoints: Any, lock: Any, stop: Any, launched: float
) -> int:
    """Build the components, fit, report on rank 0; release everything whatever happens."""
    import torch

    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    from nemo_rence.build import build_components
    from nemo_rence.config import ConfigError
    from nemo_rence.data.datasets import EmptyDatasetError
    from nemo_rence.infra.distributed import rank
    from nemo_rence.infra.metrics import MetricsLogger
    from nemo_rence.infra.trackers import open_trackers
    from nemo_rence.loop import Trainer
    from nemo_rence.policy.megatron.parallel import teardown
    from nemo_rence.run_state import CheckpointError

    run_dir = Path(cfg.run.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = None
    trainer: Trainer | None = None
    try:
        parts = build_components(cfg, run_dir)
        main = rank() == 0
        logger = MetricsLogger(run_dir, True, open_trackers(cfg, run_dir)) if main else None
        trainer = Trainer(cfg, parts, logger, is_main=main)
        result = trainer.fit(checkpoints, stop, launched=launched, progress=not args.no_progress)
        if main:
            _report(trainer, checkpoints, result, run_dir, launched)
        return result.exit_code
    except (EmptyDatasetError, ConfigError) as err:  # data read before any model is built
        print(f"nemo-rence train: {err}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"nemo-rence train: {err}", file=sys.stderr)
        return 1
    finally:
        lock.release()
        if parts is not None:
            parts.close()
        if trainer is not None and trainer.logger is not None:
            trainer.logger.close()
        teardown()


def _report(trainer: Any, checkpoints: Any, result: Any, run_dir: Path, launched: float) -> None:
    """What the run did, on rank 0: held-out accuracy before / after / best, where things are."""
    if result.stopped == "signal":
        print(f"\n{result.message}", flush=True)
        return
    from nemo_rence.infra.plots import write_plots

    trainer.logger.flush()
    plots = write_plots(run_dir)
    print(f"held-out after training:  {_fmt(result.after)}", flush=True)
    if trainer.table:  # the benchmarks' Table-1 row (also in eval/iter-N-after/results.md)
        print(trainer.table, flush=True)
    first = trainer.eval_history[0][1] if trainer.eval_history else {}
    if "eval/accuracy" in result.after and "eval/accuracy" in first:
        delta = 100 * (result.after["eval/accuracy"] - first["eval/accuracy"])
        print(f"held-out accuracy change: {delta:+.1f} points", flush=True)
    best = checkpoints.best()
    if best is not None and best.metric in first:
        gain = 100 * (best.value - first[best.metric])
        what = "held-out accuracy" if best.metric == "eval/accuracy" else best.metric
        print(
            f"best {what}: {100 * best.value:.1f}% at iteration {best.iteration} "
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
