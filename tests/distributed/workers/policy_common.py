"""Shared pieces of the policy worker scripts: a tiny model, a batch of groups, the test loss.

The reference run (``policy_reference.py``, one process, TP=PP=DP=1) writes its results to a
directory; the parallel run (``policy_parallel.py``, two processes) reloads them and checks that
TP=2, PP=2 and DP=2 reproduce them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from nemo_rence.arch import ArchSpec
from nemo_rence.policy.interface import MicroBatch, PolicyBatch, algorithm_loss
from nemo_rence.policy.megatron.optimizer import OptimizerSettings
from nemo_rence.policy.megatron.policy import MegatronPolicyConfig

# Tied embeddings (like SmolLM2 / Qwen2.5-0.5B) exercise the PP embedding-group gradient sync;
# vocab 100 is padded to 128 rows, exercising the padded-row masking.
ARCH = ArchSpec(
    model_type="llama",
    num_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    num_query_groups=2,
    head_dim=8,
    ffn_hidden_size=64,
    vocab_size=100,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)
K = 3  # rollouts per group
GROUPS = 4
ATOL = 1e-5


def config(micro_batch_size: int = 3, layout: str = "rollout") -> MegatronPolicyConfig:
    """The reference runs one row per rollout; ``layout='shared_prefix'`` is checked against it."""
    return MegatronPolicyConfig(
        micro_batch_size=micro_batch_size,
        layout=layout,
        logprob_micro_batch_size=5,
        temperature=0.8,
        logprob_chunk_size=5,
        optimizer=OptimizerSettings(lr=1e-3, weight_decay=0.01, clip_grad=0.05),
        spec="local",
    )


def make_batch() -> PolicyBatch:
    """4 groups of K=3, rows interleaved (groups not contiguous), one empty response."""
    g = torch.Generator().manual_seed(123)
    n, length = GROUPS * K, 16
    group_ids = torch.arange(GROUPS).repeat(K)[torch.randperm(n, generator=g)] + 10
    prompt = torch.randint(2, 6, (GROUPS,), generator=g)
    p = prompt[group_ids - 10]
    r = torch.randint(1, 9, (n,), generator=g)
    r[5] = 0
    ids = torch.randint(0, ARCH.vocab_size, (n, length), generator=g)
    prompts = torch.randint(0, ARCH.vocab_size, (GROUPS, length), generator=g)
    for i in range(n):  # rollouts of a group share their prompt
        ids[i, : p[i]] = prompts[group_ids[i] - 10, : p[i]]
        ids[i, p[i] + r[i] :] = 0
    rewards = torch.tensor([1.0, 0.0, 0.1] * GROUPS)[torch.randperm(n, generator=g)]
    for gid in range(10, 10 + GROUPS):  # every group has a positive and a negative
        rows = (group_ids == gid).nonzero().squeeze(1)
        rewards[rows[0]], rewards[rows[1]] = 1.0, 0.0
    return PolicyBatch(ids, p, r, group_ids, extras={"rewards": rewards})


def with_old_logprobs(batch: PolicyBatch, logprobs: Tensor) -> PolicyBatch:
    """pi_old = the scored logprobs plus fixed noise, so that ratios and KL are non-trivial."""
    g = torch.Generator().manual_seed(7)
    old = (logprobs + 0.05 * torch.randn(logprobs.shape, generator=g)) * batch.response_mask
    extras = batch.extras.replace(old_logprobs=old)
    return PolicyBatch(
        batch.input_ids, batch.prompt_lengths, batch.response_lengths, batch.group_ids, extras
    )


def rows_of_groups(batch: PolicyBatch, groups: list[int]) -> PolicyBatch:
    rows = torch.isin(batch.group_ids, torch.tensor(groups)).nonzero().squeeze(1)
    return PolicyBatch(
        batch.input_ids[rows],
        batch.prompt_lengths[rows],
        batch.response_lengths[rows],
        batch.group_ids[rows],
        batch.extras.select(rows),
        response_width=batch.width,
    )


_RENCE = algorithm_loss("rence", {}, kl_coef=0.05)
_DAPO = algorithm_loss("dapo", {})


def loss_fn(logprobs: Tensor, mb: MicroBatch):
    """ReNCE (group-normalised, listwise) + DAPO (token-normalised): both global normalisers."""
    a, ma = _RENCE(logprobs, mb)
    b, mbm = _DAPO(logprobs, mb)
    return a + b, {**ma, **mbm}


def _reduction(key: str) -> str:  # the two losses' declarations (LossSpec.outputs)
    return "sum" if "sum" in (_RENCE.reduction(key), _DAPO.reduction(key)) else "mean"


loss_fn.reduction = _reduction  # type: ignore[attr-defined]


def assert_close_dicts(
    got: dict[str, Tensor], ref: dict[str, Tensor], what: str, atol=ATOL
) -> None:
    assert list(got) == list(ref) or sorted(got) == sorted(ref), (
        f"{what}: names differ: {sorted(set(got) ^ set(ref))[:6]}"
    )
    for k, v in ref.items():
        torch.testing.assert_close(
            got[k], v, atol=atol, rtol=1e-4, msg=lambda m, k=k: f"{what} {k}: {m}"
        )


def decoder_batch_sizes(policy, fn):
    """(``fn()``, the rows (B of [S, B, H]) the first decoder layer saw in each forward call)."""
    sizes: list[int] = []

    def record(_module, args, kwargs) -> None:
        sizes.append(int((args[0] if args else kwargs["hidden_states"]).shape[1]))

    hook = policy.model.decoder.layers[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        out = fn()
    finally:
        hook.remove()
    return out, sizes


def check(name: str) -> None:
    """Report a passed check (rank 0 prints, so the test can look for it)."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"CHECK {name} OK", flush=True)
