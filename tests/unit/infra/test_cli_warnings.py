"""The CLI hides megatron-core's start-up warnings about absent CUDA extensions on CPU only."""

from __future__ import annotations

import warnings

import pytest

from nemo_rence import cli


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(cli.sys, "warnoptions", [])
    monkeypatch.setattr(cli.os.path, "exists", lambda path: False)


def test_known_noise_is_hidden_and_other_warnings_are_not(no_gpu):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli.quiet_known_warnings()
        warnings.warn(
            "Apex is not installed. Falling back to Torch Norm", UserWarning, stacklevel=1
        )
        warnings.warn(
            "full scope is deprecated. Use empty cuda_graph_scope", UserWarning, stacklevel=1
        )
        warnings.warn("something the user must see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something the user must see"]


@pytest.mark.parametrize("where", ["user_filters", "nvidia_device"])
def test_nothing_is_hidden_with_user_filters_or_an_nvidia_device(no_gpu, monkeypatch, where):
    if where == "user_filters":
        monkeypatch.setattr(cli.sys, "warnoptions", ["default"])
    else:
        monkeypatch.setattr(cli.os.path, "exists", lambda path: path == "/dev/nvidiactl")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli.quiet_known_warnings()
        warnings.warn(
            "Apex is not installed. Falling back to Torch Norm", UserWarning, stacklevel=1
        )
    assert len(seen) == 1
