"""The ``trtllm`` engine: TensorRT-LLM's LLM API (PyTorch backend) with in-place refit (GPU only).

Generation goes through ``tensorrt_llm.LLM.generate`` on prompt token ids. New weights are pushed
into the RUNNING engine every iteration — no engine rebuild — through TensorRT-LLM's RLHF worker
extension (``tensorrt_llm.llmapi.rlhf_utils.WorkerExtension``, Ray orchestrator):

1. each bucket of HF-named CUDA tensors is shared as CUDA IPC handles
   (``torch.multiprocessing.reductions.reduce_tensor``), keyed by the GPU's UUID, and sent with
   ``llm._collective_rpc("update_weights", args=(handles,))``; the workers load them in place;
2. after the last bucket, ``update_weights(None)`` finalises the reload cycle (post-load
   processing, prefix-cache reset): :meth:`TRTLLMEngine.finalize_weights`, which the refit calls
   once per refit.

Colocation with training: ``release_memory()`` / ``reclaim_memory()`` put the engine to sleep
(KV cache and weights released) around the training step and wake it afterwards
(``enable_sleep=True``).

TensorRT-LLM is an optional extra (``pip install nemo-rence[gpu]``), imported lazily here; on a
machine without it the constructor raises an ImportError that says how to install it. This file
is exercised by the ``gpu``-marked tests only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nemo_rence.rollout.interface import Rollouts, SamplingParams

__all__ = ["TRTLLMConfig", "TRTLLMEngine"]

_EXTENSION = "tensorrt_llm.llmapi.rlhf_utils.WorkerExtension"


@dataclass(frozen=True)
class TRTLLMConfig:
    """TensorRT-LLM engine settings."""

    model_dir: str
    """HF-format directory the engine starts from (config, tokenizer, safetensors)."""
    tensor_parallel_size: int = 1
    """TP of the generation engine (independent of the policy's TP)."""
    kv_cache_free_gpu_memory_fraction: float = 0.4
    """Share of free GPU memory for the KV cache; keep room for colocated training."""
    dtype: str = "bfloat16"
    """Engine weight dtype."""
    colocate: bool = True
    """Release KV cache and weights around each training step (enables sleep/wake-up)."""
    sleep_tags: tuple[str, ...] = ("kv_cache", "model")
    """What release_memory() frees."""
    max_batch_size: int = 512
    """Largest number of sequences decoded together."""

    def __post_init__(self) -> None:
        if not 0 < self.kv_cache_free_gpu_memory_fraction < 1:
            raise ValueError(
                "rollout.trtllm.kv_cache_free_gpu_memory_fraction must be in (0, 1), got "
                f"{self.kv_cache_free_gpu_memory_fraction}"
            )
        if self.tensor_parallel_size < 1:
            raise ValueError(
                f"rollout.trtllm.tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}"
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


def _finish_reason(output: Any) -> str:
    reason = getattr(output, "finish_reason", None)
    if reason == "length":
        return "length"
    if getattr(output, "stop_reason", None) is not None:
        return "stop"
    return "eos"


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

        self.config = config
        self._trtllm = trtllm
        self._llm = trtllm.LLM(
            model=config.model_dir,
            backend="pytorch",
            tensor_parallel_size=config.tensor_parallel_size,
            dtype=config.dtype,
            orchestrator_type="ray",
            ray_worker_extension_cls=_EXTENSION,
            enable_sleep=config.colocate,
            max_batch_size=config.max_batch_size,
            kv_cache_config=KvCacheConfig(
                free_gpu_memory_fraction=config.kv_cache_free_gpu_memory_fraction,
                enable_block_reuse=True,
            ),
        )
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Rollouts:
        sp = self._trtllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k or None,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop_strings) or None,
            stop_token_ids=list(params.stop_token_ids) or None,
            seed=params.seed,
            logprobs=0,
        )
        results = self._llm.generate([list(p) for p in prompts], sp, use_tqdm=False)
        rollouts = Rollouts(weight_version=self._version)
        for i, result in enumerate(results):
            for output in result.outputs:
                rollouts.prompt_index.append(i)
                rollouts.token_ids.append(list(output.token_ids))
                rollouts.logprobs.append(_token_logprobs(output))
                rollouts.finish_reason.append(_finish_reason(output))
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
            self._llm._collective_rpc("sleep", args=(list(self.config.sleep_tags),))

    def reclaim_memory(self) -> None:
        """Re-materialise what release_memory freed, before the next refit and generation."""
        if self.config.colocate:
            self._llm._collective_rpc("wakeup", args=(list(self.config.sleep_tags),))

    def shutdown(self) -> None:
        self._llm.shutdown()
