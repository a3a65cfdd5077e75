"""The ``trtllm`` engine: TensorRT-LLM's LLM API (PyTorch backend) with in-place refit (GPU only).

Written against TensorRT-LLM 1.2.0 (``containers/versions.env``); the argument names below are
the release's own, from its sources (paths inside the NVIDIA/TensorRT-LLM repository):

* ``LLM(...)`` (``tensorrt_llm/llmapi/llm_args.py``, ``TorchLlmArgs``; unknown fields are
  rejected): ``orchestrator_type="ray"`` (Ray instead of MPI workers),
  ``ray_worker_extension_cls="tensorrt_llm.llmapi.rlhf_utils.WorkerExtension"`` (adds the
  ``update_weights`` RPC), ``sleep_config=SleepConfig(restore_modes={KV_CACHE: "NONE"})``
  (enables the ``sleep`` / ``wakeup`` RPCs; the KV cache is discarded, weights are kept in host
  memory: the colocated training step runs in between), ``tensor_parallel_size`` from
  ``rollout.tensor_parallel``, ``kv_cache_config=KvCacheConfig(free_gpu_memory_fraction, ...)``,
  ``skip_tokenizer_init`` for model directories without a tokenizer.
* ``SamplingParams(...)`` (``tensorrt_llm/sampling_params.py``): ``logprobs=0`` with
  ``logprobs_mode=LogprobMode.PROCESSED`` returns the SAMPLED token's logprob of the distribution
  it was sampled from, i.e. ``log softmax(logits / T)`` (and of the truncated distribution under
  top-k / top-p, as vLLM's ``processed_logprobs``); the default ``LogprobMode.RAW`` would return
  ``log softmax(logits)``, the wrong distribution whenever ``T != 1``. ``end_id`` is the model's
  first EOS id (ours, from ``generation_config.json``: never the tokenizer's guess) and the other
  EOS ids are ``stop_token_ids`` (a response ending on one of them reports finish reason 'eos').

Refit: new weights are pushed into the RUNNING engine every iteration, no rebuild, through the
worker extension (``tensorrt_llm/llmapi/rlhf_utils.py``, ``WorkerExtension.update_weights``):

1. each bucket of HF-named CUDA tensors is shared as CUDA IPC handles
   (``torch.multiprocessing.reductions.reduce_tensor``), keyed by the GPU's UUID, and sent with
   ``llm._collective_rpc("update_weights", args=(handles,))``; the workers load them in place;
2. after the last bucket, ``update_weights(None)`` finalises the reload cycle (post-load
   processing, prefix-cache reset): :meth:`TRTLLMEngine.finalize_weights`, which the refit calls
   once per refit.

Colocation with training: ``release_memory()`` / ``reclaim_memory()`` send the ``sleep`` /
``wakeup`` RPCs with the ``ExecutorMemoryType`` tags of ``TRTLLMConfig.sleep_tags`` around the
training step.

TensorRT-LLM is an optional extra (``pip install nemo-rence[gpu]``), imported lazily here; on a
machine without it the constructor raises an ImportError that says how to install it. The CPU
tests drive this file against a recording fake ``tensorrt_llm`` module; the ``gpu``-marked test
and ``containers/acceptance.sh`` run it for real.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nemo_rence.rollout.interface import Rollouts, SamplingParams

__all__ = ["TRTLLMConfig", "TRTLLMEngine"]

WORKER_EXTENSION = "tensorrt_llm.llmapi.rlhf_utils.WorkerExtension"
"""``ray_worker_extension_cls``: TensorRT-LLM's RLHF worker extension (``update_weights``)."""


@dataclass(frozen=True)
class TRTLLMConfig:
    """TensorRT-LLM engine settings (one engine per rollout replica)."""

    model_dir: str
    """HF-format directory the engine starts from (config, safetensors; tokenizer optional)."""
    eos_token_ids: tuple[int, ...] = ()
    """The model's EOS ids (``build.resolve_eos_ids``): the first is ``end_id``, the rest stop
    tokens. Required: the engine never guesses them from a tokenizer."""
    pad_token_id: int | None = None
    """``pad_id`` of the sampling parameters (default: the first EOS id)."""
    tensor_parallel_size: int = 1
    """TP of the generation engine (``rollout.tensor_parallel``; independent of the policy's)."""
    kv_cache_free_gpu_memory_fraction: float = 0.4
    """Share of free GPU memory for the KV cache; keep room for colocated training."""
    dtype: str = "bfloat16"
    """Engine weight dtype."""
    colocate: bool = True
    """Release KV cache and weights around each training step (sleep / wakeup RPCs)."""
    sleep_tags: tuple[str, ...] = ("KV_CACHE", "MODEL_WEIGHTS_MAIN", "MODEL_ENGINE_MAIN")
    """``ExecutorMemoryType`` members (``tensorrt_llm/llmapi/llm_args.py``) that
    release_memory() frees and reclaim_memory() re-materialises."""
    max_batch_size: int = 512
    """Largest number of sequences decoded together."""
    skip_tokenizer_init: bool = False
    """Token ids in and out only (model directories without a tokenizer; no stop strings)."""

    def __post_init__(self) -> None:
        if not 0 < self.kv_cache_free_gpu_memory_fraction < 1:
            raise ValueError(
                "rollout.trtllm.kv_cache_free_gpu_memory_fraction must be in (0, 1), got "
                f"{self.kv_cache_free_gpu_memory_fraction}"
            )
        if self.tensor_parallel_size < 1:
            raise ValueError(
                f"rollout.tensor_parallel must be >= 1, got {self.tensor_parallel_size}"
            )
        if not self.eos_token_ids:
            raise ValueError(
                "TRTLLMConfig.eos_token_ids is empty: pass the model's EOS ids "
                "(nemo_rence.build.resolve_eos_ids)"
            )


def _import_trtllm() -> Any:
    try:
        import tensorrt_llm
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ImportError(
            "the 'trtllm' rollout engine needs TensorRT-LLM and a CUDA GPU: "
            "pip install 'nemo-rence[gpu]' (inside an NGC PyTorch container), "
            "or choose rollout.engine=hf"
        ) from err
    return tensorrt_llm


def _finish_reason(output: Any, eos_ids: Sequence[int] = ()) -> str:
    """'length' | 'eos' (end_id or another EOS id) | 'stop' (a stop string or stop token)."""
    reason = getattr(output, "finish_reason", None)
    if reason == "length":
        return "length"
    stop = getattr(output, "stop_reason", None)
    if stop is None or stop in eos_ids:
        return "eos"
    return "stop"


def _token_logprobs(output: Any) -> list[float]:
    """The sampled tokens' logprobs, whether returned as floats or as per-token dicts."""
    out: list[float] = []
    for tok, lp in zip(output.token_ids, output.logprobs or [], strict=False):
        if isinstance(lp, dict):
            entry: Any = lp[tok]
            out.append(float(entry.logprob if hasattr(entry, "logprob") else entry))
        else:
            out.append(float(lp))
    return out


class TRTLLMEngine:
    """GenerationEngine on TensorRT-LLM (see the module docstring)."""

    def __init__(self, config: TRTLLMConfig) -> None:
        trtllm = _import_trtllm()
        from tensorrt_llm.llmapi import KvCacheConfig
        from tensorrt_llm.llmapi.llm_args import ExecutorMemoryType, SleepConfig
        from tensorrt_llm.sampling_params import LogprobMode

        self.config = config
        self._trtllm = trtllm
        self._logprob_mode = LogprobMode.PROCESSED
        self._sleep_tags = [getattr(ExecutorMemoryType, tag) for tag in config.sleep_tags]
        kwargs: dict[str, Any] = {
            "model": config.model_dir,
            "backend": "pytorch",
            "tensor_parallel_size": config.tensor_parallel_size,
            "dtype": config.dtype,
            "orchestrator_type": "ray",
            "ray_worker_extension_cls": WORKER_EXTENSION,
            "max_batch_size": config.max_batch_size,
            "skip_tokenizer_init": config.skip_tokenizer_init,
            "kv_cache_config": KvCacheConfig(
                free_gpu_memory_fraction=config.kv_cache_free_gpu_memory_fraction,
                enable_block_reuse=True,
            ),
        }
        if config.colocate:
            # Restore modes per tag: the KV cache is dropped ("NONE"); the weights keep the
            # default (a host copy), so a wake-up without a refit still has them.
            kwargs["sleep_config"] = SleepConfig(
                restore_modes={ExecutorMemoryType.KV_CACHE: "NONE"}
            )
        self._llm = trtllm.LLM(**kwargs)
        self._version = 0

    def sampling_params(self, params: SamplingParams) -> Any:
        """TensorRT-LLM ``SamplingParams`` for ``params`` (see the module docstring)."""
        if params.stop_strings and self.config.skip_tokenizer_init:
            raise ValueError(
                "stop strings need a tokenizer: the trtllm engine runs with "
                "skip_tokenizer_init=True (model directory without a tokenizer)"
            )
        eos = list(self.config.eos_token_ids)
        stop_ids = [*eos[1:], *params.stop_token_ids]
        pad = self.config.pad_token_id
        return self._trtllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k or None,
            max_tokens=params.max_new_tokens,
            end_id=eos[0],
            pad_id=eos[0] if pad is None else pad,
            stop=list(params.stop_strings) or None,
            stop_token_ids=stop_ids or None,
            include_stop_str_in_output=True,
            seed=params.seed,
            logprobs=0,
            logprobs_mode=self._logprob_mode,
            detokenize=not self.config.skip_tokenizer_init,
        )

    @property
    def version(self) -> int:
        return self._version

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Rollouts:
        sp = self.sampling_params(params)
        results = self._llm.generate([list(p) for p in prompts], sp, use_tqdm=False)
        rollouts = Rollouts(weight_version=self._version)
        for i, result in enumerate(results):
            for output in result.outputs:
                rollouts.prompt_index.append(i)
                rollouts.token_ids.append(list(output.token_ids))
                rollouts.logprobs.append(_token_logprobs(output))
                rollouts.finish_reason.append(_finish_reason(output, self.config.eos_token_ids))
        return rollouts

    def update_weights(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int
    ) -> int:
        """Send one bucket of CUDA tensors by IPC handle (the refit calls finalize_weights last)."""
        from tensorrt_llm._torch.utils import get_device_uuid
        from torch.multiprocessing.reductions import reduce_tensor

        device = torch.cuda.current_device()
        handles = []
        moved = 0
        keep_alive = []  # the tensors must outlive the RPC that maps their handles
        for name, tensor in named_tensors:
            t = tensor.detach().to(device=f"cuda:{device}").contiguous()
            keep_alive.append(t)
            handles.append((name, reduce_tensor(t)))
            moved += t.numel() * t.element_size()
        self._llm._collective_rpc("update_weights", args=({get_device_uuid(device): handles},))
        del keep_alive
        return moved

    def finalize_weights(self, version: int) -> None:
        """End the reload cycle: post-load processing, prefix-cache reset, new version."""
        self._llm._collective_rpc("update_weights", args=(None,))
        self._version = int(version)

    def release_memory(self) -> None:
        """Free the engine's GPU memory (``sleep_tags``) before the training step."""
        if self.config.colocate:
            self._llm._collective_rpc("sleep", args=(self._sleep_tags,))

    def reclaim_memory(self) -> None:
        """Re-materialise what release_memory freed, before the next refit and generation."""
        if self.config.colocate:
            self._llm._collective_rpc("wakeup", args=(self._sleep_tags,))

    def shutdown(self) -> None:
        self._llm.shutdown()
