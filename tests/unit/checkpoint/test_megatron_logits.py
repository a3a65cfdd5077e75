"""A megatron model built from an HF checkpoint computes the HF model's logits, and exports
back to the same HF tensors bit for bit (one worker process runs every family once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed.workers.ckpt_common import FAMILIES, parse
from tests.helpers import torchrun

WORKER = Path(__file__).resolve().parents[2] / "distributed" / "workers" / "ckpt_logits.py"
TOL = 1e-4


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    out = torchrun(WORKER, *sorted(FAMILIES), nproc=1)
    return {r["family"]: r for r in parse(out)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_megatron_logits_equal_hf_logits(results, family):
    assert results[family]["max_abs_diff"] <= TOL


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_exported_megatron_weights_are_the_hf_tensors_bit_for_bit(results, family):
    assert results[family]["same_names"]
    assert results[family]["bit_exact"]


def test_llama3_rope_scaling_is_applied_not_ignored(results):
    # Without the llama3 frequency scaling the same weights give clearly different logits
    # (orders of magnitude above the float noise of the matched model).
    r = results["llama3_rope"]
    assert r["unscaled_max_abs_diff"] > 10 * TOL
    assert r["unscaled_max_abs_diff"] > 1000 * r["max_abs_diff"]
