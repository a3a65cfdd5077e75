"""Shared pytest configuration: capability skips and deterministic CPU threading."""

from __future__ import annotations

import os

import pytest

# Deterministic, contention-safe CPU threading for every test process (and its children).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


try:  # CI runs property-based tests with a fixed seed: a red CI is always reproducible.
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:  # hypothesis is a dev extra
    pass


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        # the marker, not item.keywords: keywords also hold directory names (a checkout in a
        # folder named gpu/ skipped every test)
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)
