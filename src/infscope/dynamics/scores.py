"""Per-example scores from training dynamics: data maps, EL2N, GraNd, forgetting, AUM (VoG, which
needs input gradients, is in :mod:`infscope.dynamics.vog`).

Every score is a function returning a :class:`~infscope.attribution.SelfInfluence` — one value per
training example, with its id — whose ``method`` names the score and whose ``metadata`` says what a
high value means (``"high_means"``), whether higher means harder (``"higher_is_harder"``), which
epochs were used and whether the values were class-normalised. :func:`hardness` orients any of them
so that high = hard (what :func:`~infscope.evaluation.mislabel_detection` and pruning strategies
expect).

Inputs are a :class:`~infscope.dynamics.DynamicsRecorder` or its :class:`DynamicsArrays`; ``ids``
picks and orders the rows (default: the recorder's first-seen order), ``epochs`` restricts the
epochs used. Means over epochs skip epochs in which an example was not recorded; an example with
no record in the epochs used gets NaN.

Class normalisation: every score takes ``normalize=None | "zscore" | "rank"``, applied per class
by :func:`class_normalize`, so that class imbalance (and classes that are simply harder) does not
dominate a ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from infscope.attribution.scores import SelfInfluence
from infscope.dynamics.arrays import DynamicsArrays, EpochKey, as_ids
from infscope.dynamics.recorder import DynamicsRecorder
from infscope.errors import InputError

Source = DynamicsRecorder | DynamicsArrays
NORMALIZE_METHODS = ("zscore", "rank")


# -- helpers ---------------------------------------------------------------------------------------
def _reindex(arrays: DynamicsArrays, ids: list[str]) -> DynamicsArrays:
    if ids == arrays.ids:
        return arrays
    position = {i: r for r, i in enumerate(arrays.ids)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise InputError(f"{len(missing)} ids are not in the records, e.g. {missing[:5]}")
    rows = np.asarray([position[i] for i in ids], dtype=np.int64)
    return DynamicsArrays(
        ids=list(ids),
        epochs=list(arrays.epochs),
        labels=arrays.labels[rows],
        loss=arrays.loss[rows],
        probs=arrays.probs[rows],
        margin=arrays.margin[rows],
        correct=arrays.correct[rows],
        grad_norm=arrays.grad_norm[rows],
        recorded=arrays.recorded[rows],
        metadata=dict(arrays.metadata),
    )


def _arrays(
    source: Source, ids: Any = None, epochs: Sequence[EpochKey] | None = None
) -> DynamicsArrays:
    if isinstance(source, DynamicsRecorder):
        return source.to_arrays(ids, epochs)
    if not isinstance(source, DynamicsArrays):
        raise InputError(
            f"expected a DynamicsRecorder or DynamicsArrays, got {type(source).__name__}"
        )
    arrays = source if epochs is None else source.select_epochs(epochs)
    if ids is not None:
        arrays = _reindex(arrays, as_ids(getattr(ids, "ids", ids)))
    return arrays


def _nanmean(values: np.ndarray, axis: int = 1) -> np.ndarray:
    """Mean over finite entries; NaN where there are none (no warning)."""
    present = ~np.isnan(values)
    count = present.sum(axis=axis)
    total = np.where(present, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def class_normalize(
    values: np.ndarray | SelfInfluence, labels: Any, method: str = "zscore"
) -> np.ndarray | SelfInfluence:
    """Normalise scores within each class (NaN values stay NaN and are ignored).

    ``"zscore"``: ``(v - mean_c) / std_c`` with the population std, so every class has mean 0 and
    std 1 (a class whose values are all equal, or that has one example, gets 0). ``"rank"``: the
    within-class percentile rank in ``[0, 1]`` (ties averaged; a single example gets 0.5). Both keep
    the order within a class, so "what high means" is unchanged. A :class:`SelfInfluence` in gives a
    :class:`SelfInfluence` out whose method gains ``"+class_<method>"``.
    """
    if method not in NORMALIZE_METHODS:
        raise InputError(
            f"unknown normalisation {method!r}; choose one of {list(NORMALIZE_METHODS)}"
        )
    if isinstance(values, SelfInfluence):
        out = class_normalize(values.values, labels, method)
        metadata = {**values.metadata, "class_normalized": method}
        return SelfInfluence(
            out, list(values.train_ids), f"{values.method}+class_{method}", metadata
        )
    raw = np.asarray(values, dtype=np.float64)
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if raw.ndim != 1 or labels.shape != raw.shape:
        raise InputError(
            f"values {raw.shape} and labels {labels.shape} must be 1-D and of the same length"
        )
    out = np.full_like(raw, np.nan)
    finite = np.isfinite(raw)
    for label in np.unique(labels):
        rows = np.flatnonzero((labels == label) & finite)
        if rows.size == 0:
            continue
        v = raw[rows]
        if method == "zscore":
            std = v.std()
            out[rows] = (v - v.mean()) / std if std > 0 else 0.0
        else:
            out[rows] = (rankdata(v) - 1) / (v.size - 1) if v.size > 1 else 0.5
    return out


def hardness(score: SelfInfluence) -> SelfInfluence:
    """``score`` oriented so that high = hard / suspicious (negated when higher means easier,
    e.g. confidence or AUM)."""
    if score.higher_is_harder is None:
        raise InputError(f"score {score.method!r} does not say which direction is harder")
    return score.oriented()


def make_score(
    values: np.ndarray,
    ids: list[str],
    labels: np.ndarray,
    name: str,
    high_means: str,
    higher_is_harder: bool,
    normalize: str | None,
    **extra: Any,
) -> SelfInfluence:
    metadata = {
        "score": name,
        "high_means": high_means,
        "higher_is_harder": higher_is_harder,
        "class_normalized": None,
        **extra,
    }
    result = SelfInfluence(np.asarray(values, dtype=np.float64), list(ids), name, metadata)
    return result if normalize is None else class_normalize(result, labels, normalize)


def _ensemble(
    sources: Source | Sequence[Source], ids: Any, epoch: EpochKey | None
) -> tuple[list[DynamicsArrays], list[int]]:
    """Each ensemble member's arrays on common ids, with the column of ``epoch`` in each."""
    members = [sources] if isinstance(sources, (DynamicsRecorder, DynamicsArrays)) else sources
    members = list(members)
    if not members:
        raise InputError("give at least one recorder")
    first = _arrays(members[0], ids)
    arrays = [first] + [_arrays(m, first.ids) for m in members[1:]]
    for other in arrays[1:]:
        if not np.array_equal(other.labels, first.labels):
            raise InputError("the ensemble's recorders disagree on the labels of some examples")
    return arrays, [a.epoch_index(epoch) for a in arrays]


def seed_average(
    score: Callable[..., SelfInfluence], sources: Sequence[Source], **options: Any
) -> SelfInfluence:
    """Average any per-run score over runs trained with different seeds (an ensemble), aligned
    by example id: ``seed_average(aum, [run0, run1, run2])``. Examples a run never recorded are
    left out of that example's mean."""
    sources = list(sources)
    if not sources:
        raise InputError("give at least one recorder")
    first = score(sources[0], **options)
    options = {**options, "ids": first.train_ids}
    values = [first.values] + [score(source, **options).values for source in sources[1:]]
    metadata = {**first.metadata, "ensemble": len(sources)}
    return SelfInfluence(
        _nanmean(np.stack(values, axis=1)), list(first.train_ids), first.method, metadata
    )


# -- data maps (Swayamdipta et al., 2020) ----------------------------------------------------------
def mean_loss(
    source: Source,
    ids: Any = None,
    epochs: Sequence[EpochKey] | None = None,
    normalize: str | None = None,
) -> SelfInfluence:
    """Mean training loss over epochs. **High = hard**: slow to fit, ambiguous or mislabeled."""
    a = _arrays(source, ids, epochs)
    return make_score(
        _nanmean(a.loss),
        a.ids,
        a.labels,
        "loss",
        "hard to fit (often mislabeled or atypical)",
        True,
        normalize,
        epochs=a.epochs,
    )


def confidence(
    source: Source,
    ids: Any = None,
    epochs: Sequence[EpochKey] | None = None,
    normalize: str | None = None,
) -> SelfInfluence:
    """Data-map confidence: mean probability of the label over epochs. **High = easy to learn**;
    low = hard to learn (mislabeled examples sit at low confidence and low variability)."""
    a = _arrays(source, ids, epochs)
    return make_score(
        _nanmean(a.correct_prob),
        a.ids,
        a.labels,
        "confidence",
        "easy to learn",
        False,
        normalize,
        epochs=a.epochs,
    )


def variability(
    source: Source,
    ids: Any = None,
    epochs: Sequence[EpochKey] | None = None,
    normalize: str | None = None,
) -> SelfInfluence:
    """Data-map variability: population standard deviation over epochs of the label probability.
    **High = ambiguous** (the model keeps changing its mind); low = consistently easy or hard."""
    a = _arrays(source, ids, epochs)
    p = a.correct_prob
    mean = _nanmean(p)
    values = np.sqrt(_nanmean((p - mean[:, None]) ** 2))
    return make_score(
        values,
        a.ids,
        a.labels,
        "variability",
        "ambiguous (prediction changes across epochs)",
        True,
        normalize,
        epochs=a.epochs,
    )


def correctness(
    source: Source,
    ids: Any = None,
    epochs: Sequence[EpochKey] | None = None,
    normalize: str | None = None,
) -> SelfInfluence:
    """Data-map correctness: fraction of epochs in which the prediction was right.
    **High = easy**."""
    a = _arrays(source, ids, epochs)
    return make_score(
        _nanmean(a.correct),
        a.ids,
        a.labels,
        "correctness",
        "easy (usually predicted correctly)",
        False,
        normalize,
        epochs=a.epochs,
    )


def data_map(
    source: Source,
    ids: Any = None,
    epochs: Sequence[EpochKey] | None = None,
    normalize: str | None = None,
) -> dict[str, SelfInfluence]:
    """The data-map coordinates: ``confidence``, ``variability`` and ``correctness``."""
    a = _arrays(source, ids, epochs)
    return {
        "confidence": confidence(a, normalize=normalize),
        "variability": variability(a, normalize=normalize),
        "correctness": correctness(a, normalize=normalize),
    }


# -- EL2N and GraNd (Paul et al., 2021) ------------------------------------------------------------
def el2n(
    sources: Source | Sequence[Source],
    epoch: EpochKey | None = None,
    ids: Any = None,
    normalize: str | None = None,
) -> SelfInfluence:
    """EL2N: ``||p - onehot(y)||_2`` at an early ``epoch`` (default: the first recorded), averaged
    over an ensemble of recorders (e.g. seeds). **High = hard / important to keep**; the highest
    values are often mislabeled examples."""
    arrays, cols = _ensemble(sources, ids, epoch)
    per_member = []
    for a, col in zip(arrays, cols):
        residual = a.probs[:, col].copy()
        residual[np.arange(a.n_examples), a.labels] -= 1.0
        per_member.append(np.linalg.norm(residual, axis=1))
    first = arrays[0]
    return make_score(
        _nanmean(np.stack(per_member, axis=1)),
        first.ids,
        first.labels,
        "el2n",
        "hard (large error early in training)",
        True,
        normalize,
        epochs=[a.epochs[c] for a, c in zip(arrays, cols)],
        n_recorders=len(arrays),
    )


def grand(
    sources: Source | Sequence[Source],
    epoch: EpochKey | None = None,
    ids: Any = None,
    normalize: str | None = None,
) -> SelfInfluence:
    """GraNd: the expected loss-gradient norm at an early ``epoch``, estimated by the recorded
    **last-layer** gradient norm (exact for the final linear layer, see
    :func:`~infscope.dynamics.recorder.last_layer_grad_norm`) averaged over an ensemble of
    recorders. **High = hard / important to keep**."""
    arrays, cols = _ensemble(sources, ids, epoch)
    values = np.stack([a.grad_norm[:, c] for a, c in zip(arrays, cols)], axis=1)
    recorded = np.stack([a.recorded[:, c] for a, c in zip(arrays, cols)], axis=1)
    if recorded.any() and np.isnan(values[recorded]).all():
        raise InputError(
            "no last-layer gradient norms were recorded: watch the final layer "
            "(recorder.watch(model, 'classifier')) or pass features= to record()"
        )
    first = arrays[0]
    return make_score(
        _nanmean(values),
        first.ids,
        first.labels,
        "grand",
        "hard (large loss gradient early in training)",
        True,
        normalize,
        epochs=[a.epochs[c] for a, c in zip(arrays, cols)],
        n_recorders=len(arrays),
        approximation="last-layer gradient norm",
    )


# -- forgetting events (Toneva et al., 2019) and AUM (Pleiss et al., 2020) -------------------------
def forgetting_events(
    source: Source,
    ids: Any = None,
    epochs: Sequence[EpochKey] | None = None,
    never_learned: float | None = None,
    normalize: str | None = None,
) -> SelfInfluence:
    """Number of forgetting events: transitions from correct to incorrect between consecutive
    recorded epochs (epochs in which an example is missing are skipped). Examples never predicted
    correctly get ``never_learned`` (default: the number of epochs, as in Toneva et al., who rank
    them above every forgotten example). **High = hard / forgettable**; 0 with at least one correct
    epoch = unforgettable."""
    a = _arrays(source, ids, epochs)
    correct = a.correct
    events = np.zeros(a.n_examples)
    previous = np.full(a.n_examples, np.nan)
    for col in range(a.n_epochs):
        current = correct[:, col]
        present = ~np.isnan(current)
        events += present & (previous == 1.0) & (current == 0.0)
        previous = np.where(present, current, previous)
    fill = float(a.n_epochs if never_learned is None else never_learned)
    any_record = a.recorded.any(axis=1)
    never = any_record & (np.nansum(np.where(np.isnan(correct), 0.0, correct), axis=1) == 0)
    values = np.where(never, fill, events)
    values = np.where(any_record, values, np.nan)
    return make_score(
        values,
        a.ids,
        a.labels,
        "forgetting_events",
        "hard (often forgotten, or never learned)",
        True,
        normalize,
        epochs=a.epochs,
        never_learned=fill,
    )


def aum(
    source: Source,
    ids: Any = None,
    epochs: Sequence[EpochKey] | None = None,
    normalize: str | None = None,
) -> SelfInfluence:
    """Area under the margin (Pleiss et al., 2020): mean over epochs of ``z_y - max_{c != y} z_c``.
    **High = easy, confidently correct; low (especially negative) = likely mislabeled.**"""
    a = _arrays(source, ids, epochs)
    return make_score(
        _nanmean(a.margin),
        a.ids,
        a.labels,
        "aum",
        "easy (large margin); low or negative = likely mislabeled",
        False,
        normalize,
        epochs=a.epochs,
    )


# -- self-influence from the attribution estimators --------------------------------------------------
def self_influence_score(
    estimator: Any, labels: Any = None, normalize: str | None = None
) -> SelfInfluence:
    """A fitted :class:`~infscope.attribution.Estimator`'s self-influence as a dynamics-style score
    (**high = unusual / memorised; mislabeled examples rank high**), optionally class-normalised
    (``labels`` aligned with the estimator's training ids)."""
    score = estimator.self_influence()
    metadata = {
        **score.metadata,
        "score": "self_influence",
        "high_means": "unusual or memorised (mislabeled examples rank high)",
        "higher_is_harder": True,
        "class_normalized": None,
    }
    score = SelfInfluence(
        score.values.astype(np.float64), list(score.train_ids), score.method, metadata
    )
    if normalize is None:
        return score
    if labels is None:
        raise InputError("class normalisation needs the labels of the training examples")
    return class_normalize(score, labels, normalize)


#: Scores computed from a recorder alone, by name (VoG and self-influence need more inputs).
SCORES: dict[str, Callable[..., SelfInfluence]] = {
    "loss": mean_loss,
    "confidence": confidence,
    "variability": variability,
    "correctness": correctness,
    "el2n": el2n,
    "grand": grand,
    "forgetting_events": forgetting_events,
    "aum": aum,
}


def compute_score(name: str, source: Any, **kwargs: Any) -> SelfInfluence:
    """``SCORES[name](source, **kwargs)`` with a clear error for unknown names."""
    if name not in SCORES:
        raise InputError(f"unknown dynamics score {name!r}; choose one of {sorted(SCORES)}")
    return SCORES[name](source, **kwargs)
