"""Out-of-fold predictions: K-fold retraining through a user's training function.

``fit_predict(train_indices, heldout_indices, fold) -> probs | FoldRun`` trains a fresh model on
the training positions and returns the class probabilities of the held-out ones (rows in the
order of ``heldout_indices``). It may return a :class:`FoldRun` instead, adding two
:class:`~infscope.dynamics.DynamicsRecorder` s: ``heldout`` with the held-out examples' logits
recorded at each epoch end (their out-of-sample training dynamics) and ``train`` with the
training forwards (in-sample dynamics: AUM, forgetting events, EL2N).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from infscope.audit.evidence import _labels, check_probs
from infscope.dynamics import DynamicsRecorder
from infscope.errors import InputError


@dataclass
class FoldRun:
    """What one fold's training returns: held-out probabilities and optional recordings."""

    probs: np.ndarray
    heldout: DynamicsRecorder | None = None
    train: DynamicsRecorder | None = None


FitPredict = Callable[[np.ndarray, np.ndarray, int], np.ndarray | FoldRun]


@dataclass
class OutOfFold:
    """Out-of-fold probabilities ``[n, C]``, the fold of each example, and each fold's recorders."""

    probs: np.ndarray
    fold: np.ndarray
    heldout: list[DynamicsRecorder] = field(default_factory=list)
    train: list[DynamicsRecorder] = field(default_factory=list)

    def epoch_mean_probs(self, ids: Sequence[str]) -> np.ndarray | None:
        """Each example's held-out class probabilities averaged over the recorded epochs (its
        out-of-sample training dynamics); None without held-out recordings."""
        if not self.heldout:
            return None
        out = np.full(self.probs.shape, np.nan)
        position = {i: r for r, i in enumerate(ids)}
        for recorder in self.heldout:
            arrays = recorder.to_arrays()
            rows = np.array([position[i] for i in arrays.ids])
            present = arrays.recorded[..., None]
            total = np.where(present, arrays.probs, 0.0).sum(1)
            out[rows] = total / np.maximum(present.sum(1), 1)
        if np.isnan(out).any():
            raise InputError("held-out recordings miss some examples: record every held-out one")
        return out


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per example, stratified by label (scikit-learn's ``StratifiedKFold``,
    shuffled with ``seed``); classes with fewer members than folds are spread as far as they go."""
    import warnings

    from sklearn.model_selection import StratifiedKFold

    y = _labels(labels)
    if folds < 2 or folds > y.size:
        raise InputError(f"folds must be in [2, {y.size}], got {folds}")
    assignment = np.empty(y.size, dtype=np.int64)
    with warnings.catch_warnings():  # "the least populated class has only m members"
        warnings.simplefilter("ignore", UserWarning)
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(y.size), y)
        for fold, (_, heldout) in enumerate(splits):
            assignment[heldout] = fold
    return assignment


def cross_validate(
    fit_predict: FitPredict,
    labels: np.ndarray | Sequence[int],
    n_classes: int,
    folds: int = 5,
    seed: int = 0,
) -> OutOfFold:
    """Run ``fit_predict`` once per fold and assemble the out-of-fold probabilities."""
    y = _labels(labels, n_classes)
    assignment = stratified_folds(y, folds, seed)
    probs = np.full((y.size, n_classes), np.nan)
    heldout, train = [], []
    for fold in range(folds):
        train_idx = np.flatnonzero(assignment != fold)
        heldout_idx = np.flatnonzero(assignment == fold)
        run = fit_predict(train_idx, heldout_idx, fold)
        if not isinstance(run, FoldRun):
            run = FoldRun(np.asarray(run))
        if np.ndim(run.probs) != 2 or np.shape(run.probs)[1] != n_classes:
            raise InputError(
                f"fold {fold} returned probabilities of shape {np.shape(run.probs)}; expected "
                f"[{heldout_idx.size}, {n_classes}]"
            )
        probs[heldout_idx] = check_probs(run.probs, heldout_idx.size, f"fold {fold} probabilities")
        if run.heldout is not None:
            heldout.append(run.heldout)
        if run.train is not None:
            train.append(run.train)
    return OutOfFold(probs, assignment, heldout, train)
