"""Influence on a noisy pool: does a candidate's *label* pull the model toward its targets or away?

An embedding says which candidates resemble the targets; it cannot say whether a candidate's
label agrees with them. A gradient can: a mislabelled row's training gradient points against the
gradients of the correctly labelled targets it resembles, so its influence on them is negative.

* :func:`pool_alignment` — each candidate's mean influence (``pool.influence``, infscope's sign:
  positive helps) on the ``neighbours`` targets nearest to it in ``pool.features``
  (:func:`~infscope.selection.label_noise.target_alignment`): its pull on the part of the target
  it would serve, not on unrelated targets where it says nothing.
* :class:`TargetAligned` (``aligned-match``) — reject the candidates whose alignment is below
  ``threshold`` (0: they pull against their targets), then select from the rest with a label-blind
  selector (:class:`~infscope.selection.ClusterMatch` by default: coverage of the target).
* :func:`estimate_noise` — the share of a selection that pulls against its targets, next to the
  pool's share: the estimated label noise in what was picked (``Selection.summary`` and
  :func:`~infscope.selection.diagnose` report it). It is only as good as the warm-up model whose
  gradients it reads: on a clean pool the share is not zero — correctly labelled rows that the
  model gets wrong, or whose nearest targets carry another label, pull against them too — so
  read it against the pool's share and against a clean reference where one exists. (With a
  warm-up model at 36–51% accuracy on the multi-task benchmark it barely separates noisy from
  clean pools; see the selection benchmarks.)
"""

from __future__ import annotations

import numpy as np

from infscope.errors import InputError
from infscope.selection.base import Pool, Selection, Selector
from infscope.selection.label_noise import NoiseEstimate, noise_in_picks, target_alignment
from infscope.selection.similarity import ClusterMatch


def pool_alignment(pool: Pool, neighbours: int = 10) -> np.ndarray | None:
    """:func:`target_alignment` of a pool's candidates, or None when the pool lacks the
    influence matrix, the features or the target features, or when the influence's query rows
    are not the target feature rows (then no query has a place in the feature space)."""
    if pool.influence is None or pool.features is None or pool.target_features is None:
        return None
    if len(pool.target_features) != pool.influence.shape[0]:
        return None
    return target_alignment(pool.influence, pool.features, pool.target_features, neighbours)


def estimate_noise(pool: Pool, indices: np.ndarray, neighbours: int = 10) -> NoiseEstimate | None:
    """The :class:`~infscope.selection.label_noise.NoiseEstimate` of the picks ``indices`` of
    ``pool`` (:func:`~infscope.selection.label_noise.noise_in_picks` of its influence, features
    and target features)."""
    return noise_in_picks(pool.influence, pool.features, pool.target_features, indices, neighbours)


class TargetAligned(Selector):
    """Reject the candidates that pull against the targets, then select label-blind.

    A candidate is eligible when its :func:`target_alignment` (mean influence on its
    ``neighbours`` nearest targets in ``pool.features``; the influence's query rows must be the
    target feature rows) is at least ``threshold``; ``within``
    (default :class:`ClusterMatch` with ``n_clusters``, seeded like this selector) selects the
    budget from the eligible ones. When fewer than the budget are eligible, all are taken and the
    best-aligned rejected ones fill the rest. ``info`` holds the number rejected and the share of
    the budget that had to come from them.
    """

    name = "aligned-match"
    requires = ("influence", "features", "target_features")

    def __init__(
        self,
        neighbours: int = 10,
        threshold: float = 0.0,
        n_clusters: int = 20,
        within: Selector | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if neighbours < 1:
            raise InputError(f"neighbours must be at least 1, got {neighbours}")
        if within is not None and not isinstance(within, Selector):
            raise InputError(f"within must be a Selector, got {type(within).__name__}")
        self.neighbours = int(neighbours)
        self.threshold = float(threshold)
        self.within = within or ClusterMatch(n_clusters=n_clusters, seed=seed)

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        alignment = pool_alignment(pool, self.neighbours)
        if alignment is None:
            raise InputError(
                f"{self.name} needs the target features of the influence's queries: "
                f"{pool.influence.shape[0]} queries but {len(pool.target_features)} target "
                "feature rows"
            )
        eligible = np.flatnonzero(alignment >= self.threshold)
        if len(eligible) <= k:
            rejected = np.setdiff1d(np.arange(len(pool)), eligible)
            fill = rejected[np.lexsort((rng.permutation(len(rejected)), -alignment[rejected]))]
            picks = np.concatenate([eligible, fill[: k - len(eligible)]])
            reasons = [f"target alignment {alignment[i]:.3g}" for i in picks]
        else:
            inner = self.within.select(pool.subset(eligible), k)
            picks = eligible[inner.indices]
            reasons = [
                f"{reason}; target alignment {alignment[i]:.3g}"
                for i, reason in zip(picks, inner.reasons or [])
            ]
        n_rejected = len(pool) - len(eligible)
        return self._selection(
            pool,
            picks,
            reasons,
            within=self.within.name,
            rejected=n_rejected,
            rejected_share=n_rejected / len(pool),
            budget_from_rejected=max(0, k - len(eligible)) / k,
        )
