"""Featurize a fixed tiny dataset into a store: run as a subprocess by test_featurize.py.

Usage: ``python resume_worker.py ROOT [WORKER NUM_WORKERS]``. With ``INFSCOPE_TEST_SLOW=1`` every
example access sleeps, so the parent can kill the process between two shards. Importable too:
the tests build the same extractor and data in-process from :func:`build_extractor` and
:func:`build_data`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infscope.data import ExampleSet
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask

N_EXAMPLES = 40
SHARD_SIZE = 8
BATCH_SIZE = 4
CHECKPOINT = "ckpt"
LEARNING_RATE = 0.1
SLOW_ENV = "INFSCOPE_TEST_SLOW"
SLEEP_S = 0.2


class SlowSequence(Sequence):
    """A sequence whose item access sleeps (so a run takes long enough to be killed mid-way)."""

    def __init__(self, items: Sequence[Any], delay: float) -> None:
        self.items = items
        self.delay = delay

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        time.sleep(self.delay)
        return self.items[index]


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def build_extractor(
    dim: int = 32, seed: int = 0, kind: str = "kronecker", model: nn.Module | None = None
) -> GradientExtractor:
    return GradientExtractor(
        model if model is not None else build_model(),
        ClassificationTask(),
        ProjectionConfig(kind=kind, dim=dim, seed=seed),
    )


def build_examples(n: int = N_EXAMPLES) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=generator)
    y = torch.randint(0, 3, (n,), generator=generator)
    return [(x[i], y[i]) for i in range(n)]


def build_ids(n: int = N_EXAMPLES) -> tuple[str, ...]:
    return tuple(f"ex-{i:02d}" for i in range(n))


def build_data(slow: bool = False) -> ExampleSet:
    examples: Sequence[Any] = build_examples()
    if slow:
        examples = SlowSequence(examples, SLEEP_S)
    return ExampleSet(examples, build_ids())


def run(
    root: str | Path,
    *,
    slow: bool = False,
    worker: int = 0,
    num_workers: int = 1,
    **kwargs: Any,
) -> FeatureStore:
    """One featurize call with the fixed settings (``kwargs`` override them)."""
    settings = dict(
        shard_size=SHARD_SIZE,
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        progress=False,
    )
    settings.update(kwargs)
    return featurize(
        build_extractor(),
        build_data(slow),
        root,
        CHECKPOINT,
        worker=worker,
        num_workers=num_workers,
        **settings,
    )


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)  # as in the test process (tests/conftest.py)
    root = argv[1]
    worker, num_workers = (int(argv[2]), int(argv[3])) if len(argv) > 3 else (0, 1)
    run(root, slow=os.environ.get(SLOW_ENV) == "1", worker=worker, num_workers=num_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
