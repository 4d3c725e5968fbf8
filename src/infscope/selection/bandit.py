"""Diverse, influential selection with clusters as bandit arms (after Quad, Zhang et al. 2025).

Scoring every candidate's influence is the expensive part of influence-based selection. Here the
candidates are clustered on their features; each cluster is an arm. A pull scores a small random
probe of the chosen cluster's not-yet-scored candidates (with a user-supplied scoring function, or
by looking up ``pool.scores``), selects the best of the probe and uses the probe's mean score as
the arm's reward. Arms are chosen by an upper confidence bound — high mean influence, plus a bonus
for rarely pulled clusters — so the selection favours influential clusters without collapsing
onto one, and only a fraction of the pool is ever scored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from infscope.errors import InputError
from infscope.selection.base import Pool, Selection, Selector

ScoreFn = Callable[[np.ndarray], np.ndarray]


def cluster_features(features: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means cluster label per candidate (features L2-normalised first: gradient features and
    embeddings are compared by direction)."""
    from sklearn.cluster import KMeans

    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.where(norms > 0, norms, 1.0)
    n_clusters = min(n_clusters, len(features))
    return KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit_predict(unit)


class ClusterBandit(Selector):
    """Cluster candidates (``pool.features``) and select with a UCB bandit over clusters.

    ``score_fn(indices) -> scores`` computes influence (higher = better) for pool positions on
    demand; without it, ``pool.scores`` are looked up (useful to replay a study and to count how
    many scores a run would have needed). Each pull scores ``probe_size`` candidates of the arm
    and selects the best ``ceil(take × probe)`` of them. ``exploration`` scales the UCB bonus
    (rewards are standardised by the spread of all scores seen so far, so it is scale-free).
    ``info["n_scored"]`` says how many candidates were scored.
    """

    name = "cluster-bandit"
    requires = ("features",)

    def __init__(
        self,
        n_clusters: int = 20,
        probe_size: int = 16,
        take: float = 0.5,
        exploration: float = 1.0,
        score_fn: ScoreFn | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if n_clusters < 1 or probe_size < 1:
            raise InputError("n_clusters and probe_size must be positive")
        if not 0 < take <= 1:
            raise InputError(f"take must lie in (0, 1], got {take}")
        if exploration < 0:
            raise InputError(f"exploration must be non-negative, got {exploration}")
        self.n_clusters = n_clusters
        self.probe_size = probe_size
        self.take = take
        self.exploration = exploration
        self.score_fn = score_fn

    def _score(self, pool: Pool, indices: np.ndarray) -> np.ndarray:
        if self.score_fn is None:
            if pool.scores is None:
                raise InputError("cluster-bandit needs score_fn or pool scores to score probes")
            return pool.scores[indices]
        values = np.asarray(self.score_fn(indices), dtype=np.float64)
        if values.shape != (len(indices),) or not np.isfinite(values).all():
            raise InputError(
                f"score_fn returned {values.shape} values for {len(indices)} candidates; "
                "it must return one finite score per index"
            )
        return values

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        assert pool.features is not None
        clusters = cluster_features(pool.features, self.n_clusters, self.seed)
        n_arms = int(clusters.max()) + 1
        # unscored members of each arm, in random order
        queues = [list(rng.permutation(np.flatnonzero(clusters == a))) for a in range(n_arms)]
        pulls = np.zeros(n_arms, dtype=np.int64)
        reward_sum = np.zeros(n_arms)
        seen: list[float] = []
        scored: dict[int, float] = {}
        picks: list[int] = []
        reasons: list[str] = []
        t = 0
        while len(picks) < k:
            open_arms = np.flatnonzero([len(q) > 0 for q in queues])
            if len(open_arms) == 0:  # everything scored: fill with the best scored leftovers
                break
            t += 1
            untried = open_arms[pulls[open_arms] == 0]
            if len(untried):
                arm = int(untried[0])
                ucb = np.inf
            else:
                spread = float(np.std(seen)) or 1.0
                mean = reward_sum[open_arms] / pulls[open_arms] / spread
                bonus = self.exploration * np.sqrt(2 * np.log(t) / pulls[open_arms])
                best = int(np.argmax(mean + bonus))
                arm, ucb = int(open_arms[best]), float(mean[best] + bonus[best])
            probe = np.array(queues[arm][: self.probe_size], dtype=np.int64)
            del queues[arm][: self.probe_size]
            values = self._score(pool, probe)
            scored.update(zip(probe.tolist(), values.tolist()))
            seen.extend(values.tolist())
            pulls[arm] += 1
            reward_sum[arm] += values.mean()
            n_take = min(int(np.ceil(self.take * len(probe))), k - len(picks))
            for j in np.argsort(-values, kind="stable")[:n_take]:
                picks.append(int(probe[j]))
                reasons.append(
                    f"cluster {arm} (pull {pulls[arm]}, UCB {ucb:.3g}): score {values[j]:.4g}, "
                    f"best {int(np.sum(values > values[j])) + 1} of a probe of {len(probe)}"
                )
        if len(picks) < k:
            chosen = set(picks)
            rest = sorted((i for i in scored if i not in chosen), key=lambda i: -scored[i])
            for i in rest[: k - len(picks)]:
                picks.append(i)
                reasons.append(f"best remaining scored candidate (score {scored[i]:.4g})")
        return self._selection(
            pool,
            picks,
            reasons,
            n_scored=len(scored),
            scored_fraction=len(scored) / len(pool),
            n_clusters=n_arms,
            pulls=pulls.tolist(),
        )
