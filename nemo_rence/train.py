"""``nemo-rence train [overrides]``: compose the config, build the components, run the loop.

    nemo-rence train                                   # the embedded default (conf/train.yaml)
    nemo-rence train algorithm=grpo run.iterations=20  # any Hydra override
    torchrun --nproc_per_node 2 -m nemo_rence train policy.tensor_parallel=2 model=tiny

A run directory (``run.out_dir``) receives ``config.json``, ``metrics.jsonl``, TensorBoard events
(``tb/``) and atomic checkpoints (``checkpoints/iter-NNNNNN`` + a ``latest`` pointer written last).
The newest complete checkpoint is resumed (``run.resume``, config checks: :mod:`nemo_rence.run_state`).
SIGUSR1 / SIGTERM (SLURM preemption) and SIGINT (Ctrl-C) finish the current iteration, or stop its
batch search after the current draw, write a checkpoint and exit (0; 130 after Ctrl-C:
:mod:`nemo_rence.signals`). ``run.time_budget_min`` ends the run in time (:mod:`nemo_rence.budget`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides: 'group=option' (algorithm=grpo) or 'key=value' (optim.lr=2e-6)",
    )
    parser.add_argument("--config-name", default="train", help="config in conf/ (default: train)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="it", dynamic_ncols=True)


def _summary(metrics: dict[str, float]) -> dict[str, str]:
    keys = {
        "reward/correct_rate": "correct",
        "filter/accept_rate": "accept",
        "loss/total": "loss",
        "kl/coef": "kl_coef",
        "refit/logprob_gap": "gap",
    }
    return {short: f"{metrics[k]:.3g}" for k, short in keys.items() if k in metrics}


def _quiet_progress_bars() -> None:
    """--no-progress: no transformers / huggingface_hub bars ("Loading weights" ...) either."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def run(args: argparse.Namespace) -> int:
    from nemo_rence.signals import StopFlag

    stop = StopFlag.install()  # first: a signal during start-up is recorded, not fatal
    from nemo_rence.config import ConfigError, compose
    from nemo_rence.infra.distributed import check_world_size

    launched = time.perf_counter()
    try:
        cfg = compose(args.overrides, config_name=args.config_name)
        check_world_size(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    except ConfigError as err:
        print(f"nemo-rence train: {err}", file=sys.stderr)
        return 2
    from nemo_rence.run_state import CheckpointError, CheckpointManager, RunLock

    run_dir = Path(cfg.run.out_dir)
    ckpt = CheckpointManager(
        run_dir / "checkpoints",
        keep=cfg.run.keep_checkpoints,
        config=dataclasses.asdict(cfg),
        resume=cfg.run.resume,
    )
    lock = RunLock(run_dir)
    try:  # before anything heavy: the run directory's lock, the resume decision, config checks
        if int(os.environ.get("RANK", "0")) == 0:
            lock.acquire()
            if lock.note:
                print(f"{run_dir}: {lock.note}", flush=True)
        ckpt.prepare()
        done = ckpt.finished(cfg.run.iterations)
    except CheckpointError as err:
        print(f"nemo-rence train: {err}", file=sys.stderr)
        return 2
    if done is not None:
        print(
            f"{run_dir} is finished: iteration {done['iteration']} of run.iterations="
            f"{cfg.run.iterations}, held-out after training: {_fmt(done.get('metrics', {}))}; "
            "nothing to do (raise run.iterations to train further)",
            flush=True,
        )
        return 0
    if args.no_progress:
        _quiet_progress_bars()

    import torch

    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    from nemo_rence.algorithm.filter import SearchInterrupted
    from nemo_rence.budget import TimeBudget
    from nemo_rence.build import build_components
    from nemo_rence.infra.distributed import broadcast_object
    from nemo_rence.infra.metrics import MetricsLogger
    from nemo_rence.infra.trackers import open_trackers
    from nemo_rence.loop import Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    built = build_components(cfg, run_dir)
    main = built.rank == 0
    logger = (
        MetricsLogger(run_dir, tensorboard=True, trackers=open_trackers(cfg, run_dir))
        if main
        else None
    )
    trainer = Trainer(cfg, built.parts, logger, is_main=main, sampler=built.sampler)
    start = time.perf_counter()
    try:
        resumed = ckpt.resume(trainer)
        if stop.signal is not None:  # arrived during start-up: nothing new to save
            if main:
                print(f"signal {stop.signal} during start-up: exiting", flush=True)
            return stop.exit_code
        budget = TimeBudget(cfg.run.time_budget_min * 60.0, launched)
        interrupted = False
        if not resumed:
            with budget.timing_eval():
                before = trainer.validate(built.parts.heldout)
            trainer.log_eval(before, "before")
            if main and before:
                print(f"held-out before training: {_fmt(before)}", flush=True)
        bar = _progress(cfg.run.iterations, trainer.iteration, main and not args.no_progress)
        while trainer.iteration < cfg.run.iterations:
            if budget.exhausted():
                if main:
                    print(f"time budget: {budget.explain()}", flush=True)
                break
            try:  # the whole step (periodic evaluation, checkpoint) predicts the next one
                with budget.timing_iteration():
                    metrics = trainer.train_iteration(stop.or_else(budget.search_guard()))
                    budget.record_search(metrics.get("time/rollout", 0.0))
                    bar.update(1)
                    bar.set_postfix(_summary(metrics))
                    if cfg.run.eval_every and trainer.iteration % cfg.run.eval_every == 0:
                        periodic = trainer.validate(built.parts.heldout)
                        trainer.log_eval(periodic, "periodic")
                        ckpt.update_best(trainer, periodic)  # checkpoints/best
                    if stop.signal is not None:
                        path = ckpt.save(trainer)
                        if main:
                            print(f"signal {stop.signal}: checkpoint {path}, exiting", flush=True)
                        return stop.exit_code
                    if cfg.run.save_every and trainer.iteration % cfg.run.save_every == 0:
                        ckpt.save(trainer)
            except SearchInterrupted as stopped:  # the filter keeps its groups (budget.py)
                signalled = broadcast_object(stop.signal)  # rank 0's search, rank 0's reason
                if signalled is not None:
                    path = ckpt.save(trainer, force=True)
                    if main:
                        print(f"\nsignal {signalled}: {stopped}; checkpoint {path}, exiting")
                    return stop.exit_code
                if main:
                    print(f"\ntime budget: {stopped}", flush=True)
                interrupted = True
                break
        bar.close()
        latest = ckpt.latest()
        if interrupted or latest is None or latest.name != f"iter-{trainer.iteration:06d}":
            latest = ckpt.save(trainer, force=interrupted)  # the search's groups too
        after = trainer.validate(built.parts.heldout)
        trainer.log_eval(after, "after")
        ckpt.update_best(trainer, after)
        if trainer.iteration >= cfg.run.iterations:
            ckpt.mark_finished(trainer, after)
        if main:
            from nemo_rence.infra.plots import write_plots

            if logger is not None:
                logger.flush()
            plots = write_plots(run_dir)
            print(f"held-out after training:  {_fmt(after)}", flush=True)
            first = trainer.eval_history[0][1] if trainer.eval_history else {}
            if "eval/accuracy" in after and "eval/accuracy" in first:
                delta = 100 * (after["eval/accuracy"] - first["eval/accuracy"])
                print(f"held-out accuracy change: {delta:+.1f} points", flush=True)
                best = ckpt.best()
                if best is not None:
                    gain = 100 * (best.value - first["eval/accuracy"])
                    print(
                        f"best held-out accuracy: {100 * best.value:.1f}% at iteration "
                        f"{best.iteration} ({gain:+.1f} points; checkpoints/best -> "
                        f"{best.checkpoint})",
                        flush=True,
                    )
            print(
                f"run directory: {run_dir} (metrics.jsonl, tb/, checkpoints/ -> {latest.name}, "
                f"{len(plots)} plots in plots/); {time.perf_counter() - start:.0f} s",
                flush=True,
            )
        return 0
    except CheckpointError as err:
        print(f"nemo-rence train: {err}", file=sys.stderr)
        return 1
    finally:
        lock.release()
        built.reward.close()
        if logger is not None:
            logger.close()
        from nemo_rence.policy.megatron.parallel import teardown

        teardown()


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in sorted(metrics.items()))


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="nemo-rence train")
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
