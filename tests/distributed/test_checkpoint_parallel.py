"""Checkpoints across tensor and pipeline parallelism (2 processes, gloo on CPU).

One tiny Qwen2 model with tied embeddings (q/k/v bias, vocab padding, the embedding copy on the
last pipeline stage) goes HF -> megatron at TP=2 and at PP=2 via ``checkpoint.hf`` (tp_shard and
PP layer offsets), is saved as distributed checkpoints, and is reloaded at the other layouts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed.workers.ckpt_common import parse
from tests.helpers import torchrun

pytestmark = pytest.mark.distributed

WORKERS = Path(__file__).resolve().parent / "workers"
FAMILY = "qwen2_tied"
TOL = 1e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[dict]]:
    d = tmp_path_factory.mktemp("ckpt")
    tp2, pp2, hf = str(d / "tp2"), str(d / "pp2"), str(d / "hf_from_tp2")
    parallel = WORKERS / "ckpt_parallel.py"
    return {
        "tp2": parse(torchrun(parallel, FAMILY, "2", "1", tp2, nproc=2)),
        "pp2": parse(torchrun(parallel, FAMILY, "1", "2", pp2, tp2, nproc=2)),
        "tp1": parse(torchrun(parallel, FAMILY, "1", "1", "-", tp2, pp2, nproc=1)),
        "export": parse(torchrun(WORKERS / "ckpt_nemo.py", "export", tp2, hf, FAMILY, nproc=1)),
        "dirs": [{"tp2": tp2, "pp2": pp2}],
    }


def _results(run: list[dict], what: str) -> list[dict]:
    found = [r for r in run if r.get("what") == what]
    assert found, f"no {what!r} result in {run}"
    return found


def test_tp2_model_loaded_via_tp_shard_gives_the_hf_logits(runs):
    for r in _results(runs["tp2"], "from_hf"):
        assert r["max_abs_diff"] <= TOL


def test_tp2_export_gathers_every_hf_tensor_bit_exactly(runs):
    for r in _results(runs["tp2"], "from_hf"):
        assert r["bit_exact"] and r["exported"] == 26  # tied: no lm_head.weight


def test_pp2_stages_load_their_layers_and_the_last_stage_gives_the_hf_logits(runs):
    by_stage = {r["pp_rank"]: r for r in _results(runs["pp2"], "from_hf")}
    assert by_stage[1]["max_abs_diff"] <= TOL
    assert all(r["bit_exact"] for r in by_stage.values())
    # Stage 0: embedding + layer 0; stage 1: layer 1 + final norm (+ the tied copy, dropped).
    assert by_stage[0]["exported"] + by_stage[1]["exported"] == 26
    assert [by_stage[s]["layers"] for s in (0, 1)] == [[0], [1]]
    assert [by_stage[s]["megatron_offset"] for s in (0, 1)] == [0, 1]


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
def test_per_rank_optimizer_state_round_trips_at_the_same_layout(runs, layout):
    assert all(r["equal"] for r in _results(runs[layout], "optimizer_roundtrip"))


def test_tp2_checkpoint_reloads_at_tp1_with_equal_logits(runs):
    (r,) = _results(runs["tp1"], f"load:{runs['dirs'][0]['tp2']}")
    assert r["max_abs_diff"] <= TOL and r["bit_exact"]


def test_pp2_checkpoint_reloads_at_pp1_with_equal_logits(runs):
    (r,) = _results(runs["tp1"], f"load:{runs['dirs'][0]['pp2']}")
    assert r["max_abs_diff"] <= TOL and r["bit_exact"]


def test_tp2_checkpoint_reloads_at_pp2(runs):
    results = _results(runs["pp2"], f"load:{runs['dirs'][0]['tp2']}")
    assert all(r["bit_exact"] for r in results)
    (diff,) = [r["max_abs_diff"] for r in results if "max_abs_diff" in r]  # last stage only
    assert diff <= TOL


def test_per_rank_optimizer_state_of_another_layout_is_refused_naming_both(runs):
    (r,) = _results(runs["tp1"], f"optimizer:{runs['dirs'][0]['tp2']}")
    assert "'tp': 2" in r["error"] and "'tp': 1" in r["error"]


def test_megatron_to_hf_of_a_tp2_checkpoint_is_bit_exact(runs):
    (r,) = [r for r in runs["export"] if r["check"] == "export"]
    assert r["rc"] == 0 and r["bit_exact"] and "convert megatron-to-hf: 26 tensors" in r["out"]
