"""The few torch.distributed helpers the run needs, each a no-op without a process group.

Rank 0 decides (prompt batches, checkpoint names, the time budget) and the other ranks follow;
these helpers keep that pattern identical in a single process, where there is nothing to share.
"""

from __future__ import annotations

from typing import Any

__all__ = ["barrier", "broadcast_object", "rank"]


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
