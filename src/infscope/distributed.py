"""Several processes on one store, with ``torch.distributed`` (launched by ``torchrun``).

Extraction is sharded: rank ``r`` of ``W`` writes shards ``i ≡ r (mod W)`` of the same store
(each shard's numbers depend only on its examples, so the store is byte-identical to a
one-process run, and a rank that died leaves only its missing shards to a rerun). Statistics
gathered over the data — K-FAC covariances, eigenbasis factors, traces, token counts — are
summed over ranks with ``all_reduce``; they equal a one-process run up to floating-point
addition order (the sums are float64). Without an initialised process group everything here is
the one-process identity, so library code calls it unconditionally.
"""

from __future__ import annotations

import os

import torch

__all__ = ["all_reduce_sum", "barrier", "init_from_environment", "world"]


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if not _active():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def init_from_environment(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE`` >
    1): gloo on CPU, NCCL when CUDA is available unless ``backend`` says otherwise. Returns
    whether this process runs distributed. A no-op when already initialised or alone."""
    if _active():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend)
    return True


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over ranks, in place (moved through the backend's device for NCCL)."""
    if not _active():
        return tensor
    if torch.distributed.get_backend() == "nccl" and tensor.device.type != "cuda":
        moved = tensor.cuda()
        torch.distributed.all_reduce(moved)
        tensor.copy_(moved.cpu())
    else:
        torch.distributed.all_reduce(tensor)
    return tensor


def barrier() -> None:
    """Wait for every rank (no-op alone)."""
    if _active():
        torch.distributed.barrier()
