"""The trtllm engine without a GPU: a clear error when the extra is missing, output parsing."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from nemo_rence.rollout.trtllm_engine import (
    TRTLLMConfig,
    TRTLLMEngine,
    _finish_reason,
    _token_logprobs,
)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_llm") is not None, reason="TensorRT-LLM is installed"
)
def test_missing_tensorrt_llm_raises_an_import_error_that_says_how_to_install():
    with pytest.raises(ImportError, match=r"nemo-rence\[gpu\].*rollout.engine=hf"):
        TRTLLMEngine(TRTLLMConfig(model_dir="/nonexistent"))


def test_sampled_token_logprobs_are_read_from_floats_or_per_token_dicts():
    as_floats = SimpleNamespace(token_ids=[5, 7], logprobs=[-0.5, -1.25])
    as_dicts = SimpleNamespace(
        token_ids=[5, 7],
        logprobs=[{5: SimpleNamespace(logprob=-0.5)}, {7: SimpleNamespace(logprob=-1.25), 2: 0}],
    )
    assert _token_logprobs(as_floats) == _token_logprobs(as_dicts) == [-0.5, -1.25]


@pytest.mark.parametrize(
    "finish, stop_reason, expected",
    [("length", None, "length"), ("stop", None, "eos"), ("stop", "</s>", "stop")],
)
def test_finish_reasons_map_to_the_contract(finish, stop_reason, expected):
    out = SimpleNamespace(finish_reason=finish, stop_reason=stop_reason)
    assert _finish_reason(out) == expected


def test_bad_trtllm_config_names_the_field():
    with pytest.raises(ValueError, match="kv_cache_free_gpu_memory_fraction"):
        TRTLLMConfig(model_dir="x", kv_cache_free_gpu_memory_fraction=1.5)
