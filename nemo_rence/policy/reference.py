"""The reference policy pi_ref: frozen initial weights, or the policy's weights every s steps.

Losses that read ``ref_logprobs`` declare it (``LossSpec.needs_reference``): GRPO's KL penalty
(``kl_beta > 0``, pi_ref = the initial model) and semi-online DPO (Lanchantin et al. 2025: pi_ref
synchronised with pi_theta every s optimizer steps; s = 1 is on-policy DPO, s = infinity offline).
Only for those does the trainer build a :class:`ReferencePolicy` and compute reference logprobs.

How it works: the reference is a snapshot of the policy's own parameters (this rank's TP/PP
shards, so it is sharded exactly like the policy), kept on host memory when ``offload`` (the
default on CPU, where host memory is the device). Scoring swaps the snapshot into the policy's
parameters in place, runs the policy's forward-only ``logprobs`` (no autograd graph, no
optimizer state), and swaps the training weights back, bit for bit. The model is never
duplicated on the device beyond one transient copy of the weights.

Synchronisation, counted in optimizer steps (``reference.sync_every = s``)::

    s = 0   frozen: pi_ref = the weights at construction (the initial model), for the whole run
    s > 0   after optimizer step k (1-based), when k % s == 0: pi_ref <- pi_theta

Reference logprobs are computed per mini-batch just before its optimizer step
(:meth:`score_batch`), so a sync in the middle of an iteration (s < n_update) takes effect at
the next mini-batch exactly. Saved and restored with the run (:meth:`state_dict`).

Collective: :meth:`logprobs` runs the policy's forward on every rank of the replica, like
``Policy.logprobs``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from nemo_rence.policy.interface import PolicyBatch

__all__ = ["ReferencePolicy", "build_reference", "train_step"]


class ReferencePolicy:
    """pi_ref as a snapshot of the policy's parameters (module docstring).

    Args:
        module: the policy's model on this rank (its parameters are snapshot and swapped).
        score: the policy's forward-only logprobs, ``PolicyBatch -> [N, T]``.
        sync_every: s; 0 keeps the weights at construction for the whole run.
        offload: keep the snapshot on host memory (else on the parameters' device).
    """

    def __init__(
        self,
        module: nn.Module,
        score: Callable[[PolicyBatch], Tensor],
        sync_every: int = 0,
        offload: bool = True,
    ) -> None:
        if sync_every < 0:
            raise ValueError(f"sync_every must be >= 0 (0: frozen), got {sync_every}")
        self.module = module
        self.score = score
        self.sync_every = sync_every
        self.offload = offload
        self.steps = 0
        """Optimizer steps seen (:meth:`after_step`)."""
        self.synced_at = 0
        """The optimizer step whose weights pi_ref holds (0: the initial weights)."""
        self.weights: dict[str, Tensor] = {}
        self.sync()

    def _params(self) -> Iterator[tuple[str, Tensor]]:
        yield from self.module.named_parameters()

    def sync(self) -> None:
        """pi_ref <- the policy's current weights."""
        with torch.no_grad():
            for name, p in self._params():
                target = torch.device("cpu") if self.offload else p.device
                if name in self.weights:
                    self.weights[name].copy_(p.detach())
                else:
                    self.weights[name] = p.detach().to(target, copy=True)
        self.synced_at = self.steps

    def after_step(self) -> None:
        """Count one optimizer step of the policy; synchronise when s divides it."""
        self.steps += 1
        if self.sync_every > 0 and self.steps % self.sync_every == 0:
            self.sync()

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The policy's parameters hold pi_ref's weights inside the block, its own after."""
        saved: dict[str, Tensor] = {}
        with torch.no_grad():
            try:
                for name, p in self._params():
                    saved[name] = p.detach().clone()
                    p.copy_(self.weights[name])
                yield
            finally:
                for name, p in self._params():
                    if name in saved:
                        p.copy_(saved[name])

    def logprobs(self, batch: PolicyBatch) -> Tensor:
        """[N, T] float32 per-token log pi_ref of the batch's responses (0 on padding)."""
        with self.swapped_in():
            return self.score(batch)

    def score_batch(self, batch: PolicyBatch) -> PolicyBatch:
        """``batch`` with ``extras.ref_logprobs`` = :meth:`logprobs` (the others unchanged)."""
        extras = batch.extras.replace(ref_logprobs=self.logprobs(batch))
        return PolicyBatch(
            input_ids=batch.input_ids,
            prompt_lengths=batch.prompt_lengths,
            response_lengths=batch.response_lengths,
            group_ids=batch.group_ids,
            extras=extras,
            response_width=batch.response_width,
        )

    def state_dict(self) -> dict[str, Any]:
        """Step counters, and this rank's snapshot only when it cannot be rebuilt on resume.

        Frozen (s = 0) or never synced: pi_ref is the initial model, rebuilt at construction.
        Synced at the checkpoint's own step (s divides the steps taken, e.g. s = n_update with
        checkpoints between iterations): pi_ref is the checkpoint's policy weights, re-read on
        load. Otherwise the snapshot (this rank's shards) is saved; the trainer state is written
        by rank 0 alone, so such a state is refused on load under model parallelism.
        """
        state: dict[str, Any] = {"steps": self.steps, "synced_at": self.synced_at}
        if 0 < self.synced_at < self.steps:
            state["weights"] = {k: v.cpu() for k, v in self.weights.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call after the policy's own weights were restored."""
        self.steps = int(state["steps"])
        synced_at = int(state["synced_at"])
        weights = state.get("weights")
        if synced_at == 0:
            pass  # the initial weights, taken at construction
        elif weights is None:  # synced at this very step: the restored policy weights
            self.sync()
        else:
            import torch.distributed as dist

            if dist.is_initialized() and dist.get_world_size() > 1:
                raise RuntimeError(
                    "this checkpoint's reference policy was synchronised in the middle of a "
                    "batch (reference.sync_every does not divide optim.n_update); its weights "
                    "were saved by rank 0 alone and cannot be restored on several ranks"
                )
            with torch.no_grad():
                for name, value in weights.items():
                    self.weights[name].copy_(value)
        self.synced_at = synced_at


def build_reference(cfg: Any, policy: Any) -> ReferencePolicy | None:
    """The run's reference policy when its loss declares it needs one, else None.

    Args:
        cfg: the :class:`~nemo_rence.config.TrainConfig` (its ``loss`` and ``reference``).
        policy: the policy, already loaded with its initial weights (``model`` and ``logprobs``).
    """
    from nemo_rence.algorithm import losses

    spec = losses.get(cfg.loss.name)
    if not spec.needs_reference(cfg.loss.params):
        return None
    if cfg.reference.sync_every is None:  # TrainConfig refuses this combination already
        raise ValueError(f"loss {spec.name!r} needs a reference policy; reference.sync_every=null")
    return ReferencePolicy(
        policy.model, policy.logprobs, cfg.reference.sync_every, cfg.reference.offload
    )


def train_step(
    policy: Any, reference: ReferencePolicy | None, batch: PolicyBatch, loss_fn: Any, lr: float
) -> dict[str, float]:
    """``policy.train_step`` on ``batch`` with its reference logprobs when there is a reference;
    the reference then counts the step (a skipped step is no update) and synchronises on time."""
    if reference is None:
        return dict(policy.train_step(batch, loss_fn, lr=lr))
    metrics = dict(policy.train_step(reference.score_batch(batch), loss_fn, lr=lr))
    if not metrics.get("train/skipped_steps", 0.0):
        reference.after_step()
    metrics["reference/synced_at"] = float(reference.synced_at)
    return metrics
