"""Targeted selection by similarity to a target set in a feature space (sentence embeddings, or
gradient features): the plain baseline and distribution matching over clusters.

* :class:`TargetSimilarity` ranks candidates by cosine similarity to the targets (mean over the
  target points, or the max) and takes the top ``k``: the strong cheap baseline a user tries
  first with embeddings.
* :class:`ClusterMatch` clusters the candidates (k-means on unit vectors), reads the share of the
  target points that falls into each cluster and gives each cluster that share of the budget,
  drawn uniformly inside it; what the target clusters cannot hold goes to the remaining candidates
  most similar to the targets. It matches the target *distribution* rather than its mode, so the
  picks cover every part of the target (every intent of a 77-way task, every topic) instead of
  the few regions closest to the targets' mean, and no label or task tag is read.
"""

from __future__ import annotations

import numpy as np

from infscope.errors import InputError
from infscope.selection.balance import BalanceArg, balance_option
from infscope.selection.bandit import cluster_features
from infscope.selection.base import Pool, Selection, Selector
from infscope.selection.basic import _ranked, ranked_selection
from infscope.selection.label_noise import unit_rows as _unit


def target_similarity(
    features: np.ndarray, target_features: np.ndarray, aggregate: str = "mean"
) -> np.ndarray:
    """``[n]`` cosine similarity of each candidate to the target points: their mean, or the
    largest (``aggregate="max"``: similarity to the nearest target point)."""
    if aggregate not in ("mean", "max"):
        raise InputError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
    if len(target_features) == 0:
        raise InputError("target_features is empty: give at least one target point")
    cand, targ = _unit(features), _unit(target_features)
    if aggregate == "mean":
        return cand @ targ.mean(axis=0)
    return np.max(cand @ targ.T, axis=1)


class TargetSimilarity(Selector):
    """The ``k`` candidates most similar to the targets (cosine of ``pool.features`` to
    ``pool.target_features``; ``aggregate`` ``"mean"`` over the target points or ``"max"``),
    under a label balance by default when the pool has a ``label`` tag."""

    name = "similarity"
    requires = ("features", "target_features")

    def __init__(self, aggregate: str = "mean", balance: BalanceArg = True, seed: int = 0) -> None:
        super().__init__(seed)
        if aggregate not in ("mean", "max"):
            raise InputError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
        self.aggregate = aggregate
        self.balance = balance_option(balance)

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        assert pool.features is not None and pool.target_features is not None
        sim = target_similarity(pool.features, pool.target_features, self.aggregate)
        return ranked_selection(
            self,
            pool,
            _ranked(sim, rng),
            k,
            self.balance,
            lambda i, r: f"{self.aggregate} cosine to the targets {sim[i]:.3f} (rank {r + 1})",
        )


def proportional_quotas(shares: np.ndarray, sizes: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` over groups in proportion to ``shares`` (largest remainders), none above its
    ``sizes``; what a full group cannot take goes to the others by their shares. Groups with
    share 0 get nothing, so the quotas may sum to less than ``k`` (at most ``sizes[shares > 0]``
    in all)."""
    quota = np.zeros(len(sizes), dtype=np.int64)
    active = (shares > 0) & (sizes > 0)
    left = k
    while left > 0 and active.any():
        weight = np.where(active, shares, 0.0)
        exact = left * weight / weight.sum()
        want = np.floor(exact).astype(np.int64)
        for g in np.argsort(-(exact - want), kind="stable")[: left - want.sum()]:
            want[g] += 1
        add = np.minimum(want, sizes - quota)
        quota += add
        left -= int(add.sum())
        active &= quota < sizes
    return quota


class ClusterMatch(Selector):
    """Match the targets' distribution over ``n_clusters`` k-means clusters of the candidates.

    Each target point goes to its nearest cluster centre (cosine); each cluster gets the share
    of the budget that its share of the targets says (:func:`proportional_quotas`), filled with a
    uniform random draw from its members (``within="random"``) or with its members most similar
    to the targets (``within="similar"``). Budget the target clusters cannot hold goes to the
    other candidates most similar to the targets (mean cosine). ``info`` holds the number of
    clusters with targets and how many picks came from the similarity fill.
    """

    name = "cluster-match"
    requires = ("features", "target_features")

    def __init__(self, n_clusters: int = 20, within: str = "random", seed: int = 0) -> None:
        super().__init__(seed)
        if n_clusters < 1:
            raise InputError(f"n_clusters must be positive, got {n_clusters}")
        if within not in ("random", "similar"):
            raise InputError(f"within must be 'random' or 'similar', got {within!r}")
        self.n_clusters = int(n_clusters)
        self.within = within

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        assert pool.features is not None and pool.target_features is not None
        if len(pool.target_features) == 0:
            raise InputError("target_features is empty: give at least one target point")
        clusters = cluster_features(pool.features, self.n_clusters, self.seed)
        n_arms = int(clusters.max()) + 1
        unit = _unit(pool.features)
        centres = _unit(np.stack([unit[clusters == c].mean(axis=0) for c in range(n_arms)]))
        home = np.argmax(_unit(pool.target_features) @ centres.T, axis=1)
        shares = np.bincount(home, minlength=n_arms) / len(home)
        sizes = np.bincount(clusters, minlength=n_arms)
        quota = proportional_quotas(shares, sizes, k)
        sim = target_similarity(pool.features, pool.target_features)
        picks: list[int] = []
        reasons: list[str] = []
        for c in np.flatnonzero(quota):
            members = np.flatnonzero(clusters == c)
            if self.within == "random":
                chosen = rng.choice(members, int(quota[c]), replace=False)
            else:
                chosen = members[_ranked(sim[members], rng)[: quota[c]]]
            picks += chosen.tolist()
            note = (
                f"cluster {c}: {shares[c]:.0%} of the targets, {sizes[c] / len(pool):.1%} of the "
                f"pool (quota {quota[c]}, {self.within} within)"
            )
            reasons += [note] * len(chosen)
        fill = k - len(picks)
        if fill:
            taken = np.zeros(len(pool), dtype=bool)
            taken[picks] = True
            rest = _ranked(np.where(taken, -np.inf, sim), rng)[:fill]
            picks += rest.tolist()
            reasons += [f"beyond the target clusters: mean cosine {sim[i]:.3f}" for i in rest]
        return self._selection(
            pool,
            picks,
            reasons,
            n_clusters=n_arms,
            target_clusters=int(np.count_nonzero(shares)),
            similarity_fill=fill,
        )
