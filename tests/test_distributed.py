"""Without a process group, infscope.distributed is the one-process identity (the torchrun
runs are in tests/cli/test_features_distributed.py)."""

from __future__ import annotations

import torch

from infscope.distributed import all_reduce_sum, barrier, init_from_environment, world


def test_alone_everything_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not init_from_environment()
    assert world() == (0, 1)
    tensor = torch.ones(3)
    assert all_reduce_sum(tensor) is tensor and tensor.tolist() == [1.0, 1.0, 1.0]
    barrier()
