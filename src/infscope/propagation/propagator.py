"""Permissive label propagation: each unlabelled example takes the labels of only the context
examples that were *influential* on its prediction (after "Permissive Information-Flow Analysis
for LLMs": a kNN-style output carries the labels of its influential inputs, not of all of them).

One round: fit an L2 softmax regression on the context (the labelled examples and those propagated
in earlier rounds, weighted by their confidence), build the closed-form influence graph of
:mod:`infscope.propagation.influence_graph` from the context to the pool, and let each pool
example's ``top_m`` most supportive context examples vote for their labels, weighted by their
support. The confidence of a propagated label is its share of that vote. Self-training: after
each of ``rounds`` rounds the most confident ``grow`` share of each predicted class joins the
context with its label fixed; the last round labels the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infscope.curvature.linalg import unit_rows
from infscope.errors import InputError
from infscope.propagation.influence_graph import (
    CURVATURES,
    permissive_vote,
    support_directions,
    support_matrix,
)
from infscope.propagation.softmax import SoftmaxRegression

UNLABELLED = -1


@dataclass(frozen=True)
class PropagationConfig:
    """Settings of :class:`InfluencePropagation`.

    Args:
        l2: ``λ`` of the softmax regression (mean-loss scale; sets how far influence reaches).
        curvature: ``"kfac"``, ``"exact"`` or ``"identity"`` (see the influence-graph module).
        top_m: influential context examples kept per prediction (the permissive context); 100
            beat 10 at 10+ labels per class on every task of bench/label_propagation.py.
        min_share: keep only context whose support reaches this share of the largest.
        normalize: scale every feature row to unit norm first (cosine geometry, as sentence
            embeddings have); the influence weights assume features of that scale.
        rounds: self-training rounds that grow the context before the final one (0 = none).
        grow: share of each predicted class's pool added to the context per round.
        max_iter: L-BFGS iterations per fit.
        block: pool rows per block of the influence graph (bounds memory).
    """

    l2: float = 1e-3
    curvature: str = "kfac"
    top_m: int = 100
    min_share: float = 0.0
    normalize: bool = True
    rounds: int = 0
    grow: float = 0.3
    max_iter: int = 500
    block: int = 2048

    def __post_init__(self) -> None:
        if not (np.isfinite(self.l2) and self.l2 > 0):
            raise InputError(f"l2 must be a positive finite number, got {self.l2}")
        if self.curvature not in CURVATURES:
            raise InputError(f"unknown curvature {self.curvature!r}; choose from {CURVATURES}")
        if self.top_m < 1 or self.rounds < 0 or self.max_iter < 1 or self.block < 1:
            raise InputError("top_m, max_iter and block must be positive and rounds >= 0")
        if not 0.0 <= self.min_share <= 1.0 or not 0.0 < self.grow <= 1.0:
            raise InputError("min_share must lie in [0, 1] and grow in (0, 1]")


def _check_inputs(features, labels) -> tuple[np.ndarray, np.ndarray, int]:
    x = np.asarray(features)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"features must be a numeric [n, d] array, got {x.dtype} {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x).all(1))
    if bad.size:
        raise InputError(
            f"features of {bad.size} example(s) hold NaN or inf, e.g. rows {bad[:5].tolist()}"
        )
    y = np.asarray(labels)
    if y.ndim != 1 or y.size != len(x) or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise InputError(
            f"labels must be {len(x)} integer class indices (-1 = unlabelled), got {y.dtype} {y.shape}"
        )
    if (y < UNLABELLED).any():
        raise InputError("labels must be class indices >= 0, or -1 for an unlabelled example")
    n_classes = int(y.max()) + 1 if y.size else 0
    if n_classes < 2:
        raise InputError("propagation needs labelled examples of at least 2 classes")
    missing = sorted(set(range(n_classes)) - set(y[y >= 0].tolist()))
    if missing:
        raise InputError(
            f"classes {missing} have no labelled example (labels must be 0..{n_classes - 1})"
        )
    return x.astype(np.float64), y.astype(np.int64), n_classes


def _unit_rows(x: np.ndarray) -> np.ndarray:
    zero = np.flatnonzero(np.linalg.norm(x, axis=1) == 0)
    if zero.size:
        raise InputError(
            f"{zero.size} feature row(s) are all zeros and cannot be normalised, e.g. rows "
            f"{zero[:5].tolist()} (or pass normalize=False)"
        )
    return unit_rows(x)


class InfluencePropagation:
    """Permissive, influence-weighted label propagation (module docstring); sklearn-like.

    After :meth:`fit`: ``transduction_`` (a label for every example), ``label_distributions_``
    ``[n, C]``, ``confidence_`` (the winning label's vote share; 1 for given labels), ``support_``
    ``[n, top_m]`` (input rows of the context examples behind each label, most supportive first,
    -1 = none; a labelled example supports itself), ``support_influence_`` (their support
    values), ``round_`` (0 = given label, ``r`` = propagated in round ``r``), ``model_`` (the last
    softmax regression) and ``ids_``."""

    def __init__(self, config: PropagationConfig = PropagationConfig()) -> None:
        self.config = config

    def fit(
        self,
        features: np.ndarray,
        labels: np.ndarray | Sequence[int],
        ids: Sequence[str] | None = None,
    ) -> InfluencePropagation:
        """Propagate ``labels`` (-1 = unlabelled) over ``features`` ``[n, d]`` (embeddings or
        gradient features). Neither input is changed."""
        x, y, n_classes = _check_inputs(features, labels)
        if ids is not None and len(ids) != len(y):
            raise InputError(f"{len(ids)} ids for {len(y)} examples")
        cfg = self.config
        n = len(y)
        labelled = y >= 0
        self.n_classes_ = n_classes
        self.ids_ = None if ids is None else [str(i) for i in ids]
        self.transduction_ = y.copy()
        self.label_distributions_ = np.zeros((n, n_classes))
        self.label_distributions_[labelled, y[labelled]] = 1.0
        self.confidence_ = labelled.astype(np.float64)
        self.support_ = np.full((n, cfg.top_m), -1, dtype=np.int64)
        self.support_[labelled, 0] = np.flatnonzero(labelled)
        self.support_influence_ = np.zeros((n, cfg.top_m))
        self.round_ = np.where(labelled, 0, -1)
        self._x = _unit_rows(x) if cfg.normalize else x
        model = None
        for round_number in range(1, cfg.rounds + 2):
            context = np.flatnonzero(self.round_ >= 0)
            pool = np.flatnonzero(self.round_ < 0)
            if not pool.size and model is not None:
                break  # everything is labelled: the context's fit is the final model
            model = SoftmaxRegression.fit(
                self._x[context],
                self.transduction_[context],
                n_classes,
                cfg.l2,
                sample_weight=self.confidence_[context],
                max_iter=cfg.max_iter,
                start=None if model is None else model.weights,
            )
            self._context, self._model = context, model
            if not pool.size:
                break
            dist, support, values = self._vote(self._x[pool])
            accept = (
                self._accepted(dist) if round_number <= cfg.rounds else np.ones(pool.size, bool)
            )
            rows = pool[accept]
            self.label_distributions_[rows] = dist[accept]
            self.transduction_[rows] = dist[accept].argmax(1)
            self.confidence_[rows] = dist[accept].max(1)
            self.support_[rows, : support.shape[1]] = support[accept]
            self.support_influence_[rows, : values.shape[1]] = values[accept]
            self.round_[rows] = round_number
        self.model_ = self._model
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Label distributions ``[n, C]`` of new examples from the final round's context."""
        if not hasattr(self, "model_"):
            raise InputError("call fit before predict_proba")
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self._x.shape[1] or not np.isfinite(x).all():
            raise InputError(f"features must be finite [n, {self._x.shape[1]}], got {x.shape}")
        return self._vote(_unit_rows(x) if self.config.normalize else x)[0]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The most voted label of each new example."""
        return self.predict_proba(features).argmax(1)

    def supporting_ids(self, index: int) -> list[str]:
        """The ids (or row numbers, without ids) of the context examples behind a label."""
        rows = [int(r) for r in self.support_[index] if r >= 0]
        return [self.ids_[r] for r in rows] if self.ids_ is not None else [str(r) for r in rows]

    def _vote(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Permissive votes of the current context for ``queries``; the support of the winning
        label as input rows (context that voted for another label is left out)."""
        cfg = self.config
        context_labels = self.transduction_[self._context]
        directions = support_directions(
            self._model,
            self._x[self._context],
            context_labels,
            self.confidence_[self._context],
            cfg.curvature,
        )
        parts = [
            permissive_vote(
                support_matrix(queries[s : s + cfg.block], directions),
                context_labels,
                self.n_classes_,
                cfg.top_m,
                cfg.min_share,
            )
            for s in range(0, len(queries), cfg.block)
        ]
        dist, positions, values = (np.concatenate(p) for p in zip(*parts))
        against = context_labels[np.maximum(positions, 0)] != dist.argmax(1)[:, None]
        positions, values = np.where(against, -1, positions), np.where(against, 0.0, values)
        order = np.argsort(positions < 0, axis=1, kind="stable")  # the winner's support first
        positions, values = (
            np.take_along_axis(positions, order, 1),
            np.take_along_axis(values, order, 1),
        )
        rows = np.where(positions >= 0, self._context[np.maximum(positions, 0)], -1)
        return dist, rows, values

    def _accepted(self, dist: np.ndarray) -> np.ndarray:
        """The most confident ``grow`` share (at least one) of each predicted class."""
        predicted, confidence = dist.argmax(1), dist.max(1)
        accept = np.zeros(len(dist), dtype=bool)
        for c in np.unique(predicted):
            members = np.flatnonzero(predicted == c)
            count = max(1, int(round(self.config.grow * members.size)))
            accept[members[np.argsort(-confidence[members], kind="stable")[:count]]] = True
        return accept
