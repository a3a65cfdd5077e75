"""Chunked vocab-parallel token logprobs equal a naive full log-softmax, in value and gradient."""

from __future__ import annotations

import pytest
import torch

from nemo_rence.policy.megatron.logprobs import (
    auto_chunk_size,
    gather_response_logprobs,
    vocab_parallel_token_logprobs,
)
from nemo_rence.policy.megatron.packing import response_positions


def _naive(hidden, weight, labels, tau=1.0, vocab_size=None):
    z = (hidden @ weight.t()) / tau
    if vocab_size is not None:
        z = z[:, :vocab_size]
    return torch.log_softmax(z.double(), dim=-1).gather(1, labels[:, None]).squeeze(1)


def _inputs(m=37, h=16, v=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(m, h, generator=g, requires_grad=True)
    weight = torch.randn(v, h, generator=g, requires_grad=True)
    labels = torch.randint(0, v, (m,), generator=g)
    upstream = torch.randn(m, generator=g)
    return hidden, weight, labels, upstream


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 37, 100])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_match_naive_log_softmax_in_value_and_gradient(chunk_size, temperature):
    hidden, weight, labels, upstream = _inputs()
    ours = vocab_parallel_token_logprobs(
        hidden, weight, labels, temperature=temperature, chunk_size=chunk_size
    )
    gh, gw = torch.autograd.grad((ours * upstream).sum(), (hidden, weight))
    ref = _naive(hidden, weight, labels, temperature).float()
    rh, rw = torch.autograd.grad((ref * upstream).sum(), (hidden, weight))
    assert ours.dtype == torch.float32 and ours.shape == (37,)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gh, rh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, rw, atol=1e-5, rtol=1e-5)


def test_temperature_changes_the_logprobs():
    hidden, weight, labels, _ = _inputs()
    a = vocab_parallel_token_logprobs(hidden, weight, labels, temperature=1.0)
    b = vocab_parallel_token_logprobs(hidden, weight, labels, temperature=2.0)
    assert not torch.allclose(a, b)


def test_padded_vocabulary_rows_are_excluded_from_the_softmax():
    hidden, weight, labels, upstream = _inputs(v=64)
    labels = labels % 50
    ours = vocab_parallel_token_logprobs(hidden, weight, labels, vocab_size=50, chunk_size=7)
    ref = _naive(hidden, weight, labels, vocab_size=50).float()
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    gw = torch.autograd.grad((ours * upstream).sum(), weight)[0]
    assert torch.count_nonzero(gw[50:]) == 0


def test_a_vocabulary_shard_scores_only_its_own_labels():
    """Without a group, a shard with ``vocab_start`` gives the shard-local pieces (no all-reduce)."""
    hidden, weight, labels, _ = _inputs(v=40)
    shard = weight[20:]
    out = vocab_parallel_token_logprobs(hidden, shard, labels, vocab_start=20, chunk_size=9)
    z = hidden @ shard.t()
    lse = torch.logsumexp(z, dim=1)
    owned = labels >= 20
    expected = torch.where(owned, z.gather(1, (labels - 20).clamp(min=0)[:, None]).squeeze(1), 0.0)
    torch.testing.assert_close(out, expected - lse, atol=1e-5, rtol=1e-5)


def test_response_positions_and_gather_follow_the_padding_contract():
    # Row 0: prompt [5, 6], response [7, 8, 9]; row 1: prompt [5], response [4], then padding.
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [5, 4, 0, 0, 0]])
    p, r = torch.tensor([2, 1]), torch.tensor([3, 1])
    rows, pos, cols = response_positions(p, r)
    assert rows.tolist() == [0, 0, 0, 1]
    assert pos.tolist() == [1, 2, 3, 0]
    assert cols.tolist() == [0, 1, 2, 0]
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(5, 2, 8, generator=g)  # [S, B, H]
    weight = torch.randn(11, 8, generator=g)
    out = gather_response_logprobs(hidden, weight, input_ids, p, r, width=4, chunk_size=3)
    full = torch.log_softmax(torch.einsum("sbh,vh->bsv", hidden, weight), dim=-1)
    assert out.shape == (2, 4)
    expected = torch.zeros(2, 4)
    for j in range(3):
        expected[0, j] = full[0, 1 + j, input_ids[0, 2 + j]]
    expected[1, 0] = full[1, 0, 4]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_bad_arguments_raise_clear_errors():
    hidden, weight, labels, _ = _inputs()
    with pytest.raises(ValueError, match="temperature"):
        vocab_parallel_token_logprobs(hidden, weight, labels, temperature=0.0)
    with pytest.raises(ValueError, match=r"\[M, H\]"):
        vocab_parallel_token_logprobs(hidden[:, :3], weight, labels)
    with pytest.raises(ValueError, match="prompt token"):
        response_positions(torch.tensor([0]), torch.tensor([2]))


def test_auto_chunk_size_bounds_the_logits_block():
    c = auto_chunk_size(151_936)
    assert c >= 1 and c * 151_936 * 4 <= 64 * 2**20


def test_layout_logprobs_backward_is_bitwise_reproducible_with_shared_predictors():
    """The shared-prefix layout reads one hidden state for several tokens (the prompt's last
    state predicts the first token of every response); the backward must sum those gradients
    in a fixed order, run after run, with several threads (atomic adds would not)."""
    from nemo_rence.policy.megatron.logprobs import layout_logprobs
    from nemo_rence.policy.megatron.packing import Layout

    g = torch.Generator().manual_seed(0)
    seq, rows, h, v, m = 400, 2, 64, 50, 3000
    hidden = torch.randn(seq, rows, h, generator=g)
    weight = torch.randn(v, h, generator=g)
    idx = torch.randint(0, seq * rows, (m,), generator=g)  # many repeats
    layout = Layout(
        input_ids=torch.zeros(rows, seq, dtype=torch.long),
        position_ids=torch.zeros(rows, seq, dtype=torch.long),
        attention_mask=None,
        hidden_rows=idx % rows,
        hidden_positions=idx // rows,
        labels=torch.randint(0, v, (m,), generator=g),
        out_rows=torch.arange(m) // 100,
        out_cols=torch.arange(m) % 100,
        num_rollouts=m // 100,
        shared=True,
    )
    upstream = torch.randn(m // 100, 100, generator=g)

    def grad() -> torch.Tensor:
        x = hidden.clone().requires_grad_(True)
        (layout_logprobs(x, weight, layout, width=100, chunk_size=512) * upstream).sum().backward()
        assert x.grad is not None
        return x.grad

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = grad()
        assert all(torch.equal(first, grad()) for _ in range(10))
    finally:
        torch.set_num_threads(threads)
    # and it is the gradient: each hidden state gets the sum over the tokens it predicts
    x = hidden.clone().double().requires_grad_(True)
    flat = x.reshape(seq * rows, h)[idx]
    ref = torch.log_softmax(flat @ weight.double().t(), -1).gather(1, layout.labels[:, None])
    (ref.squeeze(1) * upstream.reshape(-1).double()).sum().backward()
    torch.testing.assert_close(first, x.grad.float(), atol=1e-4, rtol=1e-4)
