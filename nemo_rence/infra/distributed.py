"""The few torch.distributed helpers the run needs, each a no-op without a process group.

Rank 0 decides (prompt batches, checkpoint names, the time budget) and the other ranks follow;
these helpers keep that pattern identical in a single process, where there is nothing to share.
"""

from __future__ import annotations

from typing import Any

__all__ = ["barrier", "broadcast_object", "check_world_size", "rank"]


def _group_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    import torch.distributed as dist

    if _group_size() > 1:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; identity in a single process)."""
    import torch.distributed as dist

    if _group_size() == 1:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_world_size(cfg: Any, world_size: int) -> None:
    """Refuse a parallel layout the processes cannot form, before any process group starts.

    Megatron splits ``world_size`` processes into ``tensor_parallel x pipeline_parallel`` model
    replicas, data-parallel over the rest: the product must divide the world size; so must
    ``rollout.tensor_parallel`` (one engine per that many ranks, :mod:`nemo_rence.rollout.layout`).

    Raises:
        nemo_rence.config.ConfigError: naming the fields and the allowed values.
    """
    from nemo_rence.config import ConfigError

    tp, pp = cfg.policy.tensor_parallel, cfg.policy.pipeline_parallel
    if world_size % (tp * pp) == 0:
        from nemo_rence.rollout.layout import engine_layout_of_config

        engine_layout_of_config(cfg, world_size)  # rollout.tensor_parallel must divide it too
        return
    allowed = [d for d in range(1, world_size + 1) if world_size % d == 0]
    raise ConfigError(
        f"policy.tensor_parallel={tp} x policy.pipeline_parallel={pp} = {tp * pp} processes per "
        f"model replica does not divide the world size {world_size} (the processes started, "
        f"e.g. torchrun --nproc_per_node): allowed products: {allowed}"
    )
