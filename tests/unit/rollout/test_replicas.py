"""Engine replicas without processes: the layout, per-prompt seeds, shares, the hf engine's
per-prompt generators, and the trainer's release / reclaim of a colocated engine."""

from __future__ import annotations

import pytest
import torch

from nemo_rence.errors import ConfigError
from nemo_rence.rollout import Rollouts, SamplingParams
from nemo_rence.rollout.hf_engine import HFEngine
from nemo_rence.rollout.layout import EngineLayout, engine_layout
from nemo_rence.rollout.replicas import (
    Draw,
    ReplicaPool,
    generate_seeded,
    prompt_seed,
    prompt_seeds,
    share_bounds,
)
from tests.helpers import tiny_llama

EOS = 3
PROMPTS = [[5, 9, 11, 40, 7], [8, 2], [60, 61, 62], [12, 13, 14, 15]]


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


# -- layout ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("world", "tp", "pp", "engine", "etp", "hosts", "engine_tp"),
    [
        (1, 1, 1, "hf", 1, (0,), 1),
        (2, 1, 1, "hf", 1, (0, 1), 1),  # DP=2: an engine per rank
        (2, 2, 1, "hf", 1, (0,), 1),  # TP=2: one engine per TP group
        (8, 2, 1, "hf", 1, (0, 2, 4, 6), 1),
        (8, 2, 2, "hf", 1, (0, 2), 1),  # megatron order tp-dp-pp: replica d's first rank is 2d
        (8, 1, 1, "vllm", 1, tuple(range(8)), 1),
        (8, 2, 1, "trtllm", 4, (0, 4), 4),  # engine TP independent of the policy's
        (64, 8, 2, "trtllm", 8, tuple(range(0, 64, 8)), 8),
    ],
)
def test_engine_layout_places_one_engine_per_replica_or_engine_tp_group(
    world, tp, pp, engine, etp, hosts, engine_tp
):
    layout = engine_layout(world, policy_tp=tp, policy_pp=pp, engine=engine, engine_tp=etp)
    assert layout.hosts == hosts and layout.engine_tp == engine_tp
    assert layout.replicas == len(hosts)
    assert [layout.replica_of(h) for h in hosts] == list(range(len(hosts)))


def test_megatron_rank_order_puts_each_hf_host_on_stage_0_tp_rank_0():
    tp, pp, dp = 2, 2, 2
    layout = engine_layout(tp * pp * dp, policy_tp=tp, policy_pp=pp, engine="hf", engine_tp=1)
    first_ranks = {t + tp * (d + dp * p) for t in (0,) for d in range(dp) for p in (0,)}
    assert set(layout.hosts) == first_ranks


def test_an_engine_tp_that_does_not_divide_the_world_is_a_config_error():
    with pytest.raises(
        ConfigError, match=r"rollout.tensor_parallel=3 .*allowed values: \[1, 2, 4, 8\]"
    ):
        engine_layout(8, policy_tp=1, policy_pp=1, engine="vllm", engine_tp=3)


def test_engines_per_node_counts_the_hosts_of_one_node():
    layout = engine_layout(16, policy_tp=1, policy_pp=1, engine="trtllm", engine_tp=2)
    assert layout.engines_per_node(8) == 4


# -- seeds and shares ------------------------------------------------------------------------
def test_a_prompt_seed_depends_on_the_draw_seed_and_prompt_only():
    assert prompt_seeds(7, ["a", "b"]) == [prompt_seed(7, "a"), prompt_seed(7, "b")]
    assert prompt_seeds(7, ["b", "a"])[1] == prompt_seed(7, "a")  # not on the position
    assert prompt_seed(7, "a") != prompt_seed(8, "a") and prompt_seed(7, "a") != prompt_seed(7, "b")
    assert 0 <= prompt_seed(123, "x") < 2**31


@pytest.mark.parametrize(("n", "r"), [(5, 2), (2, 3), (8, 8), (7, 3)])
def test_shares_are_contiguous_cover_the_draw_and_differ_by_at_most_one(n, r):
    bounds = [share_bounds(n, r, j) for j in range(r)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(bounds[j][1] == bounds[j + 1][0] for j in range(r - 1))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_a_single_engine_pool_generates_locally_and_logs_no_replica_metrics():
    pool = ReplicaPool(EngineLayout.single())
    draw = Draw(["p", "q"], [[1], [2]], SamplingParams(n=3), None)
    assert pool.run(draw, lambda d: [x.upper() for x in d.prompts]) == ["P", "Q"]
    assert pool.rollouts == [6] and pool.metrics() == {}


# -- per-prompt seeded generation ------------------------------------------------------------
def test_per_prompt_seeded_rollouts_do_not_depend_on_the_other_prompts_of_the_batch(model):
    engine = HFEngine(model, [EOS])
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=5)
    seeds = prompt_seeds(5, range(len(PROMPTS)))
    together = engine.generate(PROMPTS, params, seeds=seeds)
    halves = [
        engine.generate(PROMPTS[:2], params, seeds=seeds[:2]),
        engine.generate(PROMPTS[2:], params, seeds=seeds[2:]),
    ]
    apart = [t for h in halves for t in h.token_ids]
    assert together.token_ids == apart
    lp_apart = [lp for h in halves for row in h.logprobs for lp in row]
    lp_together = [lp for row in together.logprobs for lp in row]
    assert lp_together == pytest.approx(lp_apart, abs=1e-5)
    assert len({tuple(t) for t in together.token_ids[:4]}) > 1  # still K distinct samples


def test_per_call_seeding_depends_on_the_batch_so_per_prompt_is_needed(model):
    engine = HFEngine(model, [EOS])
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=5)
    together = engine.generate(PROMPTS, params)
    apart = engine.generate(PROMPTS[2:], params)
    assert together.token_ids[8:] != apart.token_ids


def test_engines_without_per_prompt_generators_get_one_call_per_prompt():
    calls: list[tuple[list, int | None]] = []

    class OneSeed:
        version = 3

        def generate(self, prompts, params):
            calls.append((list(prompts), params.seed))
            return Rollouts(
                prompt_index=[0] * params.n,
                token_ids=[[params.seed, j] for j in range(params.n)],
                logprobs=[[-1.0, -1.0]] * params.n,
                finish_reason=["eos"] * params.n,
                weight_version=3,
            )

    out = generate_seeded(OneSeed(), [[1], [2]], SamplingParams(n=2, seed=9), [11, 22])  # type: ignore[arg-type]
    assert calls == [([[1]], 11), ([[2]], 22)]
    assert out.prompt_index == [0, 0, 1, 1]
    assert out.token_ids == [[11, 0], [11, 1], [22, 0], [22, 1]] and out.weight_version == 3


def test_per_prompt_uniforms_follow_each_prompts_own_generator():
    from nemo_rence.rollout.hf_engine import _per_prompt_uniforms

    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    u = _per_prompt_uniforms(torch.tensor([0, 0, 1]), gens)
    ref0 = torch.rand(2, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref1 = torch.rand(1, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(u, torch.cat([ref0, ref1]))


def test_the_start_up_check_refuses_an_engine_tp_the_ranks_cannot_form():
    from nemo_rence.config import compose
    from nemo_rence.infra.distributed import check_world_size

    cfg = compose(["model=tiny", "rollout.engine=vllm", "rollout.tensor_parallel=4"])
    check_world_size(cfg, 8)
    with pytest.raises(
        ConfigError, match=r"rollout.tensor_parallel=4 does not divide the world size 2"
    ):
        check_world_size(cfg, 2)
