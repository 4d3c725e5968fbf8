"""Save per-example dynamics scores where ``infscope prune --score NAME=DIR``, ``top``, ``select``
and ``evaluate mislabel`` read them, one folder per score.

The rows follow ``ids`` — your data's ids in your data's order — never the order a shuffled
training loop first recorded the examples in: ``prune`` hands ``train_fn(train_indices, seed)``
positions in the scores' ids, so with scores in data order they are positions in your data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infscope.dynamics.scores import compute_score
from infscope.errors import InputError

#: the scores the pruning benchmarks compare (high EL2N / forgetting = hard; low AUM = hard)
PRUNING_SCORES = ("el2n", "forgetting_events", "aum")


def save_scores(
    sources: Any,
    directory: str | Path,
    ids: Sequence[str],
    names: Sequence[str] = PRUNING_SCORES,
    **options: Any,
) -> dict[str, Path]:
    """Compute each score of ``names`` (:data:`~infscope.dynamics.SCORES`) from ``sources`` (a
    :class:`~infscope.dynamics.DynamicsRecorder`, or several — seeds — averaged) and save it to
    ``directory/<name>``, its rows in ``ids`` order (every id recorded). ``options`` go to every
    score (``normalize="zscore"`` for class-normalised scores). Returns the folders by name."""
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise InputError("ids must be unique: one row per example of your data")
    if not names:
        raise InputError("give at least one score name")
    directory = Path(directory)
    saved = {}
    for name in names:
        saved[name] = compute_score(name, sources, ids=ids, **options).save(directory / name)
    return saved
