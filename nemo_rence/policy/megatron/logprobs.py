"""Per-token log-probabilities of label tokens, vocab-parallel and chunked over tokens.

Shape legend::

    M        selected tokens (response positions of a micro-batch, flattened)
    H        hidden size
    V        true vocabulary size (the tokenizer's); Vp >= V is megatron's padded vocabulary
    V_loc    vocabulary rows owned by this tensor-parallel rank, Vp / tp_size
    C        tokens per chunk (``chunk_size``)
    B, S     micro-batch rows and sequence length (megatron activations are [S, B, H])
    T        padded response length of a batch (columns of the [B, T] result)

The log-probability of label ``y`` at temperature ``tau`` from hidden state ``h``::

    z        = W h / tau                                    # [Vp] logits, W: [Vp, H]
    logp(y)  = z_y - logsumexp_{v < V} z_v                  # padded rows v >= V are excluded

With tensor parallelism ``W`` is split by rows (vocabulary) over the TP group; each rank holds
``W[r * V_loc : (r + 1) * V_loc]``. The forward computes, per chunk of ``C`` tokens::

    m   = all_reduce_max(max_v z_v)                         # [C]
    s   = all_reduce_sum(sum_v exp(z_v - m))                # [C]
    z_y = all_reduce_sum(z_y if y is owned here else 0)     # [C]
    logp = z_y - m - log(s)

so at most one ``[C, V_loc]`` fp32 block of logits (plus its exponent) is alive at a time; a
whole-batch ``[M, Vp]`` log-softmax is never materialised. The backward recomputes each chunk's
logits and uses ``d logp / d z = (onehot(y) - softmax(z)) / tau``::

    dz_c     = g_c[:, None] * (onehot(y_c) - exp(z_c - lse_c)) / tau     # [C, V_loc]
    dh_c     = dz_c @ W_loc                                             # partial over TP ranks
    dW_loc  += dz_c^T @ h_c

and sums ``dh`` over the TP group (each rank saw only its vocabulary shard), which is what
megatron's ``ColumnParallelLinear`` does through ``copy_to_tensor_model_parallel_region``. With
sequence parallelism the caller gathers the hidden states with
``gather_from_sequence_parallel_region`` whose backward reduce-scatters, so the all-reduce is
skipped (``reduce_grad_input=False``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from nemo_rence.policy.megatron.packing import Layout, rollout_layout

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "auto_chunk_size",
    "gather_response_logprobs",
    "layout_logprobs",
    "vocab_parallel_token_logprobs",
]

#: fp32 bytes of one ``[C, V_loc]`` logits block when ``chunk_size`` is left to :func:`auto_chunk_size`.
DEFAULT_CHUNK_BYTES = 64 * 2**20


def auto_chunk_size(vocab_local: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Tokens per chunk so that one fp32 ``[C, V_loc]`` block takes about ``chunk_bytes``."""
    return max(1, chunk_bytes // (4 * max(1, vocab_local)))


def _tp_size(group: dist.ProcessGroup | None) -> int:
    if group is None or not dist.is_initialized():
        return 1
    return dist.get_world_size(group)


def _chunk_logits(
    h: Tensor, weight: Tensor, tau: float, vocab_start: int, vocab_size: int | None
) -> Tensor:
    """fp32 ``[C, V_loc]`` logits ``W h / tau`` with padded vocabulary rows set to -inf."""
    z = (h @ weight.t()).float()  # a fresh [C, V_loc] block: modified in place below
    if tau != 1.0:
        z.div_(tau)
    if vocab_size is not None and vocab_start + weight.shape[0] > vocab_size:
        z[:, max(0, vocab_size - vocab_start) :] = float("-inf")
    return z


def _local_label_index(labels: Tensor, vocab_start: int, vocab_local: int) -> tuple[Tensor, Tensor]:
    """(owned [C] bool, index [C] into this rank's shard, 0 where not owned)."""
    local = labels - vocab_start
    owned = (local >= 0) & (local < vocab_local)
    return owned, torch.where(owned, local, torch.zeros_like(local))


class _VocabParallelTokenLogprobs(torch.autograd.Function):
    """Autograd function behind :func:`vocab_parallel_token_logprobs` (chunked fwd and bwd)."""

    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        labels: Tensor,
        tau: float,
        chunk_size: int,
        vocab_start: int,
        vocab_size: int | None,
        group: dist.ProcessGroup | None,
        reduce_grad_input: bool,
    ) -> Tensor:
        num_tokens, vocab_local = hidden.shape[0], weight.shape[0]
        distributed = _tp_size(group) > 1
        out = torch.empty(num_tokens, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(num_tokens, dtype=torch.float32, device=hidden.device)
        for start in range(0, num_tokens, chunk_size):
            sl = slice(start, min(start + chunk_size, num_tokens))
            z = _chunk_logits(hidden[sl], weight, tau, vocab_start, vocab_size)
            owned, idx = _local_label_index(labels[sl], vocab_start, vocab_local)
            z_label = torch.where(owned, z.gather(1, idx[:, None]).squeeze(1), 0.0)
            m = z.max(dim=1).values
            if distributed:
                dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
            z.sub_(m[:, None]).exp_()
            stats = torch.stack([z.sum(dim=1), z_label])  # [2, C]
            del z
            if distributed:
                dist.all_reduce(stats, group=group)
            lse[sl] = m + stats[0].log()
            out[sl] = stats[1] - lse[sl]
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.cfg = (tau, chunk_size, vocab_start, vocab_size, group, reduce_grad_input)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        hidden, weight, labels, lse = ctx.saved_tensors
        tau, chunk_size, vocab_start, vocab_size, group, reduce_grad_input = ctx.cfg
        num_tokens, vocab_local = hidden.shape[0], weight.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        )
        for start in range(0, num_tokens, chunk_size):
            sl = slice(start, min(start + chunk_size, num_tokens))
            h = hidden[sl]
            z = _chunk_logits(h, weight, tau, vocab_start, vocab_size)
            # dz = g * (onehot - softmax) / tau, built in place on the logits block.
            z.sub_(lse[sl, None]).exp_().neg_()
            owned, idx = _local_label_index(labels[sl], vocab_start, vocab_local)
            rows = torch.nonzero(owned).squeeze(1)
            z[rows, idx[rows]] += 1.0
            z.mul_((grad_out[sl].float() / tau)[:, None])
            dz = z.to(weight.dtype)
            del z
            if grad_h is not None:
                grad_h[sl] = dz @ weight
            if grad_w is not None:
                grad_w.addmm_(dz.t().float(), h.float())
            del dz  # free this block before the next chunk allocates its own
        if grad_h is not None and reduce_grad_input and _tp_size(group) > 1:
            dist.all_reduce(grad_h, group=group)
        return (
            grad_h,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def vocab_parallel_token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    vocab_start: int | None = None,
    vocab_size: int | None = None,
    group: dist.ProcessGroup | None = None,
    reduce_grad_input: bool = True,
) -> Tensor:
    """``log softmax(W h / temperature)[label]`` per token, vocab-parallel and chunked.

    Args:
        hidden: [M, H] final hidden states (after the final norm), replicated over the TP group.
        weight: [V_loc, H] this rank's rows of the output projection (vocabulary shard).
        labels: [M] int64 global token ids to score.
        temperature: logits are divided by it (rollouts sampled at tau must be scored at tau).
        chunk_size: tokens per chunk; ``None`` picks :func:`auto_chunk_size` (~64 MiB blocks).
        vocab_start: first global vocabulary id of this rank's shard; default
            ``tp_rank * V_loc`` (megatron's contiguous split of the padded vocabulary).
        vocab_size: the true vocabulary size V; rows with global id >= V (megatron's vocabulary
            padding) are excluded from the softmax. ``None``: no padding.
        group: the tensor-parallel process group (``None`` or size 1: no communication).
        reduce_grad_input: all-reduce the gradient of ``hidden`` over ``group`` (set ``False``
            when the caller's sequence-parallel gather already reduce-scatters it).

    Returns:
        [M] float32 log-probabilities; differentiable w.r.t. ``hidden`` and ``weight``.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"expected hidden [M, H] and weight [V_loc, H], got {hidden.shape} and {weight.shape}"
        )
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels must be [M]={hidden.shape[0]}, got {tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    vocab_local = weight.shape[0]
    if vocab_start is None:
        rank = dist.get_rank(group) if _tp_size(group) > 1 else 0
        vocab_start = rank * vocab_local
    if chunk_size is None:
        chunk_size = auto_chunk_size(vocab_local)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _VocabParallelTokenLogprobs.apply(
        hidden,
        weight,
        labels.long(),
        float(temperature),
        int(chunk_size),
        int(vocab_start),
        vocab_size,
        group,
        reduce_grad_input,
    )


def layout_logprobs(
    hidden: Tensor,
    weight: Tensor,
    layout: Layout,
    *,
    width: int,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    vocab_size: int | None = None,
    group: dist.ProcessGroup | None = None,
    reduce_grad_input: bool = True,
) -> Tensor:
    """Response-aligned per-token log-probabilities of a micro-batch from its hidden states.

    The output projection runs only on the ``M`` hidden states that predict response tokens
    (``layout.hidden_positions`` / ``hidden_rows``, see :mod:`.packing`).

    Args:
        hidden: [S, B, H] final hidden states (megatron layout), TP-replicated.
        weight: [V_loc, H] output projection shard.
        layout: the micro-batch's :class:`~.packing.Layout` (rollout or shared-prefix).
        width: T, columns of the result.
        temperature, chunk_size, vocab_size, group, reduce_grad_input: see
            :func:`vocab_parallel_token_logprobs`.

    Returns:
        [n, T] float32; ``out[i, j] = log pi(y_ij | x_i, y_i,<j)`` for ``j < r_i``, 0 in padding.
    """
    # One flat index_select, not advanced indexing: in the shared-prefix layout the prompt's last
    # hidden state predicts the first token of all K responses, and the backward of advanced
    # indexing with repeated indices accumulates with atomic adds across threads on CPU (run to
    # run different rounding); index_select's backward (index_add_) sums in index order.
    seq, rows = hidden.shape[0], hidden.shape[1]
    flat = layout.hidden_positions * rows + layout.hidden_rows  # row-major [S, B] -> S * B
    h = hidden.reshape(seq * rows, hidden.shape[2]).index_select(0, flat.to(hidden.device))
    logp = vocab_parallel_token_logprobs(
        h,
        weight,
        layout.labels.to(hidden.device),
        temperature=temperature,
        chunk_size=chunk_size,
        vocab_size=vocab_size,
        group=group,
        reduce_grad_input=reduce_grad_input,
    )
    out = logp.new_zeros(layout.num_rollouts, width)
    index = (layout.out_rows.to(hidden.device), layout.out_cols.to(hidden.device))
    return out.index_put(index, logp)


def gather_response_logprobs(
    hidden: Tensor,
    weight: Tensor,
    input_ids: Tensor,
    prompt_lengths: Tensor,
    response_lengths: Tensor,
    *,
    width: int | None = None,
    **kwargs: Any,
) -> Tensor:
    """:func:`layout_logprobs` of a right-padded ``[B, S]`` batch (the rollout layout).

    Args:
        hidden: [S, B, H]; input_ids: [B, S] prompt + response + right padding;
        prompt_lengths, response_lengths: [B] int64 (``p_i + r_i <= S``).
        width: T (default ``max r_i``); kwargs: as :func:`layout_logprobs`.

    Returns:
        [B, T] float32; ``out[i, j] = log pi(input_ids[i, p_i + j] | input_ids[i, :p_i + j])`` for
        ``j < r_i`` and 0 in padding columns.
    """
    layout = rollout_layout(input_ids.cpu(), prompt_lengths.cpu(), response_lengths.cpu())
    width = int(response_lengths.max().item()) if width is None else width
    return layout_logprobs(hidden, weight, layout, width=width, **kwargs)
