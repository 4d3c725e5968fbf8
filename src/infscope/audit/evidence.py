"""The pieces of evidence an audit combines, each a plain function on arrays.

* :func:`neighbour_votes` — the labels of each example's most similar *other* training examples
  (cosine similarity of representations, or any train x train similarity / influence matrix),
  weighted by similarity: a leave-self-out class distribution that never saw the example's label.
* :func:`stack_weights` — mixture weights of several out-of-sample class distributions that
  maximise the likelihood of the given labels (EM). Every source is out-of-sample for the example
  it scores, so label noise affects each alike and the likelihood is a fair criterion.
* :func:`noise_concentration` — how concentrated the estimated label flips are: for each true
  class, the share of its estimated flips that go to its single most common wrong label (from
  cleanlab's confident-learning joint), rescaled so that 0 = flips spread uniformly over the other
  classes and 1 = all flips of a class go to one class.
* :func:`label_suspicion` — ``(1 - q_y) + beta * max_{k != y} q_k`` of a combined class
  distribution ``q``: ``beta = 0`` ranks by the given label's probability (cleanlab's
  self-confidence), ``beta = 1`` by the margin to the best alternative (normalised margin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infscope.errors import InputError

#: Neighbour counts tried by ``k="auto"`` (the one whose votes best predict the given labels).
AUTO_K = (5, 10, 20, 50)
#: ``beta`` rises linearly from 0 to 1 as the noise concentration goes from the first to the second
#: value (chosen on development noise draws, see docs/benchmarks.md).
BETA_RAMP = (0.25, 0.35)


def _labels(labels: np.ndarray | Sequence[int], n_classes: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise InputError(f"labels must be a 1-D array of class indices, got {y.dtype} {y.shape}")
    if y.size and y.min() < 0:
        raise InputError("labels must be non-negative class indices")
    if n_classes is not None and y.size and y.max() >= n_classes:
        raise InputError(f"label {int(y.max())} is out of range for {n_classes} classes")
    return y.astype(np.int64)


def check_probs(probs: np.ndarray, n: int, name: str = "pred_probs") -> np.ndarray:
    """``probs`` as float64 ``[n, C]`` rows on the simplex (an error otherwise)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n:
        raise InputError(f"{name} must have shape [{n}, n_classes], got {p.shape}")
    if not np.isfinite(p).all() or (p < -1e-9).any():
        raise InputError(f"{name} must be finite and non-negative")
    if not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise InputError(f"{name} rows must sum to 1 (probabilities, not logits)")
    return np.clip(p, 0.0, 1.0)


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


def noise_concentration(probs: np.ndarray, labels: np.ndarray | Sequence[int]) -> float:
    """0 (estimated flips spread uniformly over the other classes) ... 1 (each class's flips all go
    to one class); 0 for two classes, where both readings coincide. Weighted by class size."""
    from cleanlab.count import estimate_joint

    y = _labels(labels)
    p = check_probs(probs, y.size)
    c = p.shape[1]
    if c <= 2:
        return 0.0
    joint = estimate_joint(y, p)  # [given label, true label], sums to 1
    flips = np.where(np.eye(c, dtype=bool), 0.0, joint)
    per_true = flips.sum(0)
    share = flips.max(0) / np.maximum(per_true, 1e-12)
    mass = joint.sum(0)
    concentration = float((share * mass).sum() / max(mass.sum(), 1e-12))
    uniform = 1.0 / (c - 1)
    return float(np.clip((concentration - uniform) / (1.0 - uniform), 0.0, 1.0))


def beta_for(concentration: float) -> float:
    """The weight of the best alternative in :func:`label_suspicion` for a noise concentration."""
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
    from cleanlab.count import estimate_joint

    y = _labels(labels)
    joint = estimate_joint(y, check_probs(probs, y.size))
    return int(round(y.size * (1.0 - float(np.trace(joint)))))
