"""Micro-batch layouts for the policy forward: one row per rollout, or one row per prompt.

Shape legend::

    n      rollouts of the micro-batch           T   response width of the [n, T] result
    B, S   rows and sequence length of the layout (what the model sees)
    M      scored tokens (sum of the response lengths)

**Rollout layout** (``rollout_layout``): row ``i`` is rollout ``i``, ``p_i`` prompt tokens then
``r_i`` response tokens, right-padded to ``S = max_i (p_i + r_i)``; causal attention, positions
``0 .. S-1``. Token ``j`` of response ``i`` is predicted by the hidden state at ``p_i + j - 1``.

**Shared-prefix layout** (``shared_prefix_layout``): the K rollouts of a prompt x share one row::

    row  = [x_1 .. x_p | y^1_1 .. y^1_{r_1} | y^2_1 .. y^2_{r_2} | ... | y^K_1 .. y^K_{r_K} | pad]
    seg  = [0   ..  0  | 1     ..  1        | 2     ..  2        | ... | K     ..  K        | -1 ]
    pos  = [0   .. p-1 | p     .. p+r_1-1   | p     .. p+r_2-1   | ... | p     .. p+r_K-1   |  0 ]

Query ``q`` may attend to key ``k`` iff ``k <= q`` and ``seg[k] in {0, seg[q]}``: every response
sees the prompt and its own earlier tokens, never another response, so each response's hidden
states are exactly those of its own rollout-layout row (RoPE at ``pos``; masked scores get
megatron's -10000 fill, whose ``exp`` underflows to exactly 0 in fp32). Token ``j`` of response
``k`` (starting at offset ``o_k``) is predicted by the hidden state at ``p - 1`` for ``j = 0`` and
at ``o_k + j - 1`` otherwise. The prompt runs once per group instead of K times, forward and
backward (its gradient is the sum of the K rollouts' contributions, as in the rollout layout).

Which is cheaper (``layout_cost``): per layer, a token costs ``c_lin = 2 * params_per_layer``
FLOPs in the linear layers and the unfused attention ``4 * d_attn * S`` per token of a length-S
row (``Q K^T`` and ``P V`` over the full ``S x S`` score matrix, d_attn = heads x head_dim), so::

    cost(layout) = B * S * (c_lin + 4 * d_attn * S)

The shared layout wins when prompts are long relative to the responses (K p + sum r tokens
become p + sum r); with long responses its ``S^2`` attention term makes it lose, and ``auto``
keeps the rollout layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "LAYOUTS",
    "Layout",
    "choose_layout",
    "layout_cost",
    "layout_shapes",
    "response_positions",
    "rollout_layout",
    "shared_prefix_layout",
]

LAYOUTS = ("auto", "shared_prefix", "rollout")


@dataclass(frozen=True)
class Layout:
    """What the model sees for one micro-batch, and where each response token is read off.

    Attributes:
        input_ids: [B, S] int64.
        position_ids: [B, S] int64 (RoPE positions).
        attention_mask: [B, 1, S, S] bool, True = masked out (megatron's convention), or ``None``
            for plain causal attention.
        hidden_rows, hidden_positions: [M] int64: the hidden state ``hidden[pos, row]`` (megatron's
            [S, B, H] layout) predicts ...
        labels: [M] int64 ... this token,
        out_rows, out_cols: [M] int64 ... whose log-probability goes to ``out[row, col]`` of the
            [n, T] response-aligned result.
        num_rollouts: n.
        shared: whether this is the shared-prefix layout.
    """

    input_ids: Tensor
    position_ids: Tensor
    attention_mask: Tensor | None
    hidden_rows: Tensor
    hidden_positions: Tensor
    labels: Tensor
    out_rows: Tensor
    out_cols: Tensor
    num_rollouts: int
    shared: bool

    @property
    def shape(self) -> tuple[int, int]:
        """(B, S)."""
        return int(self.input_ids.shape[0]), int(self.input_ids.shape[1])

    def to(self, device: torch.device) -> Layout:
        """The model inputs moved to ``device`` (the gather indices move where they are used)."""
        mask = None if self.attention_mask is None else self.attention_mask.to(device)
        return Layout(
            self.input_ids.to(device),
            self.position_ids.to(device),
            mask,
            self.hidden_rows,
            self.hidden_positions,
            self.labels,
            self.out_rows,
            self.out_cols,
            self.num_rollouts,
            self.shared,
        )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check(input_ids: Tensor, prompt_lengths: Tensor, response_lengths: Tensor) -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [n, L], got {tuple(input_ids.shape)}")
    if bool((prompt_lengths < 1).any()):
        raise ValueError(
            "every row needs at least one prompt token (the first token is never scored)"
        )
    if bool((prompt_lengths + response_lengths > input_ids.shape[1]).any()):
        raise ValueError("prompt_lengths + response_lengths exceeds the row length")


def rollout_layout(
    input_ids: Tensor, prompt_lengths: Tensor, response_lengths: Tensor, pad_multiple: int = 1
) -> Layout:
    """One right-padded row per rollout, causal attention (see the module docstring).

    Args:
        input_ids: [n, L] prompt + response + padding; prompt_lengths, response_lengths: [n].
        pad_multiple: S is rounded up to a multiple of it (sequence parallelism: the TP size;
            causal attention: trailing padding changes no earlier position).
    """
    p, r = prompt_lengths.cpu().long(), response_lengths.cpu().long()
    _check(input_ids, p, r)
    n = len(p)
    seq = int((p + r).max())
    ids = input_ids[:, :seq].cpu()
    if seq % pad_multiple:
        seq = _round_up(seq, pad_multiple)
        ids = torch.nn.functional.pad(ids, (0, seq - ids.shape[1]))
    rows, positions, cols = response_positions(p, r)
    return Layout(
        input_ids=ids,
        position_ids=torch.arange(seq)[None, :].expand(n, seq),
        attention_mask=None,
        hidden_rows=rows,
        hidden_positions=positions,
        labels=ids[rows, positions + 1],
        out_rows=rows,
        out_cols=cols,
        num_rollouts=n,
        shared=False,
    )


def response_positions(
    prompt_lengths: Tensor, response_lengths: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Where the response tokens of a right-padded ``[n, S]`` batch are predicted.

    Row ``i`` holds ``p_i`` prompt tokens then ``r_i`` response tokens. Response token ``j`` sits
    at position ``p_i + j`` and is predicted by the hidden state at ``p_i + j - 1``.

    Returns:
        (rows [M], hidden positions [M], response columns [M]) with ``M = sum_i r_i``, ordered row
        by row: the hidden state of ``(rows[k], positions[k])`` predicts token
        ``input_ids[rows[k], positions[k] + 1]``, whose log-probability lands in column
        ``columns[k]`` of the [n, T] result.
    """
    if bool((prompt_lengths < 1).any()):
        raise ValueError(
            "every row needs at least one prompt token (the first token is never scored)"
        )
    rows = torch.repeat_interleave(torch.arange(len(response_lengths)), response_lengths)
    starts = torch.cumsum(response_lengths, 0) - response_lengths
    columns = torch.arange(len(rows)) - starts[rows]
    positions = prompt_lengths[rows] + columns - 1
    return rows, positions, columns


def _prompt_groups(input_ids: Tensor, prompt_lengths: Tensor) -> list[list[int]]:
    """Rollout indices grouped by identical prompt tokens, in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, length in enumerate(prompt_lengths.tolist()):
        groups.setdefault(tuple(input_ids[i, :length].tolist()), []).append(i)
    return list(groups.values())


def shared_prefix_layout(
    input_ids: Tensor, prompt_lengths: Tensor, response_lengths: Tensor, pad_multiple: int = 1
) -> Layout:
    """One row per distinct prompt holding all of its responses (see the module docstring).

    Rollouts share a row exactly when their prompt tokens are identical (group ids are not
    trusted for this), so any set of rows is handled; a prompt seen once gives its rollout-layout
    row. Arguments as in :func:`rollout_layout`.
    """
    p_all, r_all = prompt_lengths.cpu().long(), response_lengths.cpu().long()
    _check(input_ids, p_all, r_all)
    src = input_ids.cpu()
    groups = _prompt_groups(src, p_all)
    lengths = [int(p_all[g[0]]) + int(r_all[g].sum()) for g in groups]
    seq = _round_up(max(lengths), pad_multiple)
    ids = torch.zeros(len(groups), seq, dtype=src.dtype)
    pos = torch.zeros(len(groups), seq, dtype=torch.long)
    seg = torch.full((len(groups), seq), -1, dtype=torch.long)
    hidden_rows, hidden_pos, label_pos, out_rows, out_cols = [], [], [], [], []
    for b, members in enumerate(groups):
        p = int(p_all[members[0]])
        ids[b, :p] = src[members[0], :p]
        pos[b, :p] = torch.arange(p)
        seg[b, :p] = 0
        offset = p
        for k, i in enumerate(members, start=1):
            r = int(r_all[i])
            if r == 0:
                continue
            ids[b, offset : offset + r] = src[i, p : p + r]
            pos[b, offset : offset + r] = torch.arange(p, p + r)
            seg[b, offset : offset + r] = k
            predictors = torch.arange(offset - 1, offset + r - 1)
            predictors[0] = p - 1  # the first response token is predicted by the prompt's end
            hidden_rows.append(torch.full((r,), b))
            hidden_pos.append(predictors)
            label_pos.append(torch.arange(offset, offset + r))
            out_rows.append(torch.full((r,), i))
            out_cols.append(torch.arange(r))
            offset += r
    q_idx = torch.arange(seq)
    causal = q_idx[None, :] <= q_idx[:, None]  # [S_q, S_k]
    same = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])  # [B, S_q, S_k]
    allowed = causal[None] & same
    rows, positions, labels_at, orows, ocols = (
        torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        for parts in (hidden_rows, hidden_pos, label_pos, out_rows, out_cols)
    )
    return Layout(
        input_ids=ids,
        position_ids=pos,
        attention_mask=~allowed[:, None],
        hidden_rows=rows,
        hidden_positions=positions,
        labels=ids[rows, labels_at],
        out_rows=orows,
        out_cols=ocols,
        num_rollouts=len(p_all),
        shared=True,
    )


def layout_cost(shape: tuple[int, int], flops_per_token: float, attention_width: int) -> float:
    """Forward FLOPs per layer of a ``(B, S)`` layout: ``B * S * (c_lin + 4 * d_attn * S)``.

    Args:
        shape: (B, S) of the layout.
        flops_per_token: ``c_lin``, linear-layer FLOPs per token per layer (2 x its parameters).
        attention_width: ``d_attn`` = attention heads x head dim.
    """
    b, s = shape
    return float(b) * s * (flops_per_token + 4.0 * attention_width * s)


def layout_shapes(
    input_ids: Tensor, prompt_lengths: Tensor, response_lengths: Tensor, pad_multiple: int = 1
) -> dict[str, tuple[int, int]]:
    """``(B, S)`` of the rollout and shared-prefix layouts, without building either."""
    p, r = prompt_lengths.cpu().long(), response_lengths.cpu().long()
    groups = _prompt_groups(input_ids.cpu(), p)
    shared = max(int(p[g[0]]) + int(r[g].sum()) for g in groups)
    return {
        "rollout": (len(p), _round_up(int((p + r).max()), pad_multiple)),
        "shared": (len(groups), _round_up(shared, pad_multiple)),
    }


def choose_layout(
    mode: str,
    input_ids: Tensor,
    prompt_lengths: Tensor,
    response_lengths: Tensor,
    *,
    flops_per_token: float,
    attention_width: int,
    pad_multiple: int = 1,
) -> Layout:
    """The layout ``mode`` asks for: ``'shared_prefix'``, ``'rollout'`` (one row per rollout), or
    ``'auto'``: whichever :func:`layout_cost` rates cheaper (ties: the rollout layout)."""
    if mode not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {mode!r}")
    args = (input_ids, prompt_lengths, response_lengths, pad_multiple)
    if mode == "rollout":
        return rollout_layout(*args)
    if mode == "auto":
        shapes = layout_shapes(*args)
        cost = {k: layout_cost(v, flops_per_token, attention_width) for k, v in shapes.items()}
        if cost["shared"] >= cost["rollout"]:
            return rollout_layout(*args)
    return shared_prefix_layout(*args)
