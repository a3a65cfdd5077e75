"""The trtllm engine without a GPU: the exact arguments it hands TensorRT-LLM 1.2.0, recorded by a
fake ``tensorrt_llm`` module, plus output parsing and config errors.

The fake has the names the release defines (NVIDIA/TensorRT-LLM at the 1.2 line):

* ``tensorrt_llm.LLM`` / ``tensorrt_llm.SamplingParams`` (``tensorrt_llm/__init__.py``);
* ``tensorrt_llm.llmapi.KvCacheConfig`` (``tensorrt_llm/llmapi/__init__.py``);
* ``tensorrt_llm.llmapi.llm_args.SleepConfig`` and ``ExecutorMemoryType`` (``KV_CACHE``,
  ``MODEL_WEIGHTS_MAIN``, ``MODEL_ENGINE_MAIN``) (``tensorrt_llm/llmapi/llm_args.py``);
* ``tensorrt_llm.sampling_params.LogprobMode`` (``RAW`` default, ``PROCESSED``)
  (``tensorrt_llm/sampling_params.py``);
* the worker extension ``tensorrt_llm.llmapi.rlhf_utils.WorkerExtension`` and its RPCs
  ``update_weights`` / ``sleep`` / ``wakeup`` reached through ``LLM._collective_rpc``.
"""

from __future__ import annotations

import enum
import importlib.util
import sys
import types
from types import SimpleNamespace

import pytest

from nemo_rence.rollout import SamplingParams
from nemo_rence.rollout.trtllm_engine import (
    TRTLLMConfig,
    TRTLLMEngine,
    _finish_reason,
    _token_logprobs,
)


class _Recorder:
    """Records the keyword arguments of every construction (keeps the values as given)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __eq__(self, other):
        return type(self) is type(other) and self.kwargs == other.kwargs


@pytest.fixture
def fake_trtllm(monkeypatch):
    """A recording stand-in for the ``tensorrt_llm`` package, injected into ``sys.modules``."""
    calls: dict[str, list] = {"LLM": [], "rpc": [], "generate": []}

    class ExecutorMemoryType(enum.StrEnum):  # llm_args.py
        KV_CACHE = "kv_cache"
        MODEL_WEIGHTS_MAIN = "model_weights_main"
        MODEL_ENGINE_MAIN = "model_engine_main"

    class LogprobMode(enum.StrEnum):  # sampling_params.py
        RAW = "raw"
        PROCESSED = "processed"

    class SleepConfig(_Recorder):
        pass

    class KvCacheConfig(_Recorder):
        pass

    class FakeSamplingParams(_Recorder):
        pass

    class LLM:
        def __init__(self, **kwargs):
            calls["LLM"].append(kwargs)

        def generate(self, prompts, sampling_params, use_tqdm=True):
            calls["generate"].append((prompts, sampling_params, use_tqdm))
            out = SimpleNamespace(
                token_ids=[7, 2],
                logprobs=[{7: SimpleNamespace(logprob=-0.5)}, {2: SimpleNamespace(logprob=-0.25)}],
                finish_reason="stop",
                stop_reason=None,
            )
            return [SimpleNamespace(outputs=[out]) for _ in prompts]

        def _collective_rpc(self, method, args=()):
            calls["rpc"].append((method, args))

        def shutdown(self):
            calls["rpc"].append(("shutdown", ()))

    root = types.ModuleType("tensorrt_llm")
    root.LLM = LLM
    root.SamplingParams = FakeSamplingParams
    llmapi = types.ModuleType("tensorrt_llm.llmapi")
    llmapi.KvCacheConfig = KvCacheConfig
    llm_args = types.ModuleType("tensorrt_llm.llmapi.llm_args")
    llm_args.SleepConfig = SleepConfig
    llm_args.ExecutorMemoryType = ExecutorMemoryType
    sampling = types.ModuleType("tensorrt_llm.sampling_params")
    sampling.LogprobMode = LogprobMode
    root.llmapi = llmapi
    llmapi.llm_args = llm_args
    root.sampling_params = sampling
    for name, mod in {
        "tensorrt_llm": root,
        "tensorrt_llm.llmapi": llmapi,
        "tensorrt_llm.llmapi.llm_args": llm_args,
        "tensorrt_llm.sampling_params": sampling,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return SimpleNamespace(
        calls=calls,
        KvCacheConfig=KvCacheConfig,
        SleepConfig=SleepConfig,
        SamplingParams=FakeSamplingParams,
        ExecutorMemoryType=ExecutorMemoryType,
        LogprobMode=LogprobMode,
    )


def test_llm_is_built_with_the_ray_orchestrator_worker_extension_and_sleep_config(fake_trtllm):
    TRTLLMEngine(
        TRTLLMConfig(
            model_dir="/m", eos_token_ids=(2, 9), tensor_parallel_size=4, max_batch_size=64
        )
    )
    (kwargs,) = fake_trtllm.calls["LLM"]
    m = fake_trtllm.ExecutorMemoryType
    assert kwargs == {
        "model": "/m",
        "backend": "pytorch",
        "tensor_parallel_size": 4,
        "dtype": "bfloat16",
        # llm_args.py TorchLlmArgs: orchestrator_type: Optional[Literal["rpc", "ray"]]
        "orchestrator_type": "ray",
        "ray_worker_extension_cls": "tensorrt_llm.llmapi.rlhf_utils.WorkerExtension",
        "max_batch_size": 64,
        "skip_tokenizer_init": False,
        "kv_cache_config": fake_trtllm.KvCacheConfig(
            free_gpu_memory_fraction=0.4, enable_block_reuse=True
        ),
        # llm_args.py: sleep_config replaced enable_sleep; the KV cache is dropped on sleep
        "sleep_config": fake_trtllm.SleepConfig(restore_modes={m.KV_CACHE: "NONE"}),
    }
    assert "enable_sleep" not in kwargs


def test_without_colocation_no_sleep_config_is_passed(fake_trtllm):
    TRTLLMEngine(TRTLLMConfig(model_dir="/m", eos_token_ids=(2,), colocate=False))
    assert "sleep_config" not in fake_trtllm.calls["LLM"][0]


def test_sampling_asks_for_the_sampled_tokens_processed_logprobs_and_our_eos_ids(fake_trtllm):
    engine = TRTLLMEngine(TRTLLMConfig(model_dir="/m", eos_token_ids=(2, 9), pad_token_id=0))
    params = SamplingParams(
        n=4, temperature=0.7, top_p=0.9, max_new_tokens=16, stop_token_ids=(11,), seed=5
    )
    out = engine.generate([[5, 6], [8]], params)
    prompts, sp, use_tqdm = fake_trtllm.calls["generate"][0]
    assert prompts == [[5, 6], [8]] and use_tqdm is False
    assert sp.kwargs == {
        "n": 4,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": None,
        "max_tokens": 16,
        "end_id": 2,  # our first EOS id, not the tokenizer's
        "pad_id": 0,
        "stop": None,
        "stop_token_ids": [9, 11],  # the other EOS ids, then the request's stop ids
        "include_stop_str_in_output": True,
        "seed": 5,
        # sampling_params.py: logprobs=0 returns the sampled token's logprob; PROCESSED is
        # log softmax(logits / T) (RAW, the default, ignores the temperature)
        "logprobs": 0,
        "logprobs_mode": fake_trtllm.LogprobMode.PROCESSED,
        "detokenize": True,
    }
    assert out.prompt_index == [0, 1]
    assert out.logprobs == [[-0.5, -0.25]] * 2 and out.finish_reason == ["eos", "eos"]


def test_pad_id_defaults_to_the_first_eos_id_and_stop_strings_need_a_tokenizer(fake_trtllm):
    engine = TRTLLMEngine(TRTLLMConfig(model_dir="/m", eos_token_ids=(3,)))
    sp = engine.sampling_params(SamplingParams(n=2))
    assert sp.kwargs["pad_id"] == 3 and sp.kwargs["stop_token_ids"] is None
    bare = TRTLLMEngine(TRTLLMConfig(model_dir="/m", eos_token_ids=(3,), skip_tokenizer_init=True))
    assert bare.sampling_params(SamplingParams(n=2)).kwargs["detokenize"] is False
    with pytest.raises(ValueError, match="stop strings need a tokenizer"):
        bare.sampling_params(SamplingParams(n=2, stop_strings=("\n\n",)))


def test_sleep_and_wakeup_send_the_executor_memory_tags(fake_trtllm):
    engine = TRTLLMEngine(TRTLLMConfig(model_dir="/m", eos_token_ids=(2,)))
    engine.release_memory()
    engine.reclaim_memory()
    m = fake_trtllm.ExecutorMemoryType
    tags = [m.KV_CACHE, m.MODEL_WEIGHTS_MAIN, m.MODEL_ENGINE_MAIN]
    assert fake_trtllm.calls["rpc"] == [("sleep", (tags,)), ("wakeup", (tags,))]


def test_finalize_sends_update_weights_none_and_sets_the_version(fake_trtllm):
    engine = TRTLLMEngine(TRTLLMConfig(model_dir="/m", eos_token_ids=(2,)))
    engine.finalize_weights(version=3)
    # rlhf_utils.py WorkerExtension.update_weights(ipc_handles=None) ends the reload cycle
    assert fake_trtllm.calls["rpc"] == [("update_weights", (None,))]
    assert engine.version == 3


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_llm") is not None, reason="TensorRT-LLM is installed"
)
def test_missing_tensorrt_llm_raises_an_import_error_that_says_how_to_install():
    with pytest.raises(ImportError, match=r"nemo-rence\[gpu\].*rollout.engine=hf"):
        TRTLLMEngine(TRTLLMConfig(model_dir="/nonexistent", eos_token_ids=(2,)))


def test_sampled_token_logprobs_are_read_from_floats_or_per_token_dicts():
    as_floats = SimpleNamespace(token_ids=[5, 7], logprobs=[-0.5, -1.25])
    as_dicts = SimpleNamespace(
        token_ids=[5, 7],
        logprobs=[{5: SimpleNamespace(logprob=-0.5)}, {7: SimpleNamespace(logprob=-1.25), 2: 0}],
    )
    assert _token_logprobs(as_floats) == _token_logprobs(as_dicts) == [-0.5, -1.25]


@pytest.mark.parametrize(
    "finish, stop_reason, expected",
    [
        ("length", None, "length"),
        ("stop", None, "eos"),  # end_id
        ("stop", 9, "eos"),  # another EOS id, passed as a stop token
        ("stop", 11, "stop"),  # a request stop token
        ("stop", "</s>", "stop"),  # a stop string
    ],
)
def test_finish_reasons_map_to_the_contract(finish, stop_reason, expected):
    out = SimpleNamespace(finish_reason=finish, stop_reason=stop_reason)
    assert _finish_reason(out, (2, 9)) == expected


def test_bad_trtllm_config_names_the_field():
    with pytest.raises(ValueError, match="kv_cache_free_gpu_memory_fraction"):
        TRTLLMConfig(model_dir="x", eos_token_ids=(2,), kv_cache_free_gpu_memory_fraction=1.5)
    with pytest.raises(ValueError, match=r"rollout\.tensor_parallel"):
        TRTLLMConfig(model_dir="x", eos_token_ids=(2,), tensor_parallel_size=0)
    with pytest.raises(ValueError, match="eos_token_ids"):
        TRTLLMConfig(model_dir="x")
