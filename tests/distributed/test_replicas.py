"""Rollouts on every engine replica (issue 15 item 3): under torchrun, DP=2 with one ``hf`` engine
per rank generates the same batch as one process (same prompts, per-prompt seeds, rollouts,
rewards and filter decisions), each rank generating its share; TP=2 has one engine per TP group.

The boxing model of the golden run (``tests/golden/smoke.py``) makes rewards and filter decisions
non-trivial; ``rollout.seed_mode=per_prompt`` makes the rollouts independent of the split.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden.smoke import write_boxing_model
from tests.helpers import torchrun

WORKER = Path(__file__).parent / "workers" / "replicas.py"

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _results(output: str) -> dict[int, dict]:
    rows = [
        json.loads(ln[len("RESULT ") :]) for ln in output.splitlines() if ln.startswith("RESULT ")
    ]
    return {r["rank"]: r for r in rows}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_boxing_model(tmp_path_factory.mktemp("replicas") / "boxing-model")


@pytest.fixture(scope="module")
def single(model_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single")
    return _results(torchrun(WORKER, str(model_dir), str(out), nproc=1, timeout=300))[0]


@pytest.fixture(scope="module")
def dp2(model_dir, tmp_path_factory) -> dict[int, dict]:
    out = tmp_path_factory.mktemp("dp2")
    return _results(torchrun(WORKER, str(model_dir), str(out), nproc=2, timeout=300))


def test_single_process_run_draws_several_prompts_with_per_prompt_seeds(single):
    prompts = [g for draw in single["draws"] for g in draw]
    assert len(prompts) >= 2 and all(g["seed"] is not None for g in prompts)
    assert "rollout/replicas" not in single["metrics"]  # one engine: the metrics of old
    assert single["generated"] == [g["id"] for g in prompts]


def test_every_dp_rank_hosts_an_engine_and_generates_a_share_of_every_draw(dp2):
    assert sorted(dp2) == [0, 1]
    assert all(r["has_engine"] for r in dp2.values())
    draws = dp2[0]["draws"]
    for r in dp2.values():
        assert r["generated"], f"rank {r['rank']} generated nothing"
    # contiguous shares: rank 0 the first half of each draw, rank 1 the rest
    expected0 = [g["id"] for d in draws for g in d[: len(d) // 2]]
    expected1 = [g["id"] for d in draws for g in d[len(d) // 2 :]]
    assert dp2[0]["generated"] == expected0 and dp2[1]["generated"] == expected1


def test_two_replicas_give_the_single_process_batch_exactly(single, dp2):
    """Same prompts, seeds, rollouts, rewards; same filter decisions (batch, cache, mastered)."""
    main = dp2[0]
    assert main["draws"] == single["draws"]
    assert main["batch"] == single["batch"]
    assert main["cache"] == single["cache"]
    assert main["mastered"] == single["mastered"]
    filt = {k: v for k, v in main["metrics"].items() if k.startswith("filter/")}
    assert filt == {k: v for k, v in single["metrics"].items() if k.startswith("filter/")}


def test_metrics_report_the_replicas_and_each_ones_share_of_the_rollouts(dp2):
    m = dp2[0]["metrics"]
    k = 4  # rollout.group_size of the golden overrides
    counts = [len(dp2[r]["generated"]) * k for r in (0, 1)]
    assert m["rollout/replicas"] == 2.0
    for j in (0, 1):
        assert m[f"rollout/replica{j}_share"] == pytest.approx(counts[j] / sum(counts))
    assert m["filter/rollouts"] == sum(counts)


def test_tensor_parallel_two_hosts_one_engine_per_tp_group(model_dir, single, tmp_path):
    results = _results(
        torchrun(
            WORKER, str(model_dir), str(tmp_path), "policy.tensor_parallel=2", nproc=2, timeout=300
        )
    )
    assert results[0]["has_engine"] and not results[1]["has_engine"]
    assert results[1]["generated"] == []
    assert "rollout/replicas" not in results[0]["metrics"]
    assert results[0]["draws"] == single["draws"] and results[0]["batch"] == single["batch"]
    assert results[0]["refit_version"] == 1.0 and results[1]["refit_version"] is None
