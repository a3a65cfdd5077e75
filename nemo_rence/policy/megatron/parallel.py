"""Process groups for the Megatron policy: init from torchrun's environment, seeds, teardown.

Ranks are laid out by megatron (``initialize_model_parallel``): with ``world = tp * pp * dp``,
tensor-parallel ranks are adjacent, then data-parallel, then pipeline stages. On CPU the backend
is gloo and ``infra.cpu_compat`` is enabled first; on GPU it is NCCL with one device per local
rank.

Example (under ``torchrun --nproc_per_node 2``)::

    info = init_parallel(tp=2, pp=1, seed=0)
    ...                                   # build models, train
    set_model_parallel(tp=1, pp=2)        # switch layout in the same processes (tests)
    teardown()
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "ParallelInfo",
    "init_parallel",
    "parallel_info",
    "seed_all",
    "set_model_parallel",
    "teardown",
]


@dataclass(frozen=True)
class ParallelInfo:
    """This process's place in the (tp, pp, dp) grid."""

    rank: int
    world_size: int
    tp: int
    pp: int
    dp: int
    tp_rank: int
    pp_rank: int
    dp_rank: int


def parallel_info() -> ParallelInfo:
    """Read the current megatron parallel state."""
    from megatron.core import parallel_state as ps

    return ParallelInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        tp=ps.get_tensor_model_parallel_world_size(),
        pp=ps.get_pipeline_model_parallel_world_size(),
        dp=ps.get_data_parallel_world_size(),
        tp_rank=ps.get_tensor_model_parallel_rank(),
        pp_rank=ps.get_pipeline_model_parallel_rank(),
        dp_rank=ps.get_data_parallel_rank(),
    )


def _init_process_group(backend: str | None, timeout_s: float) -> None:
    if dist.is_initialized():
        return
    on_gpu = torch.cuda.is_available()
    backend = backend or ("nccl" if on_gpu else "gloo")
    timeout = timedelta(seconds=timeout_s)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun / SLURM wrapper
        if on_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timeout)
        return
    # A single process without a launcher: a world of one on a private TCP store.
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)


def set_model_parallel(tp: int = 1, pp: int = 1, *, seed: int = 1234) -> ParallelInfo:
    """(Re)initialise megatron's model-parallel groups and seed every RNG.

    ``world_size`` must be a multiple of ``tp * pp``; the rest is data parallel. Seeds:
    ``torch.manual_seed(seed)`` and megatron's model-parallel RNG tracker (distinct streams per
    TP rank for dropout, like Megatron-LM).
    """
    from megatron.core import parallel_state as ps

    world = dist.get_world_size()
    if tp < 1 or pp < 1 or world % (tp * pp):
        raise ValueError(
            f"world size {world} is not a multiple of tp*pp = {tp}*{pp}; choose sizes whose "
            "product divides the number of processes"
        )
    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    seed_all(seed)
    return parallel_info()


def seed_all(seed: int) -> None:
    """``torch.manual_seed(seed)`` and megatron's model-parallel RNG tracker (needs the groups)."""
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    torch.manual_seed(seed)
    model_parallel_cuda_manual_seed(seed)


def init_parallel(
    tp: int = 1,
    pp: int = 1,
    *,
    seed: int = 1234,
    backend: str | None = None,
    timeout_s: float = 1800.0,
) -> ParallelInfo:
    """Initialise torch.distributed (from torchrun's env, or a world of one) and megatron's groups.

    On CPU this enables ``infra.cpu_compat`` before anything megatron runs.
    """
    if not torch.cuda.is_available():
        from nemo_rence.infra import cpu_compat

        cpu_compat.enable()
    _init_process_group(backend, timeout_s)
    return set_model_parallel(tp, pp, seed=seed)


def teardown() -> None:
    """Destroy megatron's groups and the default process group (idempotent)."""
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
