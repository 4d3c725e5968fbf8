"""Logistic and softmax losses on raw scores: the gradients and hessians boosting fits.

Binary models have one raw output (the logit), labels 0/1; multiclass models one per class, labels
``0..K-1``. The loss is the negative log-likelihood of the label.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_softmax, softmax

from infscope.errors import InputError


def check_labels(labels: np.ndarray, n_outputs: int, n: int) -> np.ndarray:
    """Integer labels ``0..n_classes-1``, one per row."""
    y = np.asarray(labels)
    n_classes = 2 if n_outputs == 1 else n_outputs
    if y.shape != (n,):
        raise InputError(f"{y.shape[0] if y.ndim else 0} labels for {n} rows")
    if not np.issubdtype(y.dtype, np.integer) and not (
        np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))
    ):
        raise InputError(f"labels must be class indices 0..{n_classes - 1}, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(f"labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    return y


def gradient_hessian(raw: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Derivatives of the loss in the raw scores ``raw [n, ..., n_outputs]`` (one label per
    row): ``p - y`` and ``p (1 - p)``, the diagonal hessian boosting libraries use."""
    n_outputs = raw.shape[-1]
    y = labels.reshape((labels.shape[0],) + (1,) * (raw.ndim - 1))
    if n_outputs == 1:
        p = expit(raw)
        target = y.astype(np.float64)
    else:
        p = softmax(raw, axis=-1)
        target = (np.arange(n_outputs) == y).astype(np.float64)
    return p - target, p * (1.0 - p)


def example_loss(raw: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[n]`` negative log-likelihood of each row's label under raw scores ``[n, n_outputs]``."""
    if raw.shape[-1] == 1:
        z = raw[:, 0]
        return np.logaddexp(0.0, z) - labels * z
    return -log_softmax(raw, axis=-1)[np.arange(raw.shape[0]), labels]
