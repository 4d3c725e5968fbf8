"""The pieces of evidence an audit combines, each a plain function on arrays.

* :func:`neighbour_votes` — the labels of each example's most similar *other* training examples
  (cosine similarity of representations, or any train x train similarity / influence matrix),
  weighted by similarity: a leave-self-out class distribution that never saw the example's label.
* :func:`stack_weights` — mixture weights of several out-of-sample class distributions that
  maximise the likelihood of the given labels (EM). Every source is out-of-sample for the example
  it scores, so label noise affects each alike and the likelihood is a fair criterion.
* :func:`noise_structure` — how concentrated the estimated label flips are, against what chance
  alone gives: the share of the flips (cleanlab's confident joint) that go to their true class's
  most common wrong label, compared with the same share under uniform flips of the same per-class
  counts (simulated). With few flips per class chance alone concentrates them (4 flips among 99
  classes share a destination one time in sixteen, and the share is then at least 1/4), so the
  estimate is the excess over that null, and the ranking switches only on the excess beyond the
  null's 99th percentile.
* :func:`label_suspicion` — ``(1 - q_y) + beta * max_{k != y} q_k`` of a combined class
  distribution ``q``: ``beta = 0`` ranks by the given label's probability (cleanlab's
  self-confidence), ``beta = 1`` by the margin to the best alternative (normalised margin).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import ModuleType

import numpy as np

from infscope.errors import InputError

#: Neighbour counts tried by ``k="auto"`` (the one whose votes best predict the given labels).
AUTO_K = (5, 10, 20, 50)
#: ``beta`` rises linearly from 0 to 1 as the noise concentration beyond chance
#: (:attr:`NoiseStructure.shrunk`) goes from the first to the second value (chosen on the
#: development tasks' noise draws, docs/results/audit.md).
BETA_RAMP = (0.2, 0.3)
#: Uniform-noise simulations of the noise-structure null, and the quantile the switch must clear
#: (so uniform noise switches the ranking in at most 1% of data sets, whatever their size).
NULL_DRAWS = 2000
NULL_LEVEL = 0.99


def _cleanlab_count() -> ModuleType:
    """``cleanlab.count``, imported so that the filter its import installs (cleanlab 2.9's
    datalab runs ``warnings.filterwarnings("ignore")``, silencing every later warning of the
    process, infscope's own included) does not outlive the import."""
    with warnings.catch_warnings():
        import cleanlab.count
    return cleanlab.count


def _labels(labels: np.ndarray | Sequence[int], n_classes: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise InputError(f"labels must be a 1-D array of class indices, got {y.dtype} {y.shape}")
    if y.size and y.min() < 0:
        raise InputError("labels must be non-negative class indices")
    if n_classes is not None and y.size and y.max() >= n_classes:
        raise InputError(f"label {int(y.max())} is out of range for {n_classes} classes")
    return y.astype(np.int64)


def _first_bad_row(bad: np.ndarray, ids: Sequence[str] | None) -> str:
    rows = np.flatnonzero(bad)
    first = int(rows[0])
    where = f"row {first}" + (f" (id {ids[first]!r})" if ids is not None else "")
    return where + (f" and {rows.size - 1} more" if rows.size > 1 else "")


def check_probs(
    probs: np.ndarray, n: int, name: str = "pred_probs", ids: Sequence[str] | None = None
) -> np.ndarray:
    """``probs`` as float64 ``[n, C]`` rows on the simplex (an error naming the first bad row
    otherwise)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n:
        raise InputError(f"{name} must have shape [{n}, n_classes], got {p.shape}")
    bad = ~np.isfinite(p).all(1) | (p < -1e-9).any(1)
    if bad.any():
        raise InputError(
            f"{name} must be finite and non-negative: {_first_bad_row(bad, ids)} is not"
        )
    off = ~np.isclose(p.sum(1), 1.0, atol=1e-4)
    if off.any():
        raise InputError(
            f"{name} rows must sum to 1 (probabilities, not logits): {_first_bad_row(off, ids)} "
            f"sums to {p.sum(1)[off][0]:.4g}"
        )
    return np.clip(p, 0.0, 1.0)


def check_features(
    features: np.ndarray, n: int, ids: Sequence[str] | None = None, name: str = "features"
) -> np.ndarray:
    """``features`` as a finite ``[n, d]`` array (an error naming the first bad row otherwise)."""
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] != n:
        raise InputError(f"{name} must have shape [{n}, d] (one row per example), got {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InputError(f"{name} must be real numbers, got {x.dtype}")
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise InputError(f"{name} hold NaN or inf: {_first_bad_row(bad, ids)}")
    return x


@dataclass(frozen=True)
class Neighbours:
    """Each example's ``k`` nearest other examples (``index``, by decreasing ``similarity``) and
    the similarity-weighted vote of their labels, ``probs`` ``[n, C]`` (smoothed, rows sum to 1)."""

    index: np.ndarray
    similarity: np.ndarray
    probs: np.ndarray
    k: int


def nearest(
    features: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
    k: int = 50,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and similarities ``[n, k]`` of each row's ``k`` most similar other rows: cosine
    similarity of ``features`` (computed in blocks of rows) or the rows of a given ``similarity``
    matrix (e.g. a train x train influence matrix; the diagonal is ignored)."""
    if (features is None) == (similarity is None):
        raise InputError("give exactly one of features or similarity")
    if similarity is not None:
        s = np.asarray(similarity, dtype=np.float64)
        if s.ndim != 2 or s.shape[0] != s.shape[1]:
            raise InputError(f"similarity must be a square [n, n] matrix, got {s.shape}")
        n = s.shape[0]
    else:
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2:
            raise InputError(f"features must be [n, d], got {x.shape}")
        if not np.isfinite(x).all():
            raise InputError("features contain NaN or inf")
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        n = x.shape[0]
    if n < 2:
        raise InputError("neighbours need at least 2 examples")
    k = min(k, n - 1)
    index = np.empty((n, k), dtype=np.int64)
    values = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        part = s[rows].copy() if similarity is not None else (x[rows] @ x.T).astype(np.float64)
        part[np.arange(rows.size), rows] = -np.inf
        top = np.argpartition(-part, k - 1, axis=1)[:, :k]
        top_values = np.take_along_axis(part, top, 1)
        order = np.argsort(-top_values, axis=1, kind="stable")
        index[rows] = np.take_along_axis(top, order, 1)
        values[rows] = np.take_along_axis(top_values, order, 1)
    return index, values


def _votes(
    index: np.ndarray, similarity: np.ndarray, labels: np.ndarray, n_classes: int
) -> np.ndarray:
    n, k = index.shape
    weight = np.maximum(similarity, 0.0)
    votes = np.zeros((n, n_classes))
    np.add.at(votes, (np.repeat(np.arange(n), k), labels[index].ravel()), weight.ravel())
    votes += 0.1 / n_classes  # a small prior: no class gets probability 0
    return votes / votes.sum(1, keepdims=True)


def neighbour_votes(
    labels: np.ndarray | Sequence[int],
    n_classes: int,
    features: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
    k: int | str = "auto",
) -> Neighbours:
    """Similarity-weighted label votes of each example's nearest other examples (leave-self-out).
    ``k="auto"`` tries :data:`AUTO_K` and keeps the count whose votes give the given labels the
    highest mean log-likelihood."""
    y = _labels(labels, n_classes)
    candidates = AUTO_K if k == "auto" else (int(k),)
    if min(candidates) < 1:
        raise InputError(f"k must be a positive number of neighbours or 'auto', got {k!r}")
    index, values = nearest(features, similarity, k=max(candidates))
    if index.shape[0] != y.size:
        raise InputError(f"{index.shape[0]} feature rows for {y.size} labels")
    best: Neighbours | None = None
    best_ll = -np.inf
    for count in sorted({min(c, index.shape[1]) for c in candidates}):
        probs = _votes(index[:, :count], values[:, :count], y, n_classes)
        ll = float(np.log(probs[np.arange(y.size), y]).mean())
        if ll > best_ll:
            best, best_ll = Neighbours(index, values, probs, count), ll
    assert best is not None
    return best


def stack_weights(
    sources: Sequence[np.ndarray], labels: np.ndarray | Sequence[int], iterations: int = 500
) -> np.ndarray:
    """Weights ``w`` on the simplex maximising ``sum_i log(sum_s w_s p_s[i, y_i])`` (EM)."""
    y = _labels(labels)
    if not sources:
        raise InputError("give at least one source of class probabilities")
    likelihood = np.stack([np.asarray(p)[np.arange(y.size), y] for p in sources], 1)
    likelihood = np.maximum(likelihood, 1e-12)
    w = np.full(len(sources), 1.0 / len(sources))
    for _ in range(iterations):
        resp = likelihood * w
        resp /= resp.sum(1, keepdims=True)
        new = resp.mean(0)
        if np.abs(new - w).max() < 1e-9:
            return new
        w = new
    return w


@dataclass(frozen=True)
class NoiseStructure:
    """How concentrated the estimated label flips are, with the sampling error of the estimate.

    ``flips``: the off-diagonal count of cleanlab's confident joint (examples whose given label
    looks wrong), ``observed``: the share of them that go to the most common wrong label of their
    (estimated) true class. Under uniform flips of the same per-class counts that share is random
    with mean ``null_mean`` and ``1 - NULL_LEVEL`` upper quantile ``null_upper`` (simulated);
    ``p_value`` is the chance it reaches ``observed``. ``concentration`` = ``(observed -
    null_mean) / (1 - null_mean)``: 0 = as spread as uniform flips, 1 = every flip of a class goes
    to one class; ``shrunk`` = ``(observed - null_upper) / (1 - null_mean)`` (clipped to [0, 1]):
    the concentration that chance cannot explain at ``NULL_LEVEL``, which sets ``beta``. With many
    flips per class the two agree; with few, ``shrunk`` stays near 0 unless the flips are far
    more concentrated than chance makes them."""

    observed: float
    null_mean: float
    null_upper: float
    p_value: float
    concentration: float
    shrunk: float
    flips: int
    classes: int
    beta: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def describe(self) -> str:
        if self.classes <= 2:
            return "two classes: flips have one destination (β = 0)"
        return (
            f"noise concentration {self.concentration:.2f} (observed share "
            f"{self.observed:.2f} of {self.flips} estimated flips against {self.null_mean:.2f} "
            f"for uniform flips, {NULL_LEVEL:.0%} of uniform draws below {self.null_upper:.2f}; "
            f"p = {self.p_value:.3f}); beyond chance {self.shrunk:.2f} → β = {self.beta:.2f}"
        )


def _max_multiplicity(rng: np.random.Generator, m: int, bins: int, draws: int) -> np.ndarray:
    """The largest of ``bins`` counts when ``m`` balls fall uniformly into them, ``draws`` times."""
    if m >= bins:
        return rng.multinomial(m, np.full(bins, 1.0 / bins), size=draws).max(1)
    balls = np.sort(rng.integers(0, bins, size=(draws, m)), axis=1)
    run = np.ones(draws, dtype=np.int64)
    longest = run.copy()
    for t in range(1, m):
        run = np.where(balls[:, t] == balls[:, t - 1], run + 1, 1)
        np.maximum(longest, run, out=longest)
    return longest


def _top_share(flips: np.ndarray) -> float:
    total = flips.sum()
    return float(flips.max(0).sum() / total) if total else 0.0


def noise_structure(
    probs: np.ndarray,
    labels: np.ndarray | Sequence[int],
    draws: int = NULL_DRAWS,
    seed: int = 0,
) -> NoiseStructure:
    """The noise structure of ``labels`` given out-of-sample ``probs`` (see
    :class:`NoiseStructure`); ``draws`` uniform-noise simulations (seeded) give the null."""
    y = _labels(labels)
    p = check_probs(probs, y.size)
    c = p.shape[1]
    joint = np.asarray(_cleanlab_count().compute_confident_joint(y, p), dtype=np.int64)
    flips = np.where(np.eye(c, dtype=bool), 0, joint)  # [given label, true label]
    per_true = flips.sum(0)
    total = int(per_true.sum())
    if c <= 2 or total == 0:  # two classes: every flip has the one other class as destination
        return NoiseStructure(0.0, 0.0, 0.0, 1.0, 0.0, 0.0, total, c, 0.0)
    observed = _top_share(flips)
    rng = np.random.default_rng(seed)
    tops = np.zeros(draws)
    for m in per_true[per_true > 0].tolist():
        tops += _max_multiplicity(rng, m, c - 1, draws)
    null = tops / total
    null_mean = float(null.mean())
    null_upper = float(np.quantile(null, NULL_LEVEL))
    p_value = float((1 + (null >= observed - 1e-12).sum()) / (draws + 1))
    scale = max(1.0 - null_mean, 1e-12)
    concentration = float(np.clip((observed - null_mean) / scale, 0.0, 1.0))
    shrunk = float(np.clip((observed - null_upper) / scale, 0.0, 1.0))
    return NoiseStructure(
        observed, null_mean, null_upper, p_value, concentration, shrunk, total, c, beta_for(shrunk)
    )


def beta_for(concentration: float) -> float:
    """The weight of the best alternative in :func:`label_suspicion` for a noise concentration
    (beyond chance, :attr:`NoiseStructure.shrunk`)."""
    low, high = BETA_RAMP
    return float(np.clip((concentration - low) / (high - low), 0.0, 1.0))


def label_suspicion(
    q: np.ndarray, labels: np.ndarray | Sequence[int], beta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Suspicion ``((1 - q_y) + beta max_{k != y} q_k) / (1 + beta)`` in [0, 1], the suggested
    label ``argmax_{k != y} q_k`` and its probability."""
    y = _labels(labels, q.shape[1])
    rows = np.arange(y.size)
    others = q.copy()
    others[rows, y] = -np.inf
    suggested = others.argmax(1)
    support = q[rows, suggested]
    suspicion = ((1.0 - q[rows, y]) + beta * support) / (1.0 + beta)
    return suspicion, suggested, support


def estimated_errors(probs: np.ndarray, labels: np.ndarray | Sequence[int]) -> int:
    """The number of label errors confident learning estimates: ``n`` times the off-diagonal mass
    of cleanlab's calibrated joint of given and true labels."""
    y = _labels(labels)
    joint = _cleanlab_count().estimate_joint(y, check_probs(probs, y.size))
    return int(round(y.size * (1.0 - float(np.trace(joint)))))
