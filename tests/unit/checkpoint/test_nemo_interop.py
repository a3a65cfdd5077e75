"""NeMo checkpoint interop through the ``convert`` CLI: NeMo 2 dirs and ``.nemo`` archives
round-trip bit-exactly; truncated or mis-shaped checkpoints fail naming the tensor.

The checks run in one worker process (megatron's checkpoint code needs the CPU compat layer,
which is process-wide)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed.workers.ckpt_common import parse
from tests.helpers import torchrun

WORKER = Path(__file__).resolve().parents[2] / "distributed" / "workers" / "ckpt_nemo.py"


@pytest.fixture(scope="module")
def checks(tmp_path_factory) -> list[dict]:
    work = tmp_path_factory.mktemp("nemo")
    return parse(torchrun(WORKER, "interop", str(work), nproc=1))


def _one(checks, name):
    (found,) = [c for c in checks if c["check"] == name]
    return found


@pytest.mark.parametrize(
    ("family", "layout"), [("qwen3_tied", "nemo2"), ("llama3_rope", "nemo2"), ("qwen2", ".nemo")]
)
def test_hf_to_nemo_to_hf_round_trip_is_bit_exact(checks, family, layout):
    (c,) = [c for c in checks if c["check"] == "roundtrip" and c["family"] == family]
    assert c["layout"] == layout
    assert c["rc"] == [0, 0] and c["bit_exact"] and c["config_equal"]
    assert "convert hf-to-nemo:" in c["summary"] and "MiB ->" in c["summary"]


def test_nemo2_checkpoint_without_our_metadata_imports_from_its_model_yaml(checks):
    assert _one(checks, "nemo_yaml_only")["bit_exact"]


def test_truncated_checkpoint_fails_naming_the_tensor(checks):
    err = _one(checks, "truncated")["error"]
    assert err is not None and "module.decoder.layers." in err and "truncated" in err


def test_cli_reports_a_bad_checkpoint_with_exit_code_1_and_writes_nothing(checks):
    c = _one(checks, "truncated_cli")
    assert c["rc"] == 1 and "failed: tensor 'module." in c["out"] and not c["exists"]


def test_truncated_nemo_archive_fails_clearly(checks):
    assert "is not a readable .nemo archive" in _one(checks, "truncated_archive")["error"]


def test_wrong_shape_fails_naming_the_tensor_expected_and_found(checks):
    err = _one(checks, "wrong_shape")["error"]
    assert "linear_fc1.weight" in err and "expected shape (192, 64), found (256, 64)" in err


def test_offline_hf_to_megatron_checkpoint_loads_into_megatron_with_hf_logits(checks):
    c = _one(checks, "offline_ckpt_logits")
    assert c["rc"] == 0 and c["max_abs_diff"] <= 1e-4


def test_loading_into_a_mismatched_model_names_the_tensor_and_shapes(checks):
    err = _one(checks, "model_mismatch")["error"]
    assert "linear_fc2.weight" in err and "(2, 64, 96)" in err and "(2, 64, 128)" in err
