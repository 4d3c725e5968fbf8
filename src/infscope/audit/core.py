"""``audit``: rank the training examples by how likely their label is wrong, and explain each.

Evidence, each optional but at least one source of class probabilities:

1. **out-of-fold probabilities** — given (``pred_probs``) or computed by K-fold retraining through
   ``fit_predict`` (confident-learning style; see :mod:`infscope.audit.kfold`);
2. **out-of-fold training dynamics** — the held-out examples' probabilities after every epoch of
   their fold's training, averaged (less shaped by the noise the model memorises late);
3. **neighbour votes** — the similarity-weighted labels of each example's nearest other examples
   (by the model's representations, ``features``, or any train x train ``similarity`` such as an
   influence matrix): the training examples that pull it towards each label.

These class distributions are mixed with weights that maximise the likelihood of the given labels
(each is out-of-sample for the example it scores), and the suspicion of example ``i`` with label
``y`` is ``((1 - q_y) + beta * max_{k != y} q_k) / (1 + beta)``. ``beta`` follows the structure
of the estimated noise: 0 (rank by the label's probability, best when flips are spread over the
classes) up to 1 (rank by the margin to the best alternative, best when flips go to a confusable
class), from :func:`~infscope.audit.evidence.noise_structure` — the concentration of the
estimated flips beyond what uniform flips of the same per-class counts reach by chance, so that a
few flips per class (which chance alone concentrates) do not switch the ranking. Checks of the
evidence (:mod:`infscope.audit.diagnostics`: no signal in the model, constant features, classes
too small to check) become warnings, in the result and as :class:`~infscope.errors.InfscopeWarning`
s. The suggested label is the best
alternative; the supporting examples are the nearest neighbours carrying it, the contradicting
ones the nearest carrying the given label. Training-dynamics scores of the folds' training runs
(AUM, forgetting events, EL2N) and self-influence are reported beside the suspicion, per example,
as evidence a reader can sort by; on the benchmark they did not improve the ranking
(docs/benchmarks.md). Exact and near duplicates, and those with conflicting labels, are grouped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

import infscope
from infscope.attribution.scores import SelfInfluence
from infscope.audit.diagnostics import check_evidence
from infscope.audit.duplicates import find_duplicates
from infscope.audit.evidence import (
    Neighbours,
    _labels,
    check_features,
    check_probs,
    estimated_errors,
    label_suspicion,
    neighbour_votes,
    noise_structure,
    stack_weights,
)
from infscope.audit.kfold import FitPredict, OutOfFold, cross_validate
from infscope.audit.result import AuditResult
from infscope.dynamics import DynamicsRecorder, aum, el2n, forgetting_events
from infscope.errors import InfscopeWarning, InputError


@dataclass(frozen=True)
class AuditConfig:
    """``folds``/``seed``: K-fold retraining; ``neighbours``: votes per example (``"auto"`` picks
    by likelihood); ``explain``: supporting/contradicting examples kept per example;
    ``near_duplicate``: cosine similarity from which two examples are near duplicates; ``beta``:
    fixed weight of the best alternative (None: from the noise structure)."""

    folds: int = 5
    seed: int = 0
    neighbours: int | str = "auto"
    explain: int = 3
    near_duplicate: float = 0.95
    beta: float | None = None

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise InputError(f"folds must be at least 2, got {self.folds}")
        auto = self.neighbours == "auto"
        if not auto and (
            not isinstance(self.neighbours, int)
            or isinstance(self.neighbours, bool)
            or self.neighbours < 1
        ):
            raise InputError(
                f"neighbours must be a positive number or 'auto', got {self.neighbours!r}"
            )
        if self.explain < 0 or not 0 < self.near_duplicate <= 1:
            raise InputError(
                f"explain must be >= 0 and near_duplicate in (0, 1], got {self.explain} and "
                f"{self.near_duplicate}"
            )
        if self.beta is not None and not self.beta >= 0:
            raise InputError(f"beta must be >= 0 (or None: from the noise), got {self.beta}")


def _per_id(values: dict[str, float], ids: Sequence[str]) -> np.ndarray:
    return np.array([values.get(i, np.nan) for i in ids], dtype=np.float64)


def dynamics_evidence(
    recorders: Sequence[DynamicsRecorder], ids: Sequence[str]
) -> dict[str, np.ndarray]:
    """AUM, forgetting events and EL2N (at the second recorded epoch, or the only one) of each
    example, averaged over the runs that trained on it (NaN where none did)."""
    sums: dict[str, dict[str, list[float]]] = {"aum": {}, "forgetting_events": {}, "el2n": {}}
    for recorder in recorders:
        epoch = recorder.epochs[min(1, len(recorder.epochs) - 1)]
        for name, score in (
            ("aum", aum(recorder)),
            ("forgetting_events", forgetting_events(recorder)),
            ("el2n", el2n(recorder, epoch=epoch)),
        ):
            for i, v in zip(score.train_ids, score.values.tolist()):
                sums[name].setdefault(i, []).append(v)
    return {
        name: _per_id({i: float(np.nanmean(v)) for i, v in by_id.items()}, ids)
        for name, by_id in sums.items()
    }


def _explain(
    neighbours: Neighbours | None, labels: np.ndarray, targets: np.ndarray, m: int
) -> np.ndarray:
    """Per example, the positions of its first ``m`` neighbours whose label is its target (-1 pad)."""
    out = np.full((labels.size, m), -1, dtype=np.int64)
    if neighbours is None or m == 0:
        return out
    match = labels[neighbours.index] == targets[:, None]
    for i in np.flatnonzero(match.any(1)):
        found = neighbours.index[i, match[i]][:m]
        out[i, : found.size] = found
    return out


def audit(
    labels: np.ndarray | Sequence[int],
    *,
    ids: Sequence[str] | None = None,
    n_classes: int | None = None,
    pred_probs: np.ndarray | None = None,
    fit_predict: FitPredict | None = None,
    out_of_fold: OutOfFold | None = None,
    features: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
    texts: Sequence[str] | None = None,
    train_dynamics: Sequence[DynamicsRecorder] = (),
    self_influence: SelfInfluence | None = None,
    class_names: Sequence[str] | None = None,
    config: AuditConfig = AuditConfig(),
) -> AuditResult:
    """Audit the labels of ``n`` training examples (see the module docstring).

    Give at most one of ``pred_probs`` (out-of-fold probabilities ``[n, C]``), ``fit_predict``
    (K-fold retraining is run) or ``out_of_fold`` (a finished :func:`cross_validate`), and/or
    ``features`` ``[n, d]`` / ``similarity`` ``[n, n]`` for neighbour votes. ``train_dynamics``
    adds recordings of other training runs to those of the folds; ``self_influence`` must score
    the same ids.
    """
    y = _labels(labels)
    n = y.size
    if n < 2:
        raise InputError("an audit needs at least 2 examples")
    ids = [str(i) for i in (ids if ids is not None else range(n))]
    if len(ids) != n or len(set(ids)) != n:
        raise InputError(f"give {n} unique ids, one per label")
    given = [x is not None for x in (pred_probs, fit_predict, out_of_fold)]
    if sum(given) > 1:
        raise InputError("give at most one of pred_probs, fit_predict and out_of_fold")
    if not any(given) and features is None and similarity is None:
        raise InputError("nothing to audit with: give pred_probs, fit_predict or features")
    if n_classes is None:
        if pred_probs is not None:
            n_classes = int(np.shape(pred_probs)[1])
        elif class_names is not None:
            n_classes = len(class_names)
        else:
            n_classes = int(y.max()) + 1
    y = _labels(y, n_classes)
    if class_names is not None and len(class_names) != n_classes:
        raise InputError(f"{len(class_names)} class names for {n_classes} classes")
    if features is not None:
        features = check_features(features, n, ids)
    if fit_predict is not None:
        out_of_fold = cross_validate(fit_predict, y, n_classes, config.folds, config.seed)
    if pred_probs is not None:
        out_of_fold = OutOfFold(check_probs(pred_probs, n), np.full(n, -1))

    sources: dict[str, np.ndarray] = {}
    evidence: dict[str, np.ndarray] = {}
    if out_of_fold is not None:
        if out_of_fold.probs.shape != (n, n_classes):
            raise InputError(
                f"out-of-fold probabilities {out_of_fold.probs.shape}, expected {(n, n_classes)}"
            )
        sources["out_of_fold"] = out_of_fold.probs
        evidence["out_of_fold_label_probability"] = out_of_fold.probs[np.arange(n), y]
        epoch_mean = out_of_fold.epoch_mean_probs(ids)
        if epoch_mean is not None:
            sources["out_of_fold_epoch_mean"] = epoch_mean
    neighbours = None
    if features is not None or similarity is not None:
        neighbours = neighbour_votes(y, n_classes, features, similarity, config.neighbours)
        sources["neighbour_votes"] = neighbours.probs
        evidence["neighbour_label_share"] = neighbours.probs[np.arange(n), y]
    names = list(sources)
    weights = stack_weights([sources[s] for s in names], y)
    q = sum(w * sources[s] for w, s in zip(weights, names))
    reference = sources.get("out_of_fold", q)
    structure = noise_structure(reference, y, seed=config.seed)
    beta = structure.beta if config.beta is None else float(config.beta)
    suspicion, suggested, support = label_suspicion(q, y, beta)
    n_errors = estimated_errors(q, y)
    names_of = None if class_names is None else [str(c) for c in class_names]
    check = check_evidence(q, y, n_classes, n_errors, features, names_of)
    for message in check.warnings:
        warnings.warn(message, InfscopeWarning, stacklevel=2)
    flagged = np.zeros(n, dtype=bool)
    flagged[np.argsort(-suspicion, kind="stable")[:n_errors]] = True

    recorders = list(train_dynamics) + (out_of_fold.train if out_of_fold is not None else [])
    if recorders:
        evidence.update(dynamics_evidence(recorders, ids))
    if self_influence is not None:
        if sorted(self_influence.train_ids) != sorted(ids):
            raise InputError("self_influence scores other examples than the audit's ids")
        evidence["self_influence"] = _per_id(
            dict(zip(self_influence.train_ids, self_influence.values.tolist())), ids
        )
    duplicates = find_duplicates(
        y,
        texts,
        (neighbours.index, neighbours.similarity) if features is not None and neighbours else None,
        config.near_duplicate,
    )
    info = {
        "infscope_version": infscope.__version__,
        "config": asdict(config),
        "sources": dict(zip(names, map(float, weights))),
        "neighbours": None if neighbours is None else neighbours.k,
        "neighbour_space": None
        if neighbours is None
        else ("features (cosine)" if features is not None else "given similarity"),
        "noise_concentration": structure.concentration,
        "noise_structure": structure.to_dict(),
        "beta": beta,
        "beta_source": "noise structure" if config.beta is None else "config",
        "evidence_check": check.to_dict(),
        "estimated_label_errors": n_errors,
        "folds": config.folds if fit_predict is not None else None,
        "n_classes": n_classes,
    }
    return AuditResult(
        ids=ids,
        labels=y,
        suspicion=suspicion,
        suggested=suggested,
        support=support,
        probs=q,
        flagged=flagged,
        supporting=_explain(neighbours, y, suggested, config.explain),
        contradicting=_explain(neighbours, y, y, config.explain),
        evidence=evidence,
        duplicates=duplicates,
        class_names=names_of,
        texts=None if texts is None else [str(t) for t in texts],
        info=info,
        warnings=list(check.warnings),
    )
