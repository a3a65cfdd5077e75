"""Micro-batch layouts: every token of the shared-prefix layout sees exactly its own rollout's prefix.

A causal transformer with rotary positions computes a token's hidden state from the (position,
token) pairs it may attend to, layer by layer. So the shared-prefix layout gives every rollout
the hidden states of its own row in the rollout layout iff, for every real token, the keys it may
attend to carry exactly the (position, token) pairs of that rollout's prefix, and the query itself
carries the right (position, token). These tests check that characterisation token by token
against the rollouts themselves (not against the layout code), plus the labels and the result
columns, and the cost rule of ``layout='auto'``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_rence.policy.megatron.packing import (
    choose_layout,
    layout_cost,
    layout_shapes,
    rollout_layout,
    shared_prefix_layout,
)


def _batch(prompts: list[list[int]], rollouts: list[tuple[int, list[int]]], pad: int = 3):
    """Right-padded [n, L] ids from (prompt index, response tokens) pairs."""
    rows = [prompts[g] + resp for g, resp in rollouts]
    width = max(len(r) for r in rows) + pad
    ids = torch.full((len(rows), width), 99, dtype=torch.long)  # garbage after each row
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    p = torch.tensor([len(prompts[g]) for g, _ in rollouts])
    r = torch.tensor([len(resp) for _, resp in rollouts])
    return ids, p, r, [prompts[g] + resp for g, resp in rollouts]


def _check_layout(layout, p, r, rows: list[list[int]], pad_multiple: int = 1) -> None:
    """For every scored token: label, result column, and the hidden state that predicts it sees
    exactly its rollout's prefix, and so does every key it sees (the induction over layers).

    "Sees exactly": the keys a position may attend to are one physical position per (position,
    token) pair of the rollout's prefix ``{(s, x_s) : s <= t}``: no pair missing, none extra,
    none twice (a duplicate would be counted twice by the softmax).
    """
    b, s = layout.shape
    assert s % pad_multiple == 0
    mask = layout.attention_mask
    visible = (
        torch.tril(torch.ones(b, s, s, dtype=torch.bool)) if mask is None else ~mask[:, 0]
    )  # [B, S_q, S_k]
    pos, tok = layout.position_ids, layout.input_ids

    def label(row: int, c: int) -> tuple[int, int]:
        return int(pos[row, c]), int(tok[row, c])

    assert len(layout.labels) == int(r.sum())
    seen = set()
    for k in range(len(layout.labels)):
        i, j = int(layout.out_rows[k]), int(layout.out_cols[k])
        seen.add((i, j))
        full = rows[i]
        assert int(layout.labels[k]) == full[int(p[i]) + j]
        row, q = int(layout.hidden_rows[k]), int(layout.hidden_positions[k])
        assert label(row, q) == (int(p[i]) + j - 1, full[int(p[i]) + j - 1])
        todo, done = [q], set()
        while todo:
            c = todo.pop()
            if c in done:
                continue
            done.add(c)
            t = int(pos[row, c])
            keys = visible[row, c].nonzero().squeeze(1).tolist()
            got = sorted(label(row, d) for d in keys)
            assert got == [(u, full[u]) for u in range(t + 1)], (i, j, c)
            todo.extend(keys)
    assert seen == {(i, j) for i in range(len(rows)) for j in range(int(r[i]))}


def test_shared_prefix_layout_worked_example():
    """Two prompts; the first has three responses (one empty), the second one response."""
    ids, p, r, rows = _batch(
        [[11, 12], [21]], [(0, [31, 32, 33]), (0, []), (1, [51, 52]), (0, [41])]
    )
    lay = shared_prefix_layout(ids, p, r)
    assert lay.shared and lay.shape == (2, 6)
    assert lay.input_ids.tolist() == [[11, 12, 31, 32, 33, 41], [21, 51, 52, 0, 0, 0]]
    assert lay.position_ids.tolist() == [[0, 1, 2, 3, 4, 2], [0, 1, 2, 0, 0, 0]]
    # 41 (response of rollout 3) sees the prompt and itself, not 31..33
    assert (~lay.attention_mask[0, 0, 5]).tolist() == [True, True, False, False, False, True]
    # the prompt's last token predicts the first token of both responses of prompt 0
    first = [
        (int(lay.hidden_positions[k]), int(lay.out_rows[k]))
        for k in range(len(lay.labels))
        if int(lay.out_cols[k]) == 0 and int(lay.hidden_rows[k]) == 0
    ]
    assert first == [(1, 0), (1, 3)]
    assert lay.labels.tolist() == [31, 32, 33, 41, 51, 52]
    _check_layout(lay, p, r, rows)


def test_rollout_layout_is_the_padding_contract():
    ids, p, r, rows = _batch([[11, 12], [21]], [(0, [31, 32, 33]), (0, [41]), (1, [51, 52])])
    lay = rollout_layout(ids, p, r, pad_multiple=4)
    assert not lay.shared and lay.attention_mask is None and lay.shape == (3, 8)
    assert lay.input_ids[:, :5].tolist() == ids[:, :5].tolist()
    assert lay.labels.tolist() == [31, 32, 33, 41, 51, 52]
    _check_layout(lay, p, r, rows, pad_multiple=4)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    num_prompts=st.integers(1, 4),
    pad_multiple=st.sampled_from([1, 2, 3]),
)
def test_every_token_sees_exactly_its_own_rollout_prefix(data, num_prompts, pad_multiple):
    tokens = st.integers(0, 7)  # a small vocabulary: equal tokens at equal positions abound
    prompts = [data.draw(st.lists(tokens, min_size=1, max_size=4)) for _ in range(num_prompts)]
    rollouts = data.draw(
        st.lists(
            st.tuples(st.integers(0, num_prompts - 1), st.lists(tokens, max_size=4)),
            min_size=1,
            max_size=7,
        )
    )
    ids, p, r, rows = _batch(prompts, rollouts)
    for lay in (
        shared_prefix_layout(ids, p, r, pad_multiple),
        rollout_layout(ids, p, r, pad_multiple),
    ):
        _check_layout(lay, p, r, rows, pad_multiple)
    shapes = layout_shapes(ids, p, r, pad_multiple)
    assert shapes["shared"] == shared_prefix_layout(ids, p, r, pad_multiple).shape
    assert shapes["rollout"] == rollout_layout(ids, p, r, pad_multiple).shape


def test_rows_share_only_when_their_prompts_are_identical():
    """Same group id is not enough (and not needed): equal prompt tokens decide."""
    ids, p, r, _ = _batch([[5, 6], [5, 7], [5, 6]], [(0, [1]), (1, [2]), (2, [3])])
    lay = shared_prefix_layout(ids, p, r)
    assert lay.shape[0] == 2  # prompts 0 and 2 are the same tokens
    assert lay.input_ids[0, :4].tolist() == [5, 6, 1, 3]


def test_layout_cost_and_auto_choice():
    """cost = B * S * (c_lin + 4 * d_attn * S); auto picks the cheaper layout."""
    assert layout_cost((2, 10), 100.0, 3) == 2 * 10 * (100 + 4 * 3 * 10)
    c_lin, d_attn = 7.08e6, 576  # SmolLM2-135M per layer
    # 8 rollouts of a 91-token prompt with 32-token responses: the prompt dominates
    ids, p, r, _ = _batch([list(range(91))], [(0, [1] * 32)] * 8)
    shapes = layout_shapes(ids, p, r)
    assert shapes == {"rollout": (8, 123), "shared": (1, 91 + 8 * 32)}
    kw = {"flops_per_token": c_lin, "attention_width": d_attn}
    assert choose_layout("auto", ids, p, r, **kw).shared
    # 8 responses of 2000 tokens behind a 10-token prompt: the S^2 attention term dominates
    ids, p, r, _ = _batch([list(range(10))], [(0, [1] * 2000)] * 8, pad=0)
    assert not choose_layout("auto", ids, p, r, **kw).shared
    assert choose_layout("shared_prefix", ids, p, r, **kw).shared
    assert not choose_layout("rollout", ids[:1], p[:1], r[:1], **kw).shared
    with pytest.raises(
        ValueError, match=r"layout must be one of \['auto', 'shared_prefix', 'rollout'\]"
    ):
        choose_layout("on", ids, p, r, **kw)


def test_empty_prompt_is_rejected():
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="at least one prompt token"):
        shared_prefix_layout(ids, torch.tensor([0]), torch.tensor([2]))
