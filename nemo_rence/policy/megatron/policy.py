"""``MegatronPolicy``: the :class:`~nemo_rence.policy.interface.Policy` on Megatron-Core (TP/PP/DP).

Shape legend::

    N   rollouts handed to this rank          L   padded sequence length
    T   response width of per-token outputs   n   rollouts in one micro-batch (whole groups)
    S   a micro-batch's sequence length (its longest prompt + response), B = n rows
    H   hidden size                           V_loc  vocabulary rows of this TP rank

One code path on CPU and GPU: the model is megatron's ``GPTModel`` (local spec on CPU, TE on GPU)
wrapped in megatron's ``DistributedDataParallel`` (it runs under gloo too), driven by
``get_forward_backward_func`` with a ``forward_step_func`` that returns
``(output, partial(loss_func, micro_batch))``: the loss never deals with pipeline parallelism.

Layouts (``packing``): a micro-batch reaches the model either as one right-padded row per rollout
(causal attention) or, with ``layout='shared_prefix'``, as one row per prompt holding its K responses
behind the prompt (a segment mask and RoPE positions make every response see only the prompt and
itself), so the prompt's tokens run once per group instead of K times, forward and backward.
``layout='auto'`` picks whichever costs fewer FLOPs per micro-batch
(``packing.layout_cost``); it needs the local layer spec (arbitrary attention masks), so TE runs
use the rollout layout.

Forward (``_forward_step``): the model runs with its ``post_process`` flag lowered for the call, so
the last stage returns the final-norm hidden states ``[S, B, H]`` instead of full-vocabulary
logits; ``_loss_func`` then projects ONLY the hidden states that predict response tokens through
the (vocab-parallel) output weight, chunked (``logprobs.gather_response_logprobs``). No
``[tokens, vocab]`` logits tensor of the whole micro-batch ever exists.

Loss scaling. ``loss_fn`` returns micro-batch losses that already sum to the mini-batch loss
(global normalisers, see ``interface``), and the mini-batch spans all data-parallel ranks.
Megatron divides each micro-batch loss by the number of micro-batches and DDP averages the
gradients over the DP ranks; ``_loss_func`` multiplies by ``num_micro_batches * dp_size`` to
undo both, so the accumulated gradient is exactly the gradient of
``sum_{dp ranks} sum_{micro-batches} loss``.

Collectives: every method is collective. All ranks of a TP x PP replica must call it with the same
batch; DP replicas call it with their own share of whole groups (``train_step``) or any rows
(``logprobs``). ``export_weights`` is a generator: every rank of the replica must consume it fully
and in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from nemo_rence.arch import ArchSpec
from nemo_rence.policy.interface import (
    LossFn,
    Metrics,
    MicroBatch,
    PolicyBatch,
    metric_reduction,
)
from nemo_rence.policy.megatron.logprobs import layout_logprobs
from nemo_rence.policy.megatron.model import (
    build_gpt_model,
    check_fp8,
    resolve_spec,
    sequence_pad_multiple,
)
from nemo_rence.policy.megatron.optimizer import (
    OptimizerSettings,
    PolicyOptimizer,
    build_optimizer,
    global_grad_norm,
)
from nemo_rence.policy.megatron.packing import LAYOUTS, Layout, choose_layout

__all__ = [
    "MegatronPolicy",
    "MegatronPolicyConfig",
    "NonFiniteTrainingError",
    "plan_group_micro_batches",
]


@dataclass(frozen=True)
class MegatronPolicyConfig:
    """How the Megatron policy runs (parallel sizes come from megatron's parallel state)."""

    micro_batch_size: int = 8
    """Rollouts per training micro-batch; micro-batches hold WHOLE groups only, so it must be a
    multiple of the group size K (listwise losses compare the K rollouts of a prompt)."""
    logprob_micro_batch_size: int | None = None
    """Rows per forward-only micro-batch of :meth:`MegatronPolicy.logprobs`; default
    ``micro_batch_size`` (any row split is fine there)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts: logits are divided by it before the softmax."""
    logprob_chunk_size: int | None = None
    """Tokens per chunk of the vocab-parallel logprob kernel; ``None``: ~64 MiB fp32 blocks."""
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    params_dtype: torch.dtype = torch.float32
    """Model parameter dtype: float32 on CPU, bfloat16 on GPU."""
    spec: str = "auto"
    """Layer spec: ``'te'``, ``'local'`` or ``'auto'`` (TE on GPU when installed)."""
    fp8: str | None = None
    """``None`` | ``'e4m3'`` | ``'hybrid'`` (``policy.fp8``): FP8 transformer layers through
    Transformer Engine (TE spec only, else a ``ConfigError``); micro-batch sequences are then
    padded to a multiple of 16 (x TP under sequence parallelism), see
    ``model.sequence_pad_multiple``."""
    recompute: str | None = None
    """Activation recomputation: ``None`` | ``'selective'`` | ``'full'``."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (needs TP > 1): activations outside the TP matmuls are split
    over the TP ranks along the sequence. Micro-batches are right-padded to a multiple of the TP
    size; the last stage all-gathers its hidden states before the vocab-parallel logprobs."""
    layout: str = "auto"
    """Micro-batch layout (``packing``): ``'shared_prefix'`` one row per prompt with its K
    responses (the prompt runs once per group), ``'rollout'`` one row per rollout, ``'auto'`` the
    cheaper one per micro-batch by ``packing.layout_cost``. ``'shared_prefix'`` needs the local
    layer spec; ``'auto'`` means ``'rollout'`` with TE (its attention here takes causal masks)."""
    max_skipped_steps: int = 3
    """A train step whose loss or gradient is not finite is skipped (no optimizer update) and
    counted (``train/skipped_steps``); this many in a row stop the run with
    :class:`NonFiniteTrainingError`."""

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if self.logprob_micro_batch_size is not None and self.logprob_micro_batch_size < 1:
            raise ValueError("logprob_micro_batch_size must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {self.layout!r}")
        if self.max_skipped_steps < 1:
            raise ValueError(f"max_skipped_steps must be >= 1, got {self.max_skipped_steps}")

    @classmethod
    def from_train_config(cls, cfg: Any, params_dtype: torch.dtype) -> MegatronPolicyConfig:
        """The run's ``policy`` section plus what the policy takes from other sections: the
        rollout temperature and group size (micro-batches of whole groups) and the optimizer.

        Args:
            cfg: a :class:`~nemo_rence.config.TrainConfig`.
            params_dtype: the resolved ``policy.precision``.
        """
        p, o = cfg.policy, cfg.optim
        return cls(
            micro_batch_size=cfg.rollout.group_size * p.micro_batch_groups,
            temperature=cfg.rollout.temperature,
            params_dtype=params_dtype,
            fp8=None if p.fp8 == "none" else p.fp8,
            recompute="full" if p.recompute else None,
            sequence_parallel=p.sequence_parallel,
            layout=p.layout,
            max_skipped_steps=o.max_skipped_steps,
            optimizer=OptimizerSettings(
                lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, clip_grad=o.grad_clip
            ),
        )


class NonFiniteTrainingError(FloatingPointError):
    """``max_skipped_steps`` train steps in a row had a non-finite loss or gradient."""


def plan_group_micro_batches(group_ids: Tensor, micro_batch_size: int) -> list[Tensor]:
    """Split rows into micro-batches of whole groups, packed in order of first appearance.

    Args:
        group_ids: [N] int64 (groups need not be contiguous).
        micro_batch_size: rollouts per micro-batch.
    Returns:
        A list of [n_m] int64 row-index tensors covering every row once; each holds whole groups
        and at most ``micro_batch_size`` rows.
    Raises:
        ValueError: if ``micro_batch_size`` would split a group (not a multiple of the common group
            size, or smaller than some group).
    """
    gids = group_ids.detach().cpu()
    order: dict[int, list[int]] = {}
    for row, g in enumerate(gids.tolist()):
        order.setdefault(int(g), []).append(row)
    sizes = {g: len(rows) for g, rows in order.items()}
    if len(set(sizes.values())) == 1:
        k = next(iter(sizes.values()))
        if micro_batch_size % k:
            raise ValueError(
                f"micro_batch_size={micro_batch_size} would split groups of {k} rollouts: "
                f"micro-batches must hold whole groups, use a multiple of {k}"
            )
    too_big = {g: s for g, s in sizes.items() if s > micro_batch_size}
    if too_big:
        g, s = next(iter(too_big.items()))
        raise ValueError(
            f"micro_batch_size={micro_batch_size} would split group {g} of {s} rollouts: "
            f"micro-batches must hold whole groups, use at least {max(too_big.values())}"
        )
    plans: list[list[int]] = [[]]
    for rows in order.values():
        if len(plans[-1]) + len(rows) > micro_batch_size:
            plans.append([])
        plans[-1].extend(rows)
    return [torch.tensor(p, dtype=torch.long) for p in plans if p]


@dataclass
class _Micro:
    """One micro-batch as the forward step sees it."""

    layout: Layout  # model inputs [B, S] and where the response tokens are read off
    width: int  # T
    micro: MicroBatch | None  # None for forward-only scoring
    loss_fn: LossFn | None


@contextmanager
def _rope_at(model: Any, layout: Layout) -> Iterator[None]:
    """Rotary embeddings at ``layout.position_ids`` instead of ``0 .. S-1``.

    Megatron's ``GPTModel`` asks its ``rotary_pos_emb`` for the angles of positions ``0 .. S-1``
    ([S, 1, 1, D], one set for every row); the shared-prefix layout restarts each response at
    the prompt length, so for the call the module returns ``emb[position_ids^T]`` ([S, B, 1, D],
    broadcast over heads by ``apply_rotary_pos_emb``). The rollout layout keeps megatron's path.
    """
    rope = getattr(model, "rotary_pos_emb", None)
    if not layout.shared or rope is None:
        yield
        return
    original = rope.forward
    positions = layout.position_ids

    def forward(max_seq_len: int, *args: Any, **kwargs: Any) -> Tensor:
        emb = original(int(positions.max()) + 1, *args, **kwargs)  # [P, 1, 1, D]
        return emb[:, 0][positions.t().to(emb.device)]  # [S, B, 1, D]

    rope.forward = forward
    try:
        yield
    finally:
        del rope.forward  # back to the class's method


@contextmanager
def _hidden_states_only(model: Any) -> Iterator[None]:
    """Make ``GPTModel.forward`` return the final-norm hidden states ``[S, B, H]`` on the last
    stage (megatron returns them whenever ``post_process`` is false; the final norm belongs to
    the decoder and still runs)."""
    saved = model.post_process
    model.post_process = False
    try:
        yield
    finally:
        model.post_process = saved


def _detach_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v.detach().float().mean()) if isinstance(v, Tensor) else float(v)
        for k, v in metrics.items()
    }


class MegatronPolicy:
    """Megatron-Core policy: build, score, train, export (see the module docstring).

    Megatron's parallel state must be initialised first (``parallel.init_parallel``). Weights
    start random; load them with :meth:`load_hf` (HF weights) or :meth:`load` (a checkpoint).

    Attributes:
        model: this rank's ``GPTModel`` (its TP shard of its PP stage).
        ddp: ``model`` wrapped in megatron's ``DistributedDataParallel`` (grads in ``main_grad``).
        optimizer: AdamW on CPU, megatron's distributed optimizer on GPU (``optimizer`` module).

    Args:
        arch: the architecture (``ArchSpec.from_hf_config``).
        cfg: runtime settings.
    """

    def __init__(self, arch: ArchSpec, cfg: MegatronPolicyConfig | None = None) -> None:
        from megatron.core import parallel_state as ps
        from megatron.core.distributed import (
            DistributedDataParallel,
            DistributedDataParallelConfig,
            finalize_model_grads,
        )

        if not ps.model_parallel_is_initialized():
            raise RuntimeError(
                "megatron's parallel state is not initialised: call "
                "nemo_rence.policy.megatron.parallel.init_parallel(tp, pp) first"
            )
        self.arch = arch
        self.cfg = cfg or MegatronPolicyConfig()
        self.spec = resolve_spec(self.cfg.spec)
        check_fp8(self.cfg.fp8, self.spec)  # before anything is built: a config error on CPU
        self._layout_mode = self.cfg.layout
        if self.spec != "local":
            if self._layout_mode == "shared_prefix":
                raise ValueError(
                    "layout='shared_prefix' needs the local layer spec (arbitrary attention "
                    f"masks); the {self.spec!r} spec takes causal masks only: use layout='auto' "
                    "or 'rollout', or spec='local'"
                )
            self._layout_mode = "rollout"
        # packing.layout_cost: linear FLOPs per token per layer (2 x params) and d_attn
        d_attn = arch.num_attention_heads * arch.head_dim
        d_kv = arch.num_query_groups * arch.head_dim
        h = arch.hidden_size
        self._flops_per_token = 2.0 * (
            h * (d_attn + 2 * d_kv) + d_attn * h + 3 * h * arch.ffn_hidden_size
        )
        self._attention_width = d_attn
        self.model = build_gpt_model(
            arch,
            pre_process=ps.is_pipeline_first_stage(),
            post_process=ps.is_pipeline_last_stage(),
            params_dtype=self.cfg.params_dtype,
            spec=self.spec,
            fp8=self.cfg.fp8,
            recompute=self.cfg.recompute,
            sequence_parallel=self.cfg.sequence_parallel,
        )
        config = self.model.config
        # Micro-batches of whole groups differ in rows and length: let the pipeline exchange shapes.
        config.variable_seq_lengths = True
        config.finalize_model_grads_func = finalize_model_grads
        # Free each stage's sent activations early (Megatron-LM's default); the schedules then
        # call the autograd engine directly, which also keeps infra.cpu_compat's device rewrite
        # active during activation recomputation inside backward on CPU.
        config.deallocate_pipeline_outputs = True
        on_gpu = torch.cuda.is_available()
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=False,
            use_distributed_optimizer=on_gpu,
        )
        self.ddp = DistributedDataParallel(config, ddp_config, self.model)
        self.optimizer: PolicyOptimizer = build_optimizer(
            self.ddp, self.cfg.optimizer, self.cfg.params_dtype
        )
        self._tp_group = ps.get_tensor_model_parallel_group()
        self._tp_size = ps.get_tensor_model_parallel_world_size()
        self._pp_group = ps.get_pipeline_model_parallel_group()
        self._pp_size = ps.get_pipeline_model_parallel_world_size()
        self._pp_rank = ps.get_pipeline_model_parallel_rank()
        self._pp_last_rank = ps.get_pipeline_model_parallel_last_rank()
        self._dp_group = ps.get_data_parallel_group()
        self._dp_size = ps.get_data_parallel_world_size()
        self._mp_group = ps.get_model_parallel_group()
        self._is_last_stage = ps.is_pipeline_last_stage()
        self._device = (
            torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        )
        self.skipped_in_a_row = 0
        """Consecutive train steps skipped for a non-finite loss or gradient."""

    # ------------------------------------------------------------------------------------------
    # Forward step (shared by scoring and training)
    # ------------------------------------------------------------------------------------------

    def _output_weight(self) -> Tensor:
        m = self.model
        return (
            m.shared_embedding_or_output_weight()
            if m.share_embeddings_and_output_weights
            else m.output_layer.weight
        )

    def _forward_step(self, data_iterator: Iterator[_Micro], model: Any) -> tuple[Tensor, Any]:
        mb = next(data_iterator)
        lay = mb.layout
        with _hidden_states_only(self.model), _rope_at(self.model, lay):
            out = model(lay.input_ids, lay.position_ids, lay.attention_mask)
        return out, partial(self._loss_func, mb)

    def _loss_func(self, mb: _Micro, hidden: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Last stage only: hidden [S, B, H] -> logprobs [B, T] -> (scaled loss, metrics)."""
        sp = bool(self.model.config.sequence_parallel) and self._tp_size > 1
        if sp:
            from megatron.core.tensor_parallel.mappings import gather_from_sequence_parallel_region

            hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=True)
        logp = layout_logprobs(
            hidden,
            self._output_weight(),
            mb.layout,
            width=mb.width,
            temperature=self.cfg.temperature,
            chunk_size=self.cfg.logprob_chunk_size,
            vocab_size=self.arch.vocab_size,
            group=self._tp_group if self._tp_size > 1 else None,
            reduce_grad_input=not sp,
        )
        if mb.loss_fn is None or mb.micro is None:
            return logp.new_zeros(()), {"logprobs": logp.detach()}
        loss, metrics = mb.loss_fn(logp, mb.micro)
        scale = mb.micro.num_micro_batches * self._dp_size
        return loss * scale, {"policy/loss": float(loss.detach()), **_detach_metrics(metrics)}

    def _micro(
        self, batch: PolicyBatch, rows: Tensor, micro: MicroBatch | None, loss_fn: LossFn | None
    ) -> _Micro:
        # Sequence parallelism splits the sequence over the TP ranks and FP8 GEMMs need it a
        # multiple of 16: pad it (model.sequence_pad_multiple).
        layout = choose_layout(
            self._layout_mode,
            batch.input_ids[rows],
            batch.prompt_lengths[rows],
            batch.response_lengths[rows],
            flops_per_token=self._flops_per_token,
            attention_width=self._attention_width,
            pad_multiple=sequence_pad_multiple(
                self._tp_size, self.model.config.sequence_parallel, self.cfg.fp8
            ),
        )
        return _Micro(layout.to(self._device), batch.width, micro, loss_fn)

    def _run(self, micros: list[_Micro], forward_only: bool) -> list[dict[str, Any]]:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        first = micros[0]
        return get_forward_backward_func()(
            forward_step_func=self._forward_step,
            data_iterator=iter(micros),
            model=[self.ddp],
            num_microbatches=len(micros),
            seq_length=first.layout.shape[1],
            micro_batch_size=first.layout.shape[0],
            forward_only=forward_only,
        )

    def _broadcast_from_last_stage(self, obj: Any) -> Any:
        if self._pp_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=self._pp_last_rank, group=self._pp_group)
        return box[0]

    # ------------------------------------------------------------------------------------------
    # Policy protocol
    # ------------------------------------------------------------------------------------------

    def logprobs(self, batch: PolicyBatch) -> Tensor:
        """Forward only: [N, T] float32 per-token log-probabilities (0 on padding), on every rank.

        Computed on the last pipeline stage and broadcast to the other stages of the pipeline.
        """
        if batch.size == 0:
            return torch.zeros(0, batch.width)
        mbs = self.cfg.logprob_micro_batch_size or self.cfg.micro_batch_size
        micros = [
            self._micro(batch, rows, None, None) for rows in torch.arange(batch.size).split(mbs)
        ]
        was_training = self.ddp.training
        self.ddp.eval()
        try:
            with torch.no_grad():
                out = self._run(micros, forward_only=True)
        finally:
            self.ddp.train(was_training)
        result: Tensor | None = None
        if self._is_last_stage:
            result = torch.cat([o["logprobs"].float().cpu() for o in out], dim=0)
        if self._pp_size > 1:
            if result is None:
                result = torch.empty(batch.size, batch.width, dtype=torch.float32)
            result = result.to(self._device)
            dist.broadcast(result, src=self._pp_last_rank, group=self._pp_group)
        assert result is not None
        return result.cpu()

    def train_step(self, batch: PolicyBatch, loss_fn: LossFn, lr: float | None = None) -> Metrics:
        """One optimizer step: accumulate gradients over micro-batches of whole groups, reduce them
        over DP ranks, clip by the global norm, update (at learning rate ``lr`` when given).

        Returns (identical on every rank):
            ``policy/loss``: the mini-batch loss (sum of micro-batch losses over micro-batches and
            DP ranks); ``policy/grad_norm`` (pre-clip global norm); ``policy/num_micro_batches``;
            ``policy/tokens`` (global); ``policy/shared_prefix`` (share of this rank's
            micro-batches in the shared-prefix layout) and ``policy/forward_tokens`` (the B x S
            tokens its model ran, padding included); ``train/skipped_steps`` (1.0 when this step
            was skipped); every metric of ``loss_fn``, summed over micro-batches and DP ranks
            when the loss declares it so (``interface.metric_reduction``: globally normalised
            terms that add up to the mini-batch value, like ``loss/rence`` or ``kl/k3``), else
            averaged (``kl/coef``, ``rence/pos_prob``).

        Non-finite loss or gradient: the step is skipped (no parameter or optimizer-state
        change), ``train/skipped_steps`` is 1.0, and after ``cfg.max_skipped_steps`` skipped
        steps in a row :class:`NonFiniteTrainingError` is raised. Never a silent NaN in weights.
        """
        if batch.size == 0:
            raise ValueError("train_step needs at least one group on every data-parallel rank")
        plans = plan_group_micro_batches(batch.group_ids, self.cfg.micro_batch_size)
        counts = torch.tensor(
            [float(len(torch.unique(batch.group_ids))), float(batch.num_tokens())],
            device=self._device,
        )
        if self._dp_size > 1:
            dist.all_reduce(counts, group=self._dp_group)
        num_groups, num_tokens = int(counts[0]), int(counts[1])
        mask = batch.response_mask
        micros = []
        for rows in plans:
            micro = MicroBatch(
                rows=rows,
                response_mask=mask[rows].to(self._device),
                group_ids=batch.group_ids[rows].to(self._device),
                extras=batch.extras.select(rows, self._device),
                num_groups_global=max(num_groups, 1),
                num_tokens_global=max(num_tokens, 1),
                num_micro_batches=len(plans),
            )
            micros.append(self._micro(batch, rows, micro, loss_fn))

        self.ddp.train()
        self.ddp.zero_grad_buffer()
        self.optimizer.zero_grad()
        out = self._run(
            micros, forward_only=False
        )  # finalize_model_grads: DP + tied-embedding sync
        if lr is not None:
            self.optimizer.set_lr(lr)
        grad_norm, skipped = self._step_if_finite(out)

        metrics: dict[str, float] | None = None
        if self._is_last_stage:
            keys = sorted(out[0])
            summed = torch.tensor([metric_reduction(loss_fn, k) == "sum" for k in keys])
            local = torch.tensor([sum(o[k] for o in out) for k in keys], dtype=torch.float64)
            local = torch.where(summed, local, local / len(out))
            if self._dp_size > 1:
                local = local.to(self._device)
                dist.all_reduce(local, group=self._dp_group)
                local = torch.where(summed, local.cpu(), local.cpu() / self._dp_size)
            metrics = dict(zip(keys, local.tolist(), strict=True))
        metrics = self._broadcast_from_last_stage(metrics)
        assert metrics is not None
        metrics.update(
            {
                "policy/grad_norm": float(grad_norm),
                "policy/num_micro_batches": float(len(plans)),
                "policy/tokens": float(num_tokens),
                "policy/shared_prefix": sum(m.layout.shared for m in micros) / len(micros),
                "policy/forward_tokens": float(sum(math.prod(m.layout.shape) for m in micros)),
                "train/skipped_steps": float(skipped),
            }
        )
        return metrics

    def _step_if_finite(self, out: list[dict[str, Any]]) -> tuple[float, bool]:
        """The optimizer step unless the loss (last stage, agreed over every rank) or the global
        gradient norm (the optimizer refuses a non-finite one) is not finite; (grad norm, skipped)."""
        finite = torch.tensor(
            [1.0 if all(math.isfinite(o["policy/loss"]) for o in out) else 0.0]
            if self._is_last_stage
            else [1.0],
            device=self._device,
        )
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        grad_norm = math.nan
        skipped = not bool(finite.item())
        if not skipped:
            try:
                grad_norm = self.optimizer.step()
            except FloatingPointError:  # non-finite gradient norm: nothing was applied
                skipped = True
        if skipped:
            self.optimizer.zero_grad()
            self.skipped_in_a_row += 1
            if self.skipped_in_a_row >= self.cfg.max_skipped_steps:
                raise NonFiniteTrainingError(
                    f"{self.skipped_in_a_row} train steps in a row had a non-finite loss or "
                    f"gradient (optim.max_skipped_steps={self.cfg.max_skipped_steps}); the "
                    "weights are those of the last finite step. Check the loss inputs "
                    "(old/engine logprobs, rewards) or lower the learning rate"
                )
        else:
            self.skipped_in_a_row = 0
        return grad_norm, skipped

    def grad_norm(self) -> float:
        """Global L2 norm of the currently accumulated gradients (each parameter counted once)."""
        return global_grad_norm(self.model.parameters(), self._mp_group)

    def export_weights(self) -> Iterator[tuple[str, Tensor]]:
        """Stream the full model as Hugging Face ``(name, tensor)`` pairs, tensor by tensor.

        Each megatron parameter is all-gathered over its TP group (``mapping.tp_gather``), then
        broadcast from its pipeline stage to every other stage, then renamed / split by
        ``mapping.megatron_to_hf`` (global layer indices). Every rank of the replica receives
        every tensor, on the model's device and in its dtype. At most one full megatron tensor
        (plus its TP shards) is alive at a time beyond the model itself; the generator produces
        it only when asked (a consumer that keeps the tensors holds them, of course). Collective: all
        ranks of the TP x PP replica must consume the generator fully, in lockstep.
        """
        from nemo_rence.checkpoint.mapping import megatron_to_hf

        for name, full in self._iter_full(lambda p: p.detach()):
            yield from megatron_to_hf(name, full, self.arch)

    def export_grads(self) -> Iterator[tuple[str, Tensor]]:
        """Like :meth:`export_weights` for the accumulated (DP-reduced) gradients of the last
        :meth:`train_step` (fp32), as the optimizer applied them (clipped in place to
        ``clip_grad`` by global norm); for checks and debugging. With the distributed optimizer (GPU)
        each DP rank holds only its reduce-scattered shard of the gradient buffer, so the result
        is the full gradient only at DP = 1 there."""
        from nemo_rence.checkpoint.mapping import megatron_to_hf

        def grad(p: Tensor) -> Tensor:
            g = getattr(p, "main_grad", None)
            return (g if g is not None else torch.zeros_like(p, dtype=torch.float32)).detach()

        for name, full in self._iter_full(grad):
            yield from megatron_to_hf(name, full, self.arch)

    def _iter_full(self, tensor_of: Any) -> Iterator[tuple[str, Tensor]]:
        """Full megatron tensors (global names) of ``tensor_of(param)``, stage by stage."""
        from nemo_rence.checkpoint.mapping import (
            stage_layer_range,
            to_global_name,
            tp_gather,
            tp_partition_dim,
        )

        offset = stage_layer_range(self.model).start
        params = {}
        for local_name, p in self.model.named_parameters():
            name = to_global_name(local_name, offset)
            if name == "output_layer.weight" and self.arch.tie_word_embeddings:
                continue  # the last stage's copy of the tied embedding
            params[name] = p
        # (name, full shape, dtype) of every stage, so that receivers can allocate.
        meta = [(n, self._full_shape(n, p), tensor_of(p).dtype) for n, p in params.items()]
        stages: list[Any] = [None] * self._pp_size
        if self._pp_size > 1:
            dist.all_gather_object(stages, meta, group=self._pp_group)
        else:
            stages = [meta]
        pp_ranks = dist.get_process_group_ranks(self._pp_group) if self._pp_size > 1 else []
        for stage, stage_meta in enumerate(stages):
            for name, shape, dtype in stage_meta:
                full: Tensor | None = None
                if stage == self._pp_rank:
                    local = tensor_of(params[name]).contiguous()
                    if self._tp_size > 1 and tp_partition_dim(name) is not None:
                        shards = [torch.empty_like(local) for _ in range(self._tp_size)]
                        dist.all_gather(shards, local, group=self._tp_group)
                        full = tp_gather(name, shards)
                        del shards
                    else:
                        full = local
                if self._pp_size > 1:
                    if full is None:
                        full = torch.empty(shape, dtype=dtype, device=self._device)
                    else:
                        full = full.contiguous()
                    dist.broadcast(full, src=pp_ranks[stage], group=self._pp_group)
                assert full is not None
                yield name, full
                del full

    def _full_shape(self, name: str, p: Tensor) -> tuple[int, ...]:
        from nemo_rence.checkpoint.mapping import tp_partition_dim

        dim = tp_partition_dim(name)
        shape = list(p.shape)
        if dim is not None:
            shape[dim] *= self._tp_size
        return tuple(shape)

    def save(self, directory: str | Path) -> None:
        """Write weights + optimizer state as a NeMo-2-style dist checkpoint (collective).

        Delegates to ``checkpoint.dist.save_checkpoint``: weights reload at any TP/PP; the CPU
        optimizer state is per rank (same layout only), the GPU distributed optimizer's is sharded.
        """
        from nemo_rence.checkpoint.dist import save_checkpoint

        save_checkpoint(
            self.model,
            directory,
            self.arch,
            optimizer_state=self.optimizer.checkpoint_state(self.model),
        )

    def load(self, directory: str | Path) -> None:
        """Restore what :meth:`save` wrote (collective; ``checkpoint.dist.load_checkpoint``)."""
        from nemo_rence.checkpoint.dist import load_checkpoint

        state = load_checkpoint(
            self.model,
            directory,
            load_optimizer=True,
            optimizer_sharded_state_dict=self.optimizer.checkpoint_template(self.model),
        )
        self.optimizer.reload_model_params()
        if state is not None:
            self.optimizer.load_checkpoint_state(state)

    def load_hf(self, hf_dir_or_state: str | Path | Mapping[str, Tensor]) -> None:
        """Load Hugging Face weights (a directory or a state dict) at any TP/PP.

        Delegates to ``checkpoint.hf.load_hf_into_model``, then lets the optimizer re-read the
        parameters (the GPU optimizer keeps fp32 main copies).
        """
        from nemo_rence.checkpoint.hf import load_hf_into_model

        load_hf_into_model(self.model, hf_dir_or_state, self.arch)
        self.optimizer.reload_model_params()
