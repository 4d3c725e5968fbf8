"""TAROT: targeted data selection by optimal transport (Feng et al., ICML 2025).

Candidates (``pool.features``, e.g. projected gradients) and target points
(``pool.target_features``) are compared by a *whitened feature distance*: features are centred
and whitened with the covariance of candidates and targets together (plus a small ridge), so that
a few dominant directions of a gradient feature space do not decide every distance, then scaled to
unit length; the distance is ``sqrt(2 - 2 cos)`` in the whitened space.

Selection fills the budget round-robin: each target point in turn takes its nearest candidate not
yet taken. This spreads the picks over every mode of the target, where ranking by mean similarity
collapses onto the dominant one. The optimal-transport (OT) distance from the selected set
(uniform weights) to the target set says how well they match. Tracked as the round-robin set grows,
against target points held out from the ordering (k-fold over the targets, as the reference code
does), it is smallest at the *preferred selection ratio*: below it the target is not yet covered,
above it the additions come from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infscope.errors import InputError
from infscope.selection.base import Pool, Selection, Selector

# Sinkhorn in the standard (non-log) domain needs exp(-cost / reg) to stay representable.
_LOG_DOMAIN_ABOVE = 500.0
_EMD_MAX_ITER = 10_000_000


def whitened_features(
    features: np.ndarray, target_features: np.ndarray, ridge: float = 1e-5, whiten: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates and targets in TAROT's space: centred on their joint mean, whitened with their
    joint covariance ``C + ridge * trace(C)/d * I`` and scaled to unit length.

    Any whitening ``W`` with ``WᵀW = C⁻¹`` (the paper's Cholesky factor, ZCA, PCA) gives the same
    inner products and so the same distances; this uses the eigen-decomposition of whichever of
    the covariance (``d x d``) and the Gram matrix (``N x N``) is smaller, so that wide gradient
    features cost ``O(N²d)`` rather than ``O(d³)``. The returned coordinates are PCA-whitened.
    ``whiten=False`` only centres and normalises (plain cosine distance, the paper's ablation).
    """
    x = np.concatenate([features, target_features]).astype(np.float64)
    x -= x.mean(axis=0)
    rows, dim = x.shape
    if not np.any(x):
        raise InputError("the features have no variance: every candidate and target is one point")
    if whiten:
        if dim <= rows:
            evals, evecs = np.linalg.eigh(x.T @ x / rows)
            x = x @ evecs
        else:
            evals, evecs = np.linalg.eigh(x @ x.T / rows)
            x = evecs * np.sqrt(np.clip(evals, 0.0, None) * rows)
        evals = np.clip(evals, 0.0, None)
        x /= np.sqrt(evals + ridge * evals.sum() / dim)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(features)
    return x[:n], x[n:]


def unit_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` Euclidean distances between unit vectors, ``sqrt(2 - 2 a·b)``."""
    return np.sqrt(np.clip(2.0 - 2.0 * (a @ b.T), 0.0, 4.0))


def transport_distance(cost: np.ndarray, exact: bool = True, reg: float = 0.02) -> float:
    """OT distance between two uniform point clouds with pairwise ``cost`` ``[s, m]``: exact
    (network simplex, ``ot.emd2``) or entropic (``ot.sinkhorn2`` with regularisation ``reg`` in
    cost units; the returned value is the transport cost of the entropic plan, slightly above the
    exact one)."""
    import ot  # POT: loaded only when a transport distance is computed

    s, m = cost.shape
    a, b = np.full(s, 1.0 / s), np.full(m, 1.0 / m)
    if exact:
        return float(ot.emd2(a, b, cost, numItermax=_EMD_MAX_ITER))
    method = "sinkhorn_log" if cost.max() > _LOG_DOMAIN_ABOVE * reg else "sinkhorn"
    return float(ot.sinkhorn2(a, b, cost, reg, method=method, numItermax=10_000, stopThr=1e-6))


class _Nearest:
    """Each target's candidates, nearest first, sorted lazily in doubling prefixes (sorting every
    target's full row up front would cost ``m·n·log n`` time and ``m·n`` memory)."""

    def __init__(self, distances: np.ndarray) -> None:
        self.distances = distances
        self.order = [np.empty(0, dtype=np.int64)] * len(distances)
        self.pos = [0] * len(distances)

    def take(self, j: int, taken: np.ndarray) -> int:
        """Target ``j``'s nearest candidate with ``taken`` false (one must exist)."""
        while True:
            order, pos = self.order[j], self.pos[j]
            while pos < len(order):
                chunk = order[pos : pos + 64]
                free = np.flatnonzero(~taken[chunk])
                if free.size:
                    pos += int(free[0])
                    self.pos[j] = pos + 1
                    return int(order[pos])
                pos += len(chunk)
            self._extend(j)

    def _extend(self, j: int) -> None:
        row = self.distances[j]
        n = len(row)
        depth = min(n, max(64, 2 * len(self.order[j])))
        part = np.argpartition(row, depth - 1)[:depth] if depth < n else np.arange(n)
        self.order[j] = part[np.lexsort((part, row[part]))]
        self.pos[j] = 0  # rescan: ties at the old depth boundary may have been cut differently


def round_robin(
    distances: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """TAROT's fill: rounds in which every target (in a fresh random order per round) takes its
    nearest not-yet-taken candidate, until ``count`` are taken. ``distances`` is ``[m, n]``
    (target x candidate). Returns the picks in order and the target that took each."""
    m, n = distances.shape
    if not 1 <= count <= n:
        raise InputError(f"cannot take {count} of {n} candidates")
    nearest = _Nearest(distances)
    taken = np.zeros(n, dtype=bool)
    picks = np.empty(count, dtype=np.int64)
    owners = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        for j in rng.permutation(m)[: count - filled]:
            i = nearest.take(int(j), taken)
            taken[i] = True
            picks[filled], owners[filled] = i, j
            filled += 1
    return picks, owners


@dataclass(frozen=True)
class RatioCurve:
    """Held-out OT distance of the round-robin set at each checkpoint size (mean over folds).

    ``solver`` is the one OT solver used for every point (``"exact"`` or ``"sinkhorn(reg=...)"``),
    so that the points are comparable.
    """

    sizes: np.ndarray
    distances: np.ndarray
    n: int
    solver: str

    @property
    def preferred_size(self) -> int:
        """The checkpoint size with the smallest OT distance."""
        return int(self.sizes[int(np.argmin(self.distances))])

    @property
    def preferred_ratio(self) -> float:
        """:attr:`preferred_size` as a fraction of the pool."""
        return self.preferred_size / self.n

    def points(self) -> list[list[float]]:
        """``[[size, distance], ...]`` (JSON-ready)."""
        return [[int(s), float(d)] for s, d in zip(self.sizes, self.distances)]


class TAROT(Selector):
    """Targeted selection by optimal transport (Feng et al. 2025) on ``pool.features`` and
    ``pool.target_features``.

    Picks ``k`` candidates round-robin over the target points, each taking its nearest free
    candidate in the whitened space (:func:`whitened_features`, ``ridge`` relative to the mean
    variance). ``info`` holds ``ot_distance`` (selected set to the whole target set) and its
    ``ot_solver``; with ``curve=True`` also ``curve`` (``[[size, held-out OT distance], ...]``,
    see :meth:`ratio_curve`), ``curve_solver``, ``preferred_size`` and ``preferred_ratio``.

    OT distances use the exact solver while the cost matrix has at most ``exact_max`` entries,
    else Sinkhorn with regularisation ``reg`` (distances lie in [0, 2]). The ratio curve evaluates
    ``checkpoints`` evenly spaced sizes up to the whole pool, each with ``folds``-fold held-out
    targets: 1/``folds`` of the targets order the candidates, the rest measure the distance; that
    is ``folds x checkpoints`` OT solves (about 10 s for n=5,000, m=200 on one core), so
    ``curve=False`` when only the selection is wanted. Memory: one ``[m, n]`` float64 distance
    matrix.
    """

    name = "tarot"
    requires = ("features", "target_features")

    def __init__(
        self,
        whiten: bool = True,
        ridge: float = 1e-5,
        curve: bool = True,
        folds: int = 5,
        checkpoints: int = 20,
        reg: float = 0.02,
        exact_max: int = 1_000_000,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if not ridge > 0:
            raise InputError(f"ridge must be positive (it keeps whitening finite), got {ridge}")
        if folds < 2:
            raise InputError(f"folds must be at least 2 (targets are held out), got {folds}")
        if checkpoints < 1:
            raise InputError(f"checkpoints must be at least 1, got {checkpoints}")
        if not reg > 0:
            raise InputError(f"the Sinkhorn regularisation reg must be positive, got {reg}")
        if exact_max < 0:
            raise InputError(f"exact_max must be non-negative, got {exact_max}")
        self.whiten = bool(whiten)
        self.ridge = float(ridge)
        self.curve = bool(curve)
        self.folds = int(folds)
        self.checkpoints = int(checkpoints)
        self.reg = float(reg)
        self.exact_max = int(exact_max)

    def distances(self, pool: Pool) -> np.ndarray:
        """``[m, n]`` whitened feature distance from every target point to every candidate."""
        if pool.features is None or pool.target_features is None:
            raise InputError(f"{self.name} needs features and target_features in the pool")
        if len(pool.target_features) == 0:
            raise InputError("target_features is empty: give at least one target point")
        cand, targ = whitened_features(
            pool.features, pool.target_features, ridge=self.ridge, whiten=self.whiten
        )
        return unit_distances(targ, cand)

    def ot_distance(self, pool: Pool, indices: np.ndarray) -> float:
        """OT distance from the candidates at ``indices`` (uniform weights) to the pool's target
        set, in this selector's whitened space: what ``info["ot_distance"]`` reports, for any
        subset (e.g. a random baseline)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or indices.size == 0:
            raise InputError("indices must be a non-empty 1-D array of pool positions")
        if indices.min() < 0 or indices.max() >= len(pool):
            raise InputError(f"indices must be pool positions in 0..{len(pool) - 1}")
        cost = self.distances(pool)[:, indices].T
        return transport_distance(cost, self._exact(cost.size), self.reg)

    def ratio_curve(self, pool: Pool) -> RatioCurve:
        """Held-out OT distance as the round-robin set grows, and the size that minimises it."""
        return self._ratio_curve(self.distances(pool))

    def _exact(self, entries: int) -> bool:
        return entries <= self.exact_max

    def _solver(self, exact: bool) -> str:
        return "exact" if exact else f"sinkhorn(reg={self.reg:g})"

    def _ratio_curve(self, distances: np.ndarray) -> RatioCurve:
        m, n = distances.shape
        if m < 2:
            raise InputError(
                "the selection-ratio curve holds out target points and needs at least 2; "
                "pass curve=False to select without it"
            )
        rng = np.random.default_rng(self.seed)
        folds = np.array_split(rng.permutation(m), min(self.folds, m))
        sizes = np.unique(np.linspace(n / self.checkpoints, n, self.checkpoints).round())
        sizes = sizes[sizes >= 1].astype(np.int64)
        exact = self._exact(int(sizes[-1]) * (m - min(len(f) for f in folds)))
        totals = np.zeros(len(sizes))
        for f, fold in enumerate(folds):
            held = np.concatenate([g for h, g in enumerate(folds) if h != f])
            picks, _ = round_robin(distances[fold], int(sizes[-1]), rng)
            for c, size in enumerate(sizes):
                cost = distances[np.ix_(held, picks[:size])].T
                totals[c] += transport_distance(cost, exact, self.reg)
        return RatioCurve(sizes, totals / len(folds), n, self._solver(exact))

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        distances = self.distances(pool)
        picks, owners = round_robin(distances, k, rng)
        reasons = [
            f"nearest free candidate to target #{j} (whitened distance {distances[j, i]:.3f})"
            for i, j in zip(picks.tolist(), owners.tolist())
        ]
        cost = distances[:, picks].T
        exact = self._exact(cost.size)
        info: dict = {
            "ot_distance": transport_distance(cost, exact, self.reg),
            "ot_solver": self._solver(exact),
            "whitened": self.whiten,
        }
        if self.curve:
            curve = self._ratio_curve(distances)
            info.update(
                curve=curve.points(),
                curve_solver=curve.solver,
                preferred_size=curve.preferred_size,
                preferred_ratio=curve.preferred_ratio,
            )
        return self._selection(pool, picks, reasons, **info)
