"""Synthetic label noise for benchmarks and tests: flip a share of the labels, uniformly or to a
confusable class, and report which rows were flipped.

Every benchmark that measures robustness to noisy labels (mislabel detection, pruning, selection
on noisy pools) draws its noise here, so that "20% confusable flips" means the same thing
everywhere. The rows to flip are drawn uniformly without replacement; the new label is

* ``uniform`` — drawn uniformly from the other classes;
* ``confusable`` — the other class whose centroid (mean of the clean-labelled ``features``) is
  nearest to the row's features: the mistake an annotator is most likely to make. With two
  classes both models flip to the only other class (they differ only in the seeded draw).

:func:`conflicting_duplicates` draws the other kind of noise merged pools carry: rows repeated
(by a second source or annotator) with a different label. It says which rows to repeat and with
which conflicting labels; the caller makes the (near-)duplicate copies.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from infscope.errors import InputError

NOISE_MODELS = ("uniform", "confusable")
NoiseModel = Literal["uniform", "confusable"]


def flip_labels(
    labels: np.ndarray,
    rate: float,
    seed: int | np.random.Generator,
    *,
    noise: NoiseModel = "uniform",
    n_classes: int | None = None,
    features: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy labels, flipped mask)``: ``round(rate * n)`` rows get another class.

    ``labels`` are class indices in ``[0, n_classes)`` (``n_classes`` defaults to
    ``labels.max() + 1``); ``features`` (``[n, d]``) are required for ``confusable`` noise. The
    input is not modified. The same ``seed`` gives the same flips."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError("labels must be a 1-d array of class indices")
    if not 0.0 <= rate <= 1.0:
        raise InputError(f"the flip rate must be in [0, 1], got {rate}")
    if noise not in NOISE_MODELS:
        raise InputError(f"unknown noise model {noise!r}; choose from {NOISE_MODELS}")
    n = len(labels)
    classes = int(labels.max()) + 1 if n_classes is None and n else int(n_classes or 0)
    if n and (labels.min() < 0 or labels.max() >= classes):
        raise InputError(f"labels must lie in [0, {classes})")
    if classes < 2 and rate > 0:
        raise InputError("flipping labels needs at least two classes")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, int(round(rate * n)), replace=False)] = True
    noisy = labels.copy()
    rows = np.flatnonzero(flipped)
    if noise == "uniform":
        noisy[rows] = (labels[rows] + rng.integers(1, classes, rows.size)) % classes
    else:
        noisy[rows] = _nearest_other_class(labels, rows, classes, features)
    return noisy, flipped


def _nearest_other_class(
    labels: np.ndarray, rows: np.ndarray, classes: int, features: np.ndarray | None
) -> np.ndarray:
    """For each of ``rows``, the class other than its own whose clean centroid is nearest."""
    if features is None:
        raise InputError("confusable noise needs the rows' features (to find the nearest class)")
    features = np.asarray(features)
    if not np.issubdtype(features.dtype, np.floating):
        features = features.astype(np.float64)
    if features.ndim != 2 or len(features) != len(labels):
        raise InputError(f"features must be [n, d] with n = {len(labels)} rows")
    if not np.isfinite(features).all():
        raise InputError("features must be finite")
    present = np.bincount(labels, minlength=classes) > 0
    centroids = np.zeros((classes, features.shape[1]), dtype=features.dtype)
    for k in np.flatnonzero(present):
        centroids[k] = features[labels == k].mean(0)
    distance = ((features[rows, None, :] - centroids[None]) ** 2).sum(-1)
    distance[:, ~present] = np.inf
    distance[np.arange(rows.size), labels[rows]] = np.inf
    if rows.size and np.isinf(distance.min(1)).any():
        raise InputError("confusable noise needs at least two classes present in the labels")
    return distance.argmin(1)


def conflicting_duplicates(
    labels: np.ndarray,
    rate: float,
    seed: int | np.random.Generator,
    *,
    noise: NoiseModel = "uniform",
    n_classes: int | None = None,
    features: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(sources, conflicting labels)``: ``round(rate * n)`` distinct rows (ascending) to
    repeat, each with a label other than its own drawn exactly as :func:`flip_labels` draws a
    flip (same arguments, same seed, same rows). Appending the copies with those labels gives a
    pool in which each source and its copy disagree."""
    noisy, chosen = flip_labels(
        labels, rate, seed, noise=noise, n_classes=n_classes, features=features
    )
    sources = np.flatnonzero(chosen)
    return sources, noisy[sources]
