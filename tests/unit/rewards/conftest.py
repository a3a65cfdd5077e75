"""Shared grader pool for the reward tests (starting workers costs about a second)."""

from __future__ import annotations

import pytest

from nemo_rence.rewards.pool import GraderPool


@pytest.fixture(scope="session")
def pool():
    """Two forkserver workers, 2 s hard limit per item."""
    with GraderPool(num_workers=2, timeout_s=2.0) as p:
        yield p
