"""Selective annotation: which unlabeled examples to label under a budget, so that in-context
demonstrations retrieved from the labeled set later cover the task well.

Both strategies read ``pool.features`` (``[n, d]`` sentence embeddings) and build a directed
cosine k-nearest-neighbour graph (an edge ``u -> v`` when ``v`` is among ``u``'s ``k`` most similar
other candidates):

* :class:`VoteK` (Su et al. 2023, "Selective Annotation Makes Language Models Better Few-Shot
  Learners"): each candidate collects votes from the candidates that have it as a neighbour,
  discounted for voters already near a selected example; optionally followed by the paper's
  confidence-stratified second stage.
* :class:`IDEAL` (Zhang et al. 2024, "IDEAL: Influence-Driven Selective Annotations"): a subset's
  influence is the expected number of candidates an independent-cascade diffusion from it
  reaches; the subset is grown greedily by marginal influence.

:class:`KMeansCentres` is the cold-start baseline of active learning: k-means with one cluster
per annotation, and the member nearest each centre. It reads the same embeddings and, measured
on four text tasks (`bench/selection_annotation.py`), it is the strongest of the three at 50–100
annotations (vote-k leads at 18).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

import numpy as np

from infscope.errors import InputError
from infscope.selection.base import Pool, Selection, Selector

Confidence = Callable[[np.ndarray, np.ndarray], "np.ndarray | list[float]"]
"""``confidence(selected, candidates)``: the model's confidence on each of ``candidates`` (pool
positions) when prompted with demonstrations drawn from ``selected`` (pool positions, already
to be annotated) — e.g. the mean log-probability of the LM's own prediction. Higher = surer."""


def cosine_knn(features: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` most cosine-similar other rows: ``(neighbours [n, k], similarity [n, k])``,
    most similar first (ties by lower index). Exact, computed in row blocks to bound memory."""
    n = len(features)
    if not 0 <= k <= n - 1:
        raise InputError(f"k={k} neighbours need 0 <= k <= n - 1 = {n - 1}")
    norms = np.linalg.norm(features, axis=1)
    if (norms == 0).any():
        raise InputError(
            f"features row {int(np.argmin(norms))} is all zeros: cosine similarity is undefined"
        )
    unit = features / norms[:, None]
    neighbours = np.empty((n, k), dtype=np.int64)
    similarity = np.empty((n, k))
    if k == 0:
        return neighbours, similarity
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        sim = unit[rows] @ unit.T
        sim[np.arange(len(rows)), rows] = -np.inf  # never one's own neighbour
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top.sort(axis=1)  # so that the stable sort below breaks ties by index
        top_sim = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        neighbours[rows] = np.take_along_axis(top, order, axis=1)
        similarity[rows] = np.take_along_axis(top_sim, order, axis=1)
    return neighbours, similarity


def _positive_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive count, got {value!r}")
    return int(value)


class VoteK(Selector):
    """Vote-k selective annotation (Su et al. 2023).

    Over the cosine ``k``-NN graph, an unselected candidate ``u`` scores
    ``sum_{v unselected, u in kNN(v)} rho ** -c(v)``, where ``c(v)`` counts the selected examples
    among ``v``'s own neighbours: a voter already represented by a selected example counts
    ``rho`` times less, so picks spread over the embedding space while favouring dense regions.
    The top scorer is picked, and the scores updated, until the budget is spent.

    With ``confidence`` (see :data:`Confidence`), the paper's two-stage method runs instead:
    voting picks ``ceil(budget / 10)`` examples; the model, prompted from those, scores its
    confidence on every remaining candidate; the least confident 90% of them (at least one per
    remaining pick) are cut, by confidence, into ``budget - ceil(budget / 10)`` equal buckets, and
    voting picks one example per bucket, least confident bucket first. This skips what the model
    already handles and keeps diversity within every confidence level.

    ``k`` defaults to the paper's 150 and is capped at ``n - 1``; when ``k`` approaches ``n`` every
    candidate votes for nearly every other and the voting loses its diversity, so use a ``k``
    well below the size of the regions the picks should spread over.
    """

    name = "vote-k"
    requires = ("features",)

    def __init__(
        self,
        k: int = 150,
        rho: float = 10.0,
        confidence: Confidence | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.k = _positive_count("k (neighbours)", k)
        if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho > 1):
            raise InputError(f"rho must be a number above 1 (the vote discount), got {rho!r}")
        if confidence is not None and not callable(confidence):
            raise InputError("confidence must be a callable (selected, candidates) -> scores")
        self.rho = float(rho)
        self.confidence = confidence

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        assert pool.features is not None
        n = len(pool)
        knn = min(self.k, n - 1)
        neighbours, _ = cosine_knn(pool.features, knn)
        voting = _Voting(neighbours, self.rho, rng.permutation(n))
        first = k if self.confidence is None else math.ceil(k / 10)
        picks: list[int] = []
        reasons: list[str] = []
        for _ in range(first):
            open_ = np.flatnonzero(~voting.selected)
            pick, score = voting.best(open_)
            picks.append(pick)
            reasons.append(f"vote score {score:.4g} (rank 1 of {len(open_)} unselected)")
            voting.take(pick)
        info: dict = {"k": knn, "rho": self.rho, "first_stage": first}
        if k > first:
            assert self.confidence is not None
            rest = np.flatnonzero(~voting.selected)
            conf = self._confidences(np.asarray(picks, dtype=np.int64), rest)
            by_conf = rest[np.lexsort((voting.tie[rest], conf))]  # least confident first
            conf_of = dict(zip(rest.tolist(), conf.tolist()))
            kept = max(k - first, int(0.9 * len(rest)))
            buckets = np.array_split(by_conf[:kept], k - first)
            for b, bucket in enumerate(buckets):
                pick, score = voting.best(bucket)
                low, high = conf_of[int(bucket[0])], conf_of[int(bucket[-1])]
                picks.append(pick)
                reasons.append(
                    f"vote score {score:.4g}, best of confidence bucket {b + 1}/{len(buckets)} "
                    f"(confidence {low:.4g} .. {high:.4g}; model confidence {conf_of[pick]:.4g})"
                )
                voting.take(pick)
            info.update(buckets=len(buckets), confidence_cutoff=conf_of[int(by_conf[kept - 1])])
        return self._selection(pool, picks, reasons, **info)

    def _confidences(self, selected: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        assert self.confidence is not None
        returned = self.confidence(selected.copy(), candidates.copy())
        try:
            values = np.asarray(returned, dtype=float)
        except (TypeError, ValueError) as err:
            raise InputError(f"confidence must return one number per candidate ({err})") from None
        if values.shape != candidates.shape:
            raise InputError(
                f"confidence returned shape {values.shape} for {len(candidates)} candidates: "
                "give one value per candidate"
            )
        if not np.isfinite(values).all():
            raise InputError("confidence returned NaN or inf for some candidates")
        return values


class _Voting:
    """Vote-k's state: which candidates are selected and, per candidate ``v``, how many selected
    examples are among ``v``'s neighbours (``covered``)."""

    def __init__(self, neighbours: np.ndarray, rho: float, tie: np.ndarray) -> None:
        self.neighbours = neighbours
        self.rho = rho
        self.tie = tie  # a random priority that breaks ties, so that file order never decides
        n = len(neighbours)
        self.selected = np.zeros(n, dtype=bool)
        self.covered = np.zeros(n, dtype=np.int64)

    def scores(self) -> np.ndarray:
        """Every candidate's current vote score (selected voters do not vote)."""
        n, k = self.neighbours.shape
        weight = np.where(self.selected, 0.0, self.rho ** (-self.covered.astype(float)))
        return np.bincount(self.neighbours.ravel(), np.repeat(weight, k), minlength=n)

    def best(self, candidates: np.ndarray) -> tuple[int, float]:
        """The highest-scoring of ``candidates`` (unselected) and its score."""
        score = self.scores()[candidates]
        top = candidates[score == score.max()]
        pick = int(top[np.argmax(self.tie[top])])
        return pick, float(score.max())

    def take(self, pick: int) -> None:
        self.selected[pick] = True
        self.covered += (self.neighbours == pick).any(axis=1)


class KMeansCentres(Selector):
    """One annotation per k-means cluster: the candidate nearest its cluster's centre.

    The embeddings are L2-normalised and clustered into ``budget`` clusters (scikit-learn
    ``KMeans``, ``n_init`` restarts, seeded); each cluster contributes its member most similar to
    its centre, largest cluster first. The picks cover the embedding space in proportion to its
    density, which is what a classifier or a retriever of demonstrations trained on the annotated
    set needs — and, unlike graph voting, it keeps covering small, separate classes at larger
    budgets (banking77's 77 intents in the benchmark).
    """

    name = "kmeans-centres"
    requires = ("features",)

    def __init__(self, n_init: int = 3, seed: int = 0) -> None:
        super().__init__(seed)
        self.n_init = _positive_count("n_init", n_init)

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        from sklearn.cluster import KMeans

        assert pool.features is not None
        features = np.asarray(pool.features, dtype=np.float64)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        unit = features / np.where(norms > 0, norms, 1.0)
        seed = int(rng.integers(2**31 - 1))
        model = KMeans(n_clusters=k, n_init=self.n_init, random_state=seed).fit(unit)
        sizes = np.bincount(model.labels_, minlength=k)
        distances = model.transform(unit)  # [n, k] distance to every centre
        taken = np.zeros(len(unit), dtype=bool)
        picks: list[int] = []
        reasons: list[str] = []
        for cluster in np.lexsort((np.arange(k), -sizes)):  # largest first, ties by index
            order = np.argsort(distances[:, cluster], kind="stable")
            pick = int(order[np.argmax(~taken[order])])  # nearest not yet taken
            taken[pick] = True
            picks.append(pick)
            reasons.append(
                f"nearest to the centre of cluster {int(cluster)} ({int(sizes[cluster])} "
                f"candidates, distance {float(distances[pick, cluster]):.4g})"
            )
        return self._selection(pool, picks, reasons, clusters=k, n_init=self.n_init)


class IDEAL(Selector):
    """IDEAL influence-driven selective annotation (Zhang et al. 2024).

    The graph has an edge ``u -> v`` for each of ``u``'s ``k`` cosine nearest neighbours ``v``,
    weighted by the similarity normalised over ``u``'s neighbours (negative similarities count as
    0), and that weight is the probability that an active ``u`` activates ``v`` in an independent
    cascade (as in the authors' code). A subset's influence is the expected number of candidates
    a cascade from it activates (itself included), estimated from ``n_simulations`` random
    live-edge graphs drawn once from the selector's seed. On fixed draws the estimate is a
    monotone submodular coverage function, so lazy greedy (CELF) selection by marginal influence
    gives exactly the greedy subset, with the usual ``1 - 1/e`` guarantee for that estimate.

    Defaults follow the authors' code (``k=10``); ``n_simulations`` defaults to 100 (their code
    uses 10 fresh cascades per evaluation) because the greedy choice is only as good as the
    estimate. ``info`` reports the estimated influence of the final subset.
    """

    name = "ideal"
    requires = ("features",)

    def __init__(self, k: int = 10, n_simulations: int = 100, seed: int = 0) -> None:
        super().__init__(seed)
        self.k = _positive_count("k (neighbours)", k)
        self.n_simulations = _positive_count("n_simulations", n_simulations)

    def influence(self, pool: Pool, indices: Sequence[int]) -> float:
        """The estimated influence (expected reach) of any subset of ``pool``, e.g. one another
        strategy picked. A subset this selector picked scores a little high on its own draws
        (they chose it); estimate it with a selector of another ``seed`` for an unbiased value."""
        if pool.features is None:
            raise InputError(f"{self.name} needs features in the pool")
        picks = np.asarray(indices, dtype=np.int64)
        if picks.ndim != 1 or ((picks < 0) | (picks >= len(pool))).any():
            raise InputError(f"indices must be positions in the pool (0..{len(pool) - 1})")
        cascade = self._cascade(pool, np.random.default_rng(self.seed))
        for u in np.unique(picks):
            cascade.add(int(u))
        return cascade.reach()

    def _cascade(self, pool: Pool, rng: np.random.Generator) -> _Cascade:
        assert pool.features is not None
        neighbours, similarity = cosine_knn(pool.features, min(self.k, len(pool) - 1))
        return _Cascade(neighbours, activation_probabilities(similarity), self.n_simulations, rng)

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        n = len(pool)
        cascade = self._cascade(pool, rng)
        tie = rng.permutation(n)
        # CELF: stale upper bounds on the marginal gain, refreshed only when they reach the top
        heap = [(-cascade.gain(u), int(tie[u]), u, 0) for u in range(n)]
        heapq.heapify(heap)
        picks: list[int] = []
        reasons: list[str] = []
        influence = 0.0
        while len(picks) < k:
            neg_gain, t, u, fresh_at = heapq.heappop(heap)
            if fresh_at != len(picks):
                heapq.heappush(heap, (-cascade.gain(u), t, u, len(picks)))
                continue
            cascade.add(u)
            influence += -neg_gain
            picks.append(u)
            reasons.append(
                f"marginal diffusion gain {-neg_gain:.4g} (expected reach {influence:.4g} of {n})"
            )
        return self._selection(
            pool,
            picks,
            reasons,
            k=min(self.k, n - 1),
            n_simulations=self.n_simulations,
            influence=influence,
        )


def activation_probabilities(similarity: np.ndarray) -> np.ndarray:
    """IDEAL's edge weights: each node's neighbour similarities, clipped at 0 and normalised to
    sum to 1 over its neighbours (all 0 when no neighbour is positively similar)."""
    positive = np.clip(similarity, 0.0, None)
    total = positive.sum(axis=1, keepdims=True)
    return np.divide(positive, total, out=np.zeros_like(positive), where=total > 0)


class _Cascade:
    """Independent-cascade influence on ``n_simulations`` live-edge graphs drawn up front: edge
    ``u -> neighbours[u, j]`` is live in a draw with probability ``probability[u, j]``; a seed set
    activates exactly what it reaches over live edges. ``reached[r]`` is what the selected set
    reaches in draw ``r``."""

    def __init__(
        self,
        neighbours: np.ndarray,
        probability: np.ndarray,
        n_simulations: int,
        rng: np.random.Generator,
    ) -> None:
        n, k = neighbours.shape
        self.neighbours = neighbours
        self.live = rng.random((n_simulations, n, k)) < probability[None]
        self.reached = np.zeros((n_simulations, n), dtype=bool)

    def _spread(self, u: int) -> np.ndarray:
        """``[n_simulations, n]``: the candidates a cascade from ``u`` newly activates."""
        n = self.reached.shape[1]
        k = self.neighbours.shape[1]
        new = np.zeros_like(self.reached)
        draws = np.flatnonzero(~self.reached[:, u])
        nodes = np.full(len(draws), u)
        new[draws, nodes] = True
        while len(draws):
            live = self.live[draws, nodes].ravel()  # [m * k]
            draws = np.repeat(draws, k)[live]
            nodes = self.neighbours[nodes].ravel()[live]
            fresh = ~self.reached[draws, nodes] & ~new[draws, nodes]
            flat = np.unique(draws[fresh] * n + nodes[fresh])
            draws, nodes = flat // n, flat % n
            new[draws, nodes] = True
        return new

    def gain(self, u: int) -> float:
        """The expected number of candidates ``u`` would newly activate."""
        return float(self._spread(u).sum()) / len(self.reached)

    def add(self, u: int) -> None:
        self.reached |= self._spread(u)

    def reach(self) -> float:
        """The expected number of candidates the selected set activates."""
        return float(self.reached.sum()) / len(self.reached)
