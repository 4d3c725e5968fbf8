"""A data set through the extractor, batch by batch: the one model-pass loop.

Every pass over the data — writing a feature store, gathering K-FAC covariances, fitting an
eigenbasis — collates a batch, runs one forward/backward pass (:meth:`GradientExtractor.capture
<infscope.gradients.extractor.GradientExtractor.capture>`) and, when a loss is not finite,
names the examples by id. :func:`model_pass` does that once for all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from infscope.data import ExampleSet
from infscope.errors import InputError, NonFiniteError
from infscope.gradients.extractor import CapturedBatch, GradientExtractor

__all__ = ["PassBatch", "model_pass", "per_example_features", "sampling_generator"]


def sampling_generator(seed: int, first: int) -> torch.Generator:
    """The CPU generator for the sampled targets of the batch starting at example ``first``:
    fixed by ``(seed, first)``, so a resumed run or another worker draws the same targets."""
    state = np.random.SeedSequence([int(seed), int(first)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass(frozen=True)
class PassBatch:
    """Examples ``[first, last)`` of the data and what their pass captured."""

    first: int
    last: int
    captured: CapturedBatch


def model_pass(
    extractor: GradientExtractor,
    data: ExampleSet,
    gradient: str = "loss",
    *,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 32,
    sample_seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[PassBatch]:
    """Batches of ``batch_size`` examples of ``data[start:stop]`` through the extractor.

    ``gradient="fisher"`` draws each batch's targets from :func:`sampling_generator` (by the
    batch's position, so resumed runs and other workers draw the same ones). With
    ``world_size > 1`` this process takes batch ``b`` of the range when ``b % world_size ==
    rank``. A non-finite loss is a :class:`~infscope.errors.NonFiniteError` naming the examples'
    ids; any other :class:`~infscope.errors.InputError` names the batch's ids.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    stop = len(data) if stop is None else stop
    for index, first in enumerate(range(start, stop, batch_size)):
        if index % world_size != rank:
            continue
        last = min(first + batch_size, stop)
        generator = sampling_generator(sample_seed, first) if gradient == "fisher" else None
        try:
            batch = extractor.task.collate([data[i] for i in range(first, last)])
            captured = extractor.capture(batch, gradient, generator)
        except NonFiniteError as err:
            ids = [data.ids[first + p] for p in err.positions]
            raise NonFiniteError(str(err), [first + p for p in err.positions], ids) from None
        except InputError as err:  # positions in a batch mean nothing to the user
            ids = ", ".join(data.ids[first : min(last, first + 5)])
            more = " ..." if last - first > 5 else ""
            raise InputError(
                f"{err} (in the batch of examples {first}..{last - 1}: ids {ids}{more})"
            ) from None
        yield PassBatch(first, last, captured)


def per_example_features(
    extractor: GradientExtractor,
    examples: Sequence[Any],
    batch_size: int = 32,
    gradient: str = "loss",
    sample_seed: int = 0,
) -> torch.Tensor:
    """Features of an in-memory list of examples (for small sets; use a store for anything big)."""
    if len(examples) == 0:
        raise InputError("empty dataset: no examples to extract features from")
    if extractor.projector.needs_weights:
        extractor.bind_weights()
    blocks = [
        extractor.features(
            extractor.task.collate(examples[i : i + batch_size]),
            gradient,
            sampling_generator(sample_seed, i) if gradient == "fisher" else None,
        )
        for i in range(0, len(examples), batch_size)
    ]
    return torch.cat(blocks)
