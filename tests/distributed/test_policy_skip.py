"""MegatronPolicy skips a train step with a non-finite loss or gradient (issue 17, defect 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import torchrun

pytestmark = pytest.mark.distributed

WORKERS = Path(__file__).parent / "workers"


@pytest.fixture(scope="module")
def log() -> str:
    return torchrun(WORKERS / "policy_skip.py", nproc=1)


@pytest.mark.parametrize(
    "name",
    [
        "non_finite_steps_are_skipped_without_touching_weights",
        "max_skipped_steps_in_a_row_stop_with_a_clear_error",
    ],
)
def test_non_finite_train_steps(log, name):
    assert f"CHECK {name} OK" in log, log[-4000:]
