"""Linear datamodeling score (LDS): do the scores predict what retraining on subsets does?

For random subsets ``S`` of the training data (each keeping a fraction ``alpha``), the scores
predict query ``q``'s measurement of a model trained on ``S`` as ``-sum_{z in S} tau(q, z)``: a
positive score means ``z`` lowers the measurement, so including it should lower the prediction.
Per query, LDS is the Spearman rank correlation across subsets between that prediction and the
measurement actually obtained by retraining (:mod:`infscope.evaluation.retraining`); the reported
value is the mean over queries with a bootstrap confidence interval (resampling queries).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from infscope.attribution.scores import Scores
from infscope.errors import InputError
from infscope.evaluation.retraining import (
    RetrainingOutcomes,
    RetrainingRunner,
    TrainFn,
    random_subset_masks,
)


@dataclass(frozen=True)
class LDSConfig:
    """Which subsets to retrain on: ``num_subsets`` random subsets keeping ``alpha`` of the data,
    drawn (and their training seeds derived) from ``seed``."""

    num_subsets: int = 50
    alpha: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.num_subsets) != self.num_subsets or self.num_subsets < 3:
            raise InputError(f"num_subsets must be an integer >= 3, got {self.num_subsets}")
        if not 0.0 < self.alpha < 1.0:
            raise InputError(f"alpha must be in (0, 1), got {self.alpha}")


@dataclass(frozen=True)
class LDSResult:
    """Mean LDS over queries and its bootstrap CI. ``per_query`` is NaN for the ``n_dropped``
    queries whose retrained measurements were constant across subsets (no ranking to predict)."""

    mean: float
    ci_low: float
    ci_high: float
    per_query: np.ndarray
    n_subsets: int
    n_dropped: int = 0
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float | int | list[float | None]]:
        return {
            "lds": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "n_subsets": self.n_subsets,
            "n_queries": int(self.per_query.size),
            "n_dropped": self.n_dropped,
            "per_query": [None if np.isnan(v) else float(v) for v in self.per_query],
        }


def score_values(scores: np.ndarray | Scores, name: str = "scores") -> np.ndarray:
    """The ``[n_query, n_train]`` float64 matrix of a :class:`Scores` or array, checked finite."""
    values = np.asarray(scores.values if isinstance(scores, Scores) else scores, dtype=np.float64)
    if values.ndim != 2:
        raise InputError(f"{name} must be a [n_query, n_train] matrix, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise InputError(f"{name} hold {int((~np.isfinite(values)).sum())} non-finite values")
    return values


def rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``a`` with the same row of ``b`` (average ranks for
    ties); NaN where either row is constant."""
    return rowwise_pearson(rankdata(a, axis=1), rankdata(b, axis=1))


def rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``; NaN for constant rows."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        result = (a * b).sum(axis=1) / denominator
    result[denominator <= 0] = np.nan
    return np.clip(result, -1.0, 1.0)


def _constant_rows(a: np.ndarray) -> np.ndarray:
    return np.ptp(a, axis=1) <= 1e-12 * np.maximum(np.abs(a).max(axis=1), 1.0)


def bootstrap_mean_ci(
    values: np.ndarray, n_bootstrap: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    means = np.empty(n_bootstrap)
    block = max(1, 2_000_000 // max(values.size, 1))  # bound memory for many queries
    for start in range(0, n_bootstrap, block):
        stop = min(start + block, n_bootstrap)
        draws = rng.integers(0, values.size, size=(stop - start, values.size))
        means[start:stop] = values[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _datamodel(
    scores: np.ndarray | Scores, outcomes: RetrainingOutcomes, name: str = "scores"
) -> tuple[np.ndarray, np.ndarray]:
    """The datamodel's predictions and the retrained measurements, both ``[n_query, n_subsets]``,
    after checking that ``scores`` match ``outcomes``."""
    values = score_values(scores, name)
    if not isinstance(outcomes, RetrainingOutcomes):
        raise InputError(f"outcomes must be RetrainingOutcomes, got {type(outcomes).__name__}")
    if values.shape != (outcomes.n_query, outcomes.n_train):
        raise InputError(
            f"{name} have shape {values.shape} but the retraining outcomes have "
            f"{outcomes.n_query} queries and {outcomes.n_train} training examples"
        )
    if outcomes.n_subsets < 3:
        raise InputError(f"LDS needs at least 3 subsets, got {outcomes.n_subsets}")
    predicted = -(values @ outcomes.masks.T.astype(np.float64))
    return predicted, outcomes.outputs.T


def _check_bootstrap(n_bootstrap: int, confidence: float) -> None:
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
        raise InputError(f"n_bootstrap must be a positive integer, got {n_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")


def _per_query(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per-query LDS: 0 where the predictions are constant, NaN where the measurements are."""
    per_query = rowwise_spearman(predicted, actual)
    per_query[_constant_rows(predicted)] = 0.0
    per_query[_constant_rows(actual)] = np.nan
    return per_query


def linear_datamodeling_score(
    scores: np.ndarray | Scores,
    outcomes: RetrainingOutcomes,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> LDSResult:
    """LDS of ``scores [n_query, n_train]`` against retrained ``outcomes``.

    Queries whose measured outputs are constant across subsets are left out (counted in
    ``n_dropped``); a query whose *predictions* are constant (all-zero scores, say) gets LDS 0,
    since the scores rank nothing for it.
    """
    predicted, actual = _datamodel(scores, outcomes)
    _check_bootstrap(n_bootstrap, confidence)
    per_query = _per_query(predicted, actual)
    dropped = np.isnan(per_query)
    valid = per_query[~dropped]
    if valid.size == 0:
        raise InputError(
            f"the retrained measurements are constant across subsets for all "
            f"{per_query.size} queries: there is nothing to correlate with"
        )
    low, high = bootstrap_mean_ci(valid, int(n_bootstrap), confidence, seed)
    return LDSResult(
        mean=float(valid.mean()),
        ci_low=low,
        ci_high=high,
        per_query=per_query,
        n_subsets=outcomes.n_subsets,
        n_dropped=int(dropped.sum()),
        confidence=confidence,
    )


@dataclass(frozen=True)
class LDSDifference:
    """LDS of one set of scores minus another's on the same retrainings, and its paired
    bootstrap CI (queries and retrained subsets resampled together for both)."""

    mean: float
    ci_low: float
    ci_high: float
    n_queries: int
    n_subsets: int
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float | int]:
        return {
            "difference": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "n_queries": self.n_queries,
            "n_subsets": self.n_subsets,
        }


def lds_difference(
    first: np.ndarray | Scores,
    second: np.ndarray | Scores,
    outcomes: RetrainingOutcomes,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> LDSDifference:
    """Is ``first`` better than ``second`` at predicting retraining, beyond chance?

    ``mean`` is ``LDS(first) − LDS(second)``; the CI comes from a paired bootstrap that
    resamples both the queries and the retrained subsets (the ground truth's own sampling
    error: with a few dozen retrainings it is as large as the query sampling), the same draw
    for both score sets, so what they share cancels. A draw that leaves a query's measurements
    constant leaves that query out of the draw."""
    first_predicted, actual = _datamodel(first, outcomes, "first")
    second_predicted, _ = _datamodel(second, outcomes, "second")
    _check_bootstrap(n_bootstrap, confidence)
    difference = _per_query(first_predicted, actual) - _per_query(second_predicted, actual)
    kept = ~np.isnan(difference)
    if not kept.any():
        raise InputError("the retrained measurements are constant for every query")
    first_predicted, second_predicted, actual = (
        a[kept] for a in (first_predicted, second_predicted, actual)
    )
    rng = np.random.default_rng(seed)
    n_query, n_subsets = actual.shape
    draws = np.empty(int(n_bootstrap))
    for index in range(draws.size):
        rows = rng.integers(0, n_query, n_query)[:, None]
        columns = rng.integers(0, n_subsets, n_subsets)[None, :]
        measured = actual[rows, columns]
        drawn = _per_query(first_predicted[rows, columns], measured) - _per_query(
            second_predicted[rows, columns], measured
        )
        draws[index] = np.nanmean(drawn) if not np.isnan(drawn).all() else np.nan
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(draws, [tail, 1.0 - tail])
    return LDSDifference(
        mean=float(difference[kept].mean()),
        ci_low=float(low),
        ci_high=float(high),
        n_queries=int(kept.sum()),
        n_subsets=n_subsets,
        confidence=confidence,
    )


def lds_ground_truth(
    train_fn: TrainFn,
    n_train: int,
    config: LDSConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> RetrainingOutcomes:
    """Retrain on ``config.num_subsets`` random ``alpha``-subsets (cached and resumable with
    ``cache_dir``). Each subset gets its own training seed, derived from ``config.seed``, so
    training noise is part of what LDS measures."""
    config = config or LDSConfig()
    masks = random_subset_masks(n_train, config.num_subsets, config.alpha, config.seed)
    seeds = np.random.default_rng([config.seed, 1]).integers(0, 2**31 - 1, config.num_subsets)
    return RetrainingRunner(train_fn, masks, cache_dir=cache_dir, seeds=seeds).run(progress)
