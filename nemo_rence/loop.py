"""The training iteration of the ReNCE paper's Algorithm 1, as named, timed stages.

One :meth:`Trainer.train_iteration`::

    rollout   prompts -> K rollouts -> rewards -> filter (eq. 3, mastery, cache)   [rank 0]
    score     pi_old logprobs of the batch; engine-vs-policy refit check
    update    n_update optimizer steps on mini-batches of whole groups (the loss by name)
    kl        adaptive KL coefficient update (Ziegler et al.)
    refit     new weights -> rollout engine (bucketed, versioned)

Data munging lives in :mod:`nemo_rence.batching`; building components in
:mod:`nemo_rence.build`; the loss, filter and KL controller in :mod:`nemo_rence.algorithm`.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nemo_rence.algorithm.filter import PromptFilter, ScoredGroup, SearchInterrupted
from nemo_rence.algorithm.kl import build_controller
from nemo_rence.batching import (
    groups_to_policy_batch,
    mini_batches,
    rollouts_to_groups,
    select_groups,
)
from nemo_rence.config import TrainConfig
from nemo_rence.data.records import PromptRecord
from nemo_rence.infra.distributed import broadcast_object
from nemo_rence.infra.metrics import MetricsLogger, StageTimer
from nemo_rence.policy.interface import Policy, PolicyBatch, algorithm_loss
from nemo_rence.policy.schedule import LRSchedule
from nemo_rence.refit import RefitConfig, Refitter
from nemo_rence.rollout import GenerationEngine, SamplingParams

__all__ = ["Components", "Trainer"]


@dataclass
class Components:
    """What the loop drives; built by :func:`nemo_rence.build.build_components`."""

    policy: Policy
    engine: GenerationEngine | None
    """The rollout engine; only rank 0 has one (it generates, grades and filters)."""
    reward: Any
    """A RewardFn with ``batch(records, responses) -> list[RewardResult]`` (``MathReward``)."""
    encode: Callable[[PromptRecord], list[int]]
    """Prompt record -> prompt token ids (template, chat template, tokenizer)."""
    decode: Callable[[Sequence[int]], str]
    """Response token ids -> text for the grader."""
    eos_token_ids: tuple[int, ...]
    source: Callable[[], list[PromptRecord]]
    """D.batch() of Algorithm 1: the next prompts (empty when exhausted)."""
    heldout: list[PromptRecord]


class Trainer:
    """Runs Algorithm 1 iterations of any registered loss (ReNCE by default)."""

    def __init__(
        self,
        cfg: TrainConfig,
        parts: Components,
        logger: MetricsLogger | None,
        is_main: bool = True,
        sampler: Any = None,
    ) -> None:
        self.cfg = cfg
        self.parts = parts
        self.sampler = sampler
        """The prompt sampler behind ``parts.source`` (its position is checkpointed), or None."""
        self.logger = logger
        self.is_main = is_main
        self.eval_history: list[tuple[int, dict[str, float]]] = []
        self.eval_samples: list[dict[str, Any]] = []
        """Per-prompt rows of the last :meth:`validate` (problem, answer, response, reward)."""
        self.timer = StageTimer()
        self.filter = PromptFilter(cfg.filter, parts.source)
        kl = cfg.kl
        kl_args: dict[str, Any] = {"init": kl.init}
        if kl.controller == "adaptive":
            kl_args.update(target=kl.target, horizon=kl.horizon)
        self.kl = build_controller(kl.controller, **kl_args)
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
            raise RuntimeError("only rank 0 has a rollout engine")
        return self.parts.engine

    def rollout_and_grade(self, prompts: list[PromptRecord]) -> list[ScoredGroup]:
        """Algorithm 1 line 8: K rollouts of each prompt from pi_old, and their rewards."""
        prompt_ids = [self._encode(p) for p in prompts]
        out = self.engine.generate(prompt_ids, self._sampling())
        texts = [self.parts.decode(t) for t in out.token_ids]
        results = self.parts.reward.batch([prompts[i] for i in out.prompt_index], texts)
        cut = self.cfg.rollout.truncated_reward
        if cut is not None:  # an unfinished response has no final answer (rollout config)
            results = [
                dataclasses.replace(r, reward=cut) if reason == "length" else r
                for r, reason in zip(results, out.finish_reason, strict=True)
            ]
        return rollouts_to_groups(prompts, prompt_ids, out, results)

    def _search(self, should_stop: Callable[[], bool] | None) -> Any:
        """Rank 0's filter search (its batch, or the SearchInterrupted that ended it)."""
        try:
            return self.filter.next_batch(self.rollout_and_grade, should_stop)
        except SearchInterrupted as stopped:
            return stopped

    def train_iteration(self, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        """One iteration of Algorithm 1; ``should_stop`` (rank 0) may end its batch search.

        Raises:
            SearchInterrupted: on every rank, when ``should_stop`` ended the search; the filter
                keeps the groups found so far (its state) and nothing else has changed.
        """
        cfg, timer, policy = self.cfg, self.timer, self.parts.policy
        with timer("rollout"):  # rank 0 generates, grades and filters; the batch is broadcast
            searched = broadcast_object(self._search(should_stop) if self.is_main else None)
        if isinstance(searched, SearchInterrupted):
            self.timer.pop()
            raise searched
        groups, fstats = searched
        with timer("score"):
            batch = groups_to_policy_batch(groups)
            batch.extras["old_logprobs"], gap = self._old_logprobs(batch)
        metrics: dict[str, float] = {}
        with timer("update"):
            loss_fn = algorithm_loss(
                cfg.loss["name"],
                {k: v for k, v in cfg.loss.items() if k != "name"},
                kl_coef=self.kl.value,
                progress=self.iteration / cfg.run.iterations,
                generator=torch.Generator().manual_seed(self.rng.randrange(2**31)),
            )
            first = self.iteration * cfg.optim.n_update  # global optimizer step of this batch
            lrs = [self.lr_schedule.lr_at(first + j) for j in range(cfg.optim.n_update)]
            steps = [
                {**policy.train_step(mini, loss_fn, lr=lr), "optim/lr": lr}
                for mini, lr in zip(
                    mini_batches(batch, cfg.optim.mini_batch_size, cfg.optim.n_update, self.rng),
                    lrs,
                    strict=True,
                )
            ]
            metrics.update(_mean(steps))
        with timer("kl"):  # measured KL(pi_old || pi_theta), mean over the update steps
            self.kl.update(metrics.get("kl/k3", 0.0), n_steps=batch.size)
        with timer("refit"):
            report = self._refit()
        self.iteration += 1
        metrics.update(fstats.metrics(cfg.filter.batch_size))
        metrics.update(report)
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
        fresh = bool((batch.extras["engine_version"] == self.iteration).all())
        if not (self.cfg.rollout.reuse_logprobs and fresh):
            old = policy.logprobs(batch)
            return old, (self._check_refit(batch, old) if self.is_main else {})
        probe = select_groups(batch, [int(batch.group_ids[0])])
        probe_old = policy.logprobs(probe)  # every rank: a collective under TP/PP
        gap = self._check_refit(probe, probe_old) if self.is_main else {}
        return batch.extras["engine_logprobs"].clone(), {**gap, "score/reused_engine": 1.0}

    def _check_refit(self, batch: Any, old: torch.Tensor) -> dict[str, float]:
        """Engine-vs-policy logprobs on the rollouts the current engine weights generated."""
        fresh = batch.extras["engine_version"] == self.engine.version
        mask = batch.response_mask[fresh]
        engine_lp = batch.extras["engine_logprobs"][fresh]
        assert self.refitter is not None
        return self.refitter.verify(
            [row[: int(m.sum())].tolist() for row, m in zip(engine_lp, mask, strict=True)],
            old[fresh],
            mask,
        )

    def _refit(self) -> dict[str, float]:
        """Every rank takes part in the export (TP/PP gathers); rank 0's engine takes the weights."""
        weights = self.parts.policy.export_weights()
        if self.refitter is None:
            for _ in weights:
                pass
            return {}
        return self.refitter.refit(weights, version=self.iteration + 1).metrics()

    def log_eval(self, metrics: dict[str, float], tag: str) -> None:
        """Record an evaluation (before / periodic / after): history, metrics log, ``samples/``."""
        if not metrics:
            return
        self.eval_history.append((self.iteration, metrics))
        if self.logger is not None:
            self.logger.log(self.iteration, {**metrics, f"eval/is_{tag}": 1.0})
            samples = self.logger.run_dir / "samples" / f"eval-iter{self.iteration:06d}-{tag}.jsonl"
            samples.parent.mkdir(parents=True, exist_ok=True)
            samples.write_text("".join(json.dumps(row) + "\n" for row in self.eval_samples))

    # -- state (checkpoint / resume) ----------------------------------------------------------
    @property
    def policy(self) -> Policy:
        """The policy (``run_state.Checkpointable``: saved and loaded beside the loop state)."""
        return self.parts.policy

    def state_dict(self) -> dict[str, Any]:
        """Everything of the loop a resumed run needs, as plain containers (weights_only-safe)."""
        filt = self.filter.state_dict()
        for g in _filter_groups(filt):
            g["prompt"] = dataclasses.asdict(g["prompt"])
        return {
            "iteration": self.iteration,
            "filter": filt,
            "kl": self.kl.state_dict(),
            "rng": _rng_state_to_plain(self.rng.getstate()),
            "sample_rng": _rng_state_to_plain(self.sample_rng.getstate()),
            "engine_version": self.parts.engine.version if self.parts.engine else self.iteration,
            "eval_history": [[i, dict(m)] for i, m in self.eval_history],
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        filt = state["filter"]
        for g in _filter_groups(filt):
            g["prompt"] = PromptRecord(**g["prompt"])
        self.filter.load_state_dict(filt)
        self.kl.load_state_dict(state["kl"])
        self.rng.setstate(_rng_state_from_plain(state["rng"]))
        self.sample_rng.setstate(_rng_state_from_plain(state["sample_rng"]))
        self.iteration = int(state["iteration"])
        self.eval_history = [(int(i), dict(m)) for i, m in state["eval_history"]]
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        self._refit_to(self.iteration)

    def _refit_to(self, version: int) -> None:
        weights = self.parts.policy.export_weights()
        if self.refitter is not None:
            self.refitter.refit(weights, version=version)
        else:
            for _ in weights:
                pass

    def validate(self, records: Sequence[PromptRecord]) -> dict[str, float]:
        """Greedy pass@1 on held-out prompts (rank 0): boxed-and-correct accuracy, boxed rate."""
        if not records or not self.is_main:
            return {}
        out = self.engine.generate([self._encode(r) for r in records], self._sampling(True))
        texts = [self.parts.decode(t) for t in out.token_ids]
        results = self.parts.reward.batch(list(records), texts)
        self.eval_samples = [
            {
                "id": rec.id,
                "problem": rec.problem,
                "answer": rec.answer,
                "response": text,
                "extracted": res.extracted,
                "reward": res.reward,
                "correct": bool(res.correct and res.boxed),
            }
            for rec, text, res in zip(records, texts, results, strict=True)
        ]
        n = len(results)
        return {
            "eval/accuracy": sum(r.correct and r.boxed for r in results) / n,
            "eval/boxed": sum(r.boxed for r in results) / n,
            "eval/reward": sum(r.reward for r in results) / n,
            "eval/response_tokens": sum(out.lengths) / n,
        }


def _filter_groups(filter_state: dict[str, Any]) -> list[dict[str, Any]]:
    """The groups in a filter state: the cache Q and an interrupted search's stack."""
    pending = filter_state.get("pending")
    return [*filter_state["cache"], *(pending["groups"] if pending else [])]


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
    lengths = [len(t) for g in groups for t in g.rollouts["token_ids"]]
    reasons = [f for g in groups for f in g.rollouts["finish_reason"]]
    logprobs = [lp for g in groups for row in g.rollouts["logprobs"] for lp in row]
    return {
        # -mean sampled-token logprob: a Monte-Carlo estimate of the per-token entropy
        "rollout/entropy": -sum(logprobs) / max(len(logprobs), 1),
        "reward/mean": sum(rewards) / max(len(rewards), 1),
        "reward/correct_rate": sum(r >= 1.0 for r in rewards) / max(len(rewards), 1),
        "rollout/response_tokens_mean": sum(lengths) / max(len(lengths), 1),
        # cut off at rollout.max_new_tokens
        "rollout/truncated_rate": sum(f == "length" for f in reasons) / max(len(reasons), 1),
    }
