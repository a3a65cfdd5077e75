"""The training iteration of the ReNCE paper's Algorithm 1, as named, timed stages.

One :meth:`Trainer.train_iteration`::

    rollout   prompts -> K rollouts -> rewards -> filter (eq. 3, mastery, cache)   [rank 0's
              filter; each draw split over every engine replica, rollout/replicas.py]
    score     pi_old logprobs of the batch; engine-vs-policy refit check; mismatch metrics
    update    n_update optimizer steps on mini-batches of whole groups (the loss by name, with
              the rollout correction; pi_ref logprobs per mini-batch when the loss needs them)
    kl        adaptive KL coefficient update from the loss's declared trust-region KL
    refit     new weights -> every rollout engine (bucketed, versioned); a colocated engine
              releases its memory after the rollouts and reclaims it before the refit

:meth:`Trainer.fit` is the whole run around it (torchtitan's ``Trainer.train``): resume, the
evaluation before training, the iterations with periodic evaluation, the best checkpoint and
checkpoints, one stop policy (time budget and signals, an interrupted batch search handled in one
place), the final checkpoint and evaluation. Data munging lives in :mod:`nemo_rence.batching`;
building components in :mod:`nemo_rence.build`; the loss, filter and KL controller in
:mod:`nemo_rence.algorithm`; checkpoints in :mod:`nemo_rence.run_state`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nemo_rence.algorithm.correction import mismatch_metrics
from nemo_rence.algorithm.filter import PromptFilter, ScoredGroup, SearchInterrupted
from nemo_rence.algorithm.kl import controller_from_config
from nemo_rence.batching import (
    groups_to_policy_batch,
    mini_batches,
    rollouts_to_groups,
    select_groups,
)
from nemo_rence.budget import SignalFlag, SpendBudget, StopPolicy, TimeBudget, iteration_cost
from nemo_rence.config import TrainConfig
from nemo_rence.data.records import PromptRecord
from nemo_rence.evaluation.in_loop import (
    benchmark_metrics,
    heldout_metrics,
    write_benchmark_outputs,
)
from nemo_rence.infra.distributed import broadcast_object
from nemo_rence.infra.metrics import MetricsLogger, StageTimer, format_metrics
from nemo_rence.policy.interface import Policy, PolicyBatch, algorithm_loss
from nemo_rence.policy.reference import ReferencePolicy, train_step
from nemo_rence.policy.schedule import LRSchedule
from nemo_rence.refit import RefitConfig, Refitter
from nemo_rence.rewards.protocol import RewardFn
from nemo_rence.rollout import GenerationEngine, SamplingParams
from nemo_rence.rollout.graded import generate_and_grade
from nemo_rence.rollout.layout import EngineLayout
from nemo_rence.rollout.replicas import Draw, ReplicaPool, SeededEngine, prompt_seeds
from nemo_rence.types import GroupRollouts, group_from_plain, group_to_plain

__all__ = ["Components", "FitResult", "Trainer"]


@dataclass
class Components:
    """What the loop drives; built by :func:`nemo_rence.build.build_components`."""

    policy: Policy
    engine: GenerationEngine | None
    """This rank's rollout engine, on the ranks ``layout`` names (rank 0 always: it also
    filters and evaluates); None elsewhere."""
    reward: RewardFn
    """Grades responses (``MathReward``: the paper's 1 / 0.1 / 0)."""
    encode: Callable[[PromptRecord], list[int]]
    """Prompt record -> prompt token ids (template, chat template, tokenizer)."""
    decode: Callable[[Sequence[int]], str]
    """Response token ids -> text for the grader."""
    eos_token_ids: tuple[int, ...]
    source: Callable[[], list[PromptRecord]]
    """D.batch() of Algorithm 1: the next prompts (empty when exhausted); a stateful source
    (:class:`~nemo_rence.data.source.PromptSource`) is checkpointed with the trainer."""
    heldout: list[PromptRecord]
    benchmarks: list[tuple[Any, Any]] = field(default_factory=list)
    """``eval.benchmarks`` as (``BenchmarkFile``, ``LoadResult``) pairs, read at build time."""
    data_metrics: dict[str, float] = field(default_factory=dict)
    """What the data loaders read, kept and skipped (``data/...``), logged once at the start."""
    reference: ReferencePolicy | None = None
    """pi_ref, for a loss that declares it reads reference logprobs (``policy.reference``)."""
    layout: EngineLayout | None = None
    """Which ranks host an engine (:func:`~nemo_rence.rollout.layout.engine_layout`); None: one
    engine, on rank 0."""

    def close(self) -> None:
        """Release what the components hold outside this process (the grader's workers)."""
        close = getattr(self.reward, "close", None)
        if close is not None:
            close()


@dataclass
class FitResult:
    """How :meth:`Trainer.fit` ended.

    Attributes:
        stopped: "completed", "time_budget" or "signal".
        message: one line on why it stopped (empty when completed).
        exit_code: the process exit code this outcome deserves (0: done or resumable).
        latest: the last checkpoint written.
        before: the first held-out evaluation of the run (empty if none).
        after: the final held-out evaluation (empty after a signal).
    """

    stopped: str
    message: str = ""
    exit_code: int = 0
    latest: Path | None = None
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Runs Algorithm 1 iterations of any registered loss (ReNCE by default)."""

    def __init__(
        self,
        cfg: TrainConfig,
        parts: Components,
        logger: MetricsLogger | None,
        is_main: bool = True,
    ) -> None:
        self.cfg = cfg
        self.parts = parts
        self.logger = logger
        self.is_main = is_main
        self.eval_history: list[tuple[int, dict[str, float]]] = []
        self.eval_samples: list[dict[str, Any]] = []
        self.bench_results: list[Any] = []
        self.table = ""
        """The last benchmark evaluation as a Table-1 Markdown document (rank 0)."""
        """The ``BenchmarkResult`` of each benchmark in the last :meth:`evaluate` (rank 0)."""
        """Per-prompt rows of the last :meth:`validate` (problem, answer, response, reward)."""
        self.timer = StageTimer()
        self.filter = PromptFilter(
            cfg.filter, parts.source, to_plain=group_to_plain, from_plain=group_from_plain
        )
        self.kl = controller_from_config(cfg.kl)
        draw = cfg.rollout.prompts_per_draw or cfg.filter.batch_size  # Draw: at most this many
        self.spend = SpendBudget(
            cfg.run.budget_kind,
            cfg.run.budget_amount,
            cfg.optim.n_update,
            draw_rollouts=draw * cfg.rollout.group_size,
        )
        """What the run has spent of ``run.budget_amount`` (rank 0 counts a resumed run's past)."""
        o = cfg.optim
        self.lr_schedule = LRSchedule(
            lr=o.lr,
            total_steps=cfg.run.iterations * o.n_update,
            kind=o.lr_schedule,
            warmup_steps=o.warmup_steps,
            min_lr_ratio=o.min_lr_ratio,
        )
        refit_cfg = RefitConfig(max_logprob_gap=cfg.run.max_refit_gap)
        self.refitter = Refitter(refit_cfg, parts.engine) if parts.engine is not None else None
        # Two streams: `rng` (mini-batch order, loss sampling) advances identically on every rank;
        # `sample_rng` (rollout seeds) is used by rank 0 alone.
        self.rng = random.Random(cfg.run.seed)
        self.sample_rng = random.Random(cfg.run.seed + 1)
        self.iteration = 0
        self._encoded: dict[str, list[int]] = {}
        from nemo_rence.infra.distributed import rank

        self.replicas = ReplicaPool(parts.layout or EngineLayout.single(), rank())
        self._engine_asleep = False

    @property
    def policy(self) -> Policy:
        return self.parts.policy

    # -- stages -------------------------------------------------------------------------------
    def _sampling(self, greedy: bool = False) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(
            n=1 if greedy else r.group_size,
            temperature=0.0 if greedy else r.temperature,
            top_p=1.0 if greedy else r.top_p,
            max_new_tokens=r.max_new_tokens,
            stop_token_ids=self.parts.eos_token_ids,
            seed=self.sample_rng.randrange(2**31),
        )

    def _encode(self, record: PromptRecord) -> list[int]:
        if record.id not in self._encoded:
            self._encoded[record.id] = self.parts.encode(record)
        return self._encoded[record.id]

    @property
    def engine(self) -> GenerationEngine:
        if self.parts.engine is None:
            raise RuntimeError("this rank hosts no rollout engine (rollout.layout.engine_layout)")
        return self.parts.engine

    def rollout_and_grade(self, prompts: list[PromptRecord]) -> list[ScoredGroup]:
        """Algorithm 1 line 8: K rollouts of each prompt from pi_old, and their rewards (rank 0;
        the engine replicas each generate a share of the draw)."""
        params = self._sampling()
        seeds = None
        if self.cfg.rollout.seed_mode == "per_prompt":
            assert params.seed is not None
            seeds = prompt_seeds(params.seed, [p.id for p in prompts])
        draw = Draw(list(prompts), [self._encode(p) for p in prompts], params, seeds)
        return self.replicas.run(draw, self._generate_share)

    def _generate_share(self, draw: Draw) -> list[ScoredGroup]:
        """This rank's engine generates and grades ``draw`` (a replica's share of one draw)."""
        if not draw.prompts:
            return []
        graded = generate_and_grade(
            SeededEngine(self.engine, draw.seeds),
            draw.prompts,
            draw.prompt_ids,
            draw.params,
            decode=self.parts.decode,
            reward=self.parts.reward,
            truncated_reward=self.cfg.rollout.truncated_reward,
        )
        return rollouts_to_groups(draw.prompts, draw.prompt_ids, graded.rollouts, graded.results)

    def _search(self, should_stop: Callable[[], bool] | None) -> Any:
        """The filter search: rank 0's batch (or the SearchInterrupted that ended it); the other
        ranks generate their replica's share of each draw until it ends, and return None."""
        if not self.is_main:
            self.replicas.serve(self._generate_share)
            return None
        self.replicas.reset_counts()
        try:
            return self.filter.next_batch(self.rollout_and_grade, should_stop)
        except SearchInterrupted as stopped:
            return stopped
        finally:
            self.replicas.finish()

    def _release_engine(self) -> dict[str, float]:
        """A colocated engine frees its memory (weights / KV cache) for the training step, where
        it supports it (``release_memory``: vLLM and TensorRT-LLM sleep)."""
        release = getattr(self.parts.engine, "release_memory", None)
        if release is None or self._engine_asleep:
            return {}
        start = time.perf_counter()
        release()
        self._engine_asleep = True
        return {"rollout/release_seconds": time.perf_counter() - start}

    def _reclaim_engine(self) -> dict[str, float]:
        """The released engine takes its memory back, before the refit writes its weights."""
        if not self._engine_asleep:
            return {}
        start = time.perf_counter()
        self.parts.engine.reclaim_memory()  # type: ignore[union-attr]
        self._engine_asleep = False
        return {"refit/reclaim_seconds": time.perf_counter() - start}

    def _schedule_fractions(self, rollouts: int, batch: PolicyBatch) -> list[float] | None:
        """Where each optimizer step of this iteration falls on a spend budget, in [0, 1] (rank
        0's count; None unless ``optim.lr_schedule_over=budget`` with a spend budget: the
        schedule then runs over ``run.iterations``).

        Step j of n is at ``(spent + cost * j / n) / amount``, with ``cost`` this iteration's
        spend so far (its search: rollouts or tokens; its n steps; the wall clock is counted
        at the iteration's start), so that the lr schedule and a loss's ``progress`` follow the
        budget a study gives every arm rather than an iteration cap.
        """
        spend, n = self.spend, self.cfg.optim.n_update
        if spend.amount <= 0 or self.cfg.optim.lr_schedule_over != "budget":
            return None  # decided from the config: the same on every rank
        row = {
            "filter/rollouts": float(rollouts),
            "rollout/response_tokens_mean": batch.response_lengths.float().mean().item(),
        }
        cost = 0.0 if spend.kind == "wall_clock_min" else iteration_cost(spend.kind, row, n)[0]
        return broadcast_object(
            [min((spend.spent + cost * j / n) / spend.amount, 1.0) for j in range(n)]
        )

    def train_iteration(self, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        """One iteration of Algorithm 1; ``should_stop`` (rank 0) may end its batch search.

        Raises:
            SearchInterrupted: on every rank, when ``should_stop`` ended the search; the filter
                keeps the groups found so far (its state) and nothing else has changed.
        """
        cfg, timer, policy = self.cfg, self.timer, self.parts.policy
        with timer("rollout"):  # every replica generates; rank 0 filters and broadcasts the batch
            searched = broadcast_object(self._search(should_stop))
        if isinstance(searched, SearchInterrupted):
            self.timer.pop()
            raise searched
        groups, fstats = searched
        memory = self._release_engine()
        with timer("score"):
            batch = groups_to_policy_batch(groups)
            batch.extras.old_logprobs, gap = self._old_logprobs(batch)
            gap.update(mismatch_metrics(*_mismatch_inputs(batch), cfg.rollout_correction))
        metrics: dict[str, float] = {}
        with timer("update"):
            first = self.iteration * cfg.optim.n_update  # global optimizer step of this batch
            fractions = self._schedule_fractions(fstats.rollouts, batch)
            lrs = [
                self.lr_schedule.lr_at(first + j, f)
                for j, f in enumerate(fractions or [None] * cfg.optim.n_update)
            ]
            loss_fn = algorithm_loss(
                cfg.loss.name,
                cfg.loss.params,
                kl_coef=self.kl.value,
                progress=fractions[0] if fractions else self.iteration / cfg.run.iterations,
                generator=torch.Generator().manual_seed(self.rng.randrange(2**31)),
                correction=cfg.rollout_correction,
            )
            steps = [
                {**train_step(policy, self.parts.reference, mini, loss_fn, lr), "optim/lr": lr}
                for mini, lr in zip(
                    mini_batches(batch, cfg.optim.mini_batch_size, cfg.optim.n_update, self.rng),
                    lrs,
                    strict=True,
                )
            ]
            metrics.update(_mean(steps))
            metrics["train/skipped_steps"] = sum(s.get("train/skipped_steps", 0.0) for s in steps)
        with timer("kl"):  # the loss's declared KL(pi_old || pi_theta), mean over the steps
            if loss_fn.trust_region_kl is not None:
                self.kl.update(metrics[loss_fn.trust_region_kl], n_steps=batch.size)
        with timer("refit"):
            report = self._refit()
        self.iteration += 1
        metrics.update(fstats.metrics(cfg.filter.batch_size))
        metrics.update(report)
        metrics.update(memory)
        metrics.update(self.replicas.metrics())
        metrics.update(gap)
        metrics.update(_reward_metrics(groups))
        metrics["kl/coef"] = self.kl.value
        metrics.update(self.timer.pop())
        if self.logger is not None:
            self.logger.log(self.iteration, metrics)
        return metrics

    def _old_logprobs(self, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """pi_old's per-token logprobs of the batch, and the refit check's metrics (rank 0).

        A policy forward over the batch; or, with ``rollout.reuse_logprobs`` and every rollout
        from the current engine version, the engine's own sampling logprobs, with the policy
        run on the first group only to check that the two still agree.
        """
        policy = self.parts.policy
        x = batch.extras
        assert x.engine_version is not None and x.engine_logprobs is not None
        fresh = bool((x.engine_version == self.iteration).all())
        if not (self.cfg.rollout.reuse_logprobs and fresh):
            old = policy.logprobs(batch)
            return old, (self._check_refit(batch, old) if self.is_main else {})
        probe = select_groups(batch, [int(batch.group_ids[0])])
        probe_old = policy.logprobs(probe)  # every rank: a collective under TP/PP
        gap = self._check_refit(probe, probe_old) if self.is_main else {}
        return x.engine_logprobs.clone(), {**gap, "score/reused_engine": 1.0}

    def _check_refit(self, batch: Any, old: torch.Tensor) -> dict[str, float]:
        """Engine-vs-policy logprobs on the rollouts the current engine weights generated."""
        x = batch.extras
        assert x.engine_version is not None and x.engine_logprobs is not None
        fresh = x.engine_version == self.engine.version
        mask = batch.response_mask[fresh]
        engine_lp = x.engine_logprobs[fresh]
        assert self.refitter is not None
        return self.refitter.verify(
            [row[: int(m.sum())].tolist() for row, m in zip(engine_lp, mask, strict=True)],
            old[fresh],
            mask,
        )

    def _refit(self) -> dict[str, float]:
        """Every rank takes part in the export (TP/PP gathers); every engine-hosting rank's engine
        takes the weights (reclaiming its memory first)."""
        reclaimed = self._reclaim_engine()
        weights = self.parts.policy.export_weights()
        if self.refitter is None:
            for _ in weights:
                pass
            return reclaimed
        return {**reclaimed, **self.refitter.refit(weights, version=self.iteration + 1).metrics()}

    def log_eval(self, metrics: dict[str, float], tag: str) -> None:
        """Record an evaluation (before / periodic / after): history, metrics log, ``samples/``."""
        if not metrics:
            return
        self.eval_history.append((self.iteration, metrics))
        if self.logger is not None:
            self.logger.log(self.iteration, {**metrics, f"eval/is_{tag}": 1.0})
            name = f"iter{self.iteration:06d}-{tag}"
            if self.eval_samples:
                samples = self.logger.run_dir / "samples" / f"eval-{name}.jsonl"
                samples.parent.mkdir(parents=True, exist_ok=True)
                samples.write_text("".join(json.dumps(row) + "\n" for row in self.eval_samples))
            if self.bench_results:  # results.json / results.md / samples.jsonl, as nemo-rence eval
                out = self.logger.run_dir / "eval" / name
                self.table = write_benchmark_outputs(
                    out, self.cfg, self.iteration, tag, self.bench_results
                )

    # -- state (checkpoint / resume) ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything of the loop a resumed run needs, as plain containers (weights_only-safe):
        iteration, filter (cache Q, mastered set, an interrupted search), KL coefficient, RNG
        states, the prompt source's position, the evaluation history. The policy's weights and
        optimizer are saved by the policy itself."""
        source = self.parts.source
        return {
            "iteration": self.iteration,
            "filter": self.filter.state_dict(),
            "kl": self.kl.state_dict(),
            "rng": _rng_state_to_plain(self.rng.getstate()),
            "sample_rng": _rng_state_to_plain(self.sample_rng.getstate()),
            "engine_version": self.parts.engine.version if self.parts.engine else self.iteration,
            "eval_history": [[i, dict(m)] for i, m in self.eval_history],
            "source": source.state_dict() if hasattr(source, "state_dict") else None,
            "torch_rng": torch.get_rng_state(),
            **({"reference": ref.state_dict()} if (ref := self.parts.reference) else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` and refit the engine to the restored policy's weights."""
        source = self.parts.source
        if state.get("source") is not None and hasattr(source, "load_state_dict"):
            source.load_state_dict(state["source"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        self.filter.load_state_dict(state["filter"])
        self.kl.load_state_dict(state["kl"])
        self.rng.setstate(_rng_state_from_plain(state["rng"]))
        self.sample_rng.setstate(_rng_state_from_plain(state["sample_rng"]))
        self.iteration = int(state["iteration"])
        self.eval_history = [(int(i), dict(m)) for i, m in state["eval_history"]]
        if self.parts.reference is not None and "reference" in state:
            self.parts.reference.load_state_dict(state["reference"])
        self._refit_to(self.iteration)

    def _refit_to(self, version: int) -> None:
        self._reclaim_engine()
        weights = self.parts.policy.export_weights()
        if self.refitter is not None:
            self.refitter.refit(weights, version=version)
        else:
            for _ in weights:
                pass

    def validate(self, records: Sequence[PromptRecord]) -> dict[str, float]:
        """Greedy pass@1 on held-out prompts (rank 0): boxed-and-correct accuracy, boxed rate
        (:func:`~nemo_rence.evaluation.in_loop.heldout_metrics`)."""
        if not records or not self.is_main:
            return {}
        metrics, self.eval_samples = heldout_metrics(
            self.engine,
            records,
            [self._encode(r) for r in records],
            self._sampling(True),
            decode=self.parts.decode,
            reward=self.parts.reward,
        )
        return metrics

    # -- the run ------------------------------------------------------------------------------
    def evaluate(self, tag: str, heldout: bool = True, benchmarks: bool = True) -> dict[str, float]:
        """Held-out greedy accuracy and the ``eval.benchmarks`` (rank 0's numbers; empty on other
        ranks), logged under ``tag`` (before / periodic / after)."""
        self.eval_samples, self.bench_results = [], []
        metrics = self.validate(self.parts.heldout) if heldout else {}
        if benchmarks and self.parts.benchmarks and self.is_main:
            metrics.update(self.evaluate_benchmarks())
        self.log_eval(metrics, tag)
        return metrics

    def evaluate_benchmarks(self) -> dict[str, float]:
        """Each benchmark with ``eval.k`` samples per problem at ``eval.temperature`` (rank 0;
        :func:`~nemo_rence.evaluation.in_loop.benchmark_metrics`, as ``nemo-rence eval``)."""
        metrics, self.bench_results = benchmark_metrics(
            self.cfg,
            self.parts.benchmarks,
            self.iteration,
            engine=self.engine,
            encode=self.parts.encode,
            decode=self.parts.decode,
            reward=self.parts.reward,
            stop_token_ids=self.parts.eos_token_ids,
        )
        return metrics

    def fit(
        self,
        checkpoints: Any,
        flag: SignalFlag | None = None,
        *,
        launched: float | None = None,
        progress: bool = False,
    ) -> FitResult:
        """The whole run: resume, evaluate, iterate, checkpoint, stop, evaluate (collective).

        Args:
            checkpoints: a :class:`~nemo_rence.run_state.CheckpointManager`.
            flag: set by the signal handlers (:class:`~nemo_rence.signals.StopFlag`: SIGUSR1,
                SIGTERM, SIGINT): checkpoint and exit (0, or 130 after Ctrl-C) after the current
                iteration, or after the current draw of its batch search.
            launched: ``time.perf_counter()`` at process start, for ``run.time_budget_min``.
            progress: show a progress bar (rank 0).

        Every ending goes through one place: a signal checkpoints (the interrupted search's
        groups included) and returns at once; the time budget (before an iteration, or inside
        the batch search) and the last iteration both checkpoint, evaluate and update ``best``.
        """
        run = self.cfg.run
        budget = TimeBudget(run.time_budget_min * 60.0, launched or time.perf_counter())
        spend = self.spend
        stop = StopPolicy(budget, flag, spend)
        result = FitResult("completed")
        resumed = checkpoints.resume(self)
        if resumed and self.logger is not None:  # what the resumed iterations spent
            spend.restore(self.logger.run_dir / "metrics.jsonl", self.iteration)
        if stop.signal is not None:  # arrived during start-up: nothing new to save
            message = f"signal {stop.signal} during start-up: exiting"
            return FitResult("signal", message, stop.exit_code)
        if not resumed:
            if self.logger is not None and self.parts.data_metrics:
                self.logger.log(0, self.parts.data_metrics)
            with stop.budget.timing_eval():
                result.before = self.evaluate("before")
            if self.is_main and result.before:
                print(f"held-out before training: {format_metrics(result.before)}", flush=True)
        bar = _progress(run.iterations, self.iteration, self.is_main and progress)
        interrupted = False
        while self.iteration < run.iterations:
            reason = stop.before_iteration()
            if reason is not None:
                result.stopped, result.message = "time_budget", reason
                if self.is_main:
                    print(f"{stop.label}: {reason}", flush=True)
                break
            try:  # the whole step (periodic evaluation, checkpoint) predicts the next one
                with stop.budget.timing_iteration():
                    guard = stop.search_guard(searched=lambda: self.filter.search_rollouts)
                    metrics = self.train_iteration(guard)
                    stop.budget.record_search(metrics.get("time/rollout", 0.0))
                    stop.record(metrics)
                    bar.update(1)
                    bar.set_postfix(_summary(metrics))
                    self._after_iteration(checkpoints)
                    if stop.signal is not None:
                        path = checkpoints.save(self)
                        bar.close()
                        message = f"signal {stop.signal}: checkpoint {path}, exiting"
                        return FitResult("signal", message, stop.exit_code, path)
            except SearchInterrupted as stopped:  # the filter keeps its groups (budget.py)
                signalled = broadcast_object(stop.signal)  # rank 0's search, rank 0's reason
                if signalled is not None:
                    path = checkpoints.save(self, force=True)
                    bar.close()
                    message = f"signal {signalled}: {stopped}; checkpoint {path}, exiting"
                    return FitResult("signal", message, stop.exit_code, path)
                result.stopped, result.message, interrupted = "time_budget", str(stopped), True
                if self.is_main:
                    print(f"\n{stop.label}: {stopped}", flush=True)
                break
        bar.close()
        latest = checkpoints.latest()
        if interrupted or latest is None or latest.name != f"iter-{self.iteration:06d}":
            latest = checkpoints.save(self, force=interrupted)  # the search's groups too
        result.latest = latest
        result.after = self.evaluate("after")
        checkpoints.update_best(self, result.after)
        if self.iteration >= run.iterations:
            checkpoints.mark_finished(self, result.after)
        return result

    def _after_iteration(self, checkpoints: Any) -> None:
        """Periodic evaluation (and ``checkpoints/best``), then the periodic checkpoint."""
        run, it = self.cfg.run, self.iteration
        heldout = bool(run.eval_every) and it % run.eval_every == 0
        every = self.cfg.eval.every or run.eval_every
        # decided from the config, not from parts.benchmarks (rank 0 alone reads the files):
        # every rank must take part in update_best's collectives
        benchmarks = bool(self.cfg.eval.benchmarks) and bool(every) and it % every == 0
        if heldout or benchmarks:
            checkpoints.update_best(self, self.evaluate("periodic", heldout, benchmarks))
        if run.save_every and self.iteration % run.save_every == 0:
            checkpoints.save(self)


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


def _mismatch_inputs(batch: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pi_old, pi_engine logprobs, response mask) of a scored batch, for the mismatch metrics."""
    e = batch.extras
    assert e.old_logprobs is not None and e.engine_logprobs is not None
    return e.old_logprobs, e.engine_logprobs, batch.response_mask


def _rng_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_state_from_plain(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _mean(steps: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = {k for s in steps for k in s}
    return {k: sum(s[k] for s in steps if k in s) / sum(k in s for s in steps) for k in keys}


def _reward_metrics(groups: Sequence[ScoredGroup]) -> dict[str, float]:
    rewards = [r for g in groups for r in g.rewards]
    rollouts: list[GroupRollouts] = [g.rollouts for g in groups]
    lengths = [len(t) for ro in rollouts for t in ro.token_ids]
    reasons = [f for ro in rollouts for f in ro.finish_reason]
    logprobs = [lp for ro in rollouts for row in ro.logprobs for lp in row]
    return {
        # -mean sampled-token logprob: a Monte-Carlo estimate of the per-token entropy
        "rollout/entropy": -sum(logprobs) / max(len(logprobs), 1),
        "reward/mean": sum(rewards) / max(len(rewards), 1),
        "reward/correct_rate": sum(r >= 1.0 for r in rewards) / max(len(rewards), 1),
        "rollout/response_tokens_mean": sum(lengths) / max(len(lengths), 1),
        # cut off at rollout.max_new_tokens
        "rollout/truncated_rate": sum(f == "length" for f in reasons) / max(len(reasons), 1),
    }
