"""Score-driven selection without a target model: top-k / bottom-k, random, stratified and
class-balanced, and sampling with scores as logits at a temperature.

All of them read ``pool.scores`` (one value per candidate, higher = more wanted) except
:class:`RandomSelection`; stratification reads one tag (``"label"`` by default).
"""

from __future__ import annotations

import numpy as np

from infscope.errors import InputError
from infscope.selection.base import Pool, Selection, Selector


def _ranked(scores: np.ndarray, rng: np.random.Generator, descending: bool = True) -> np.ndarray:
    """Indices by score (highest first unless ``descending`` is false); ties broken at random so
    that file order never decides."""
    tie = rng.permutation(len(scores))
    return np.lexsort((tie, -scores if descending else scores))


def gumbel_top_k(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` indices sampled without replacement with probabilities ``∝ exp(log_weights)`` (the
    Gumbel-top-k trick: one vectorised draw, no renormalisation loop)."""
    keys = log_weights + rng.gumbel(size=len(log_weights))
    return np.argsort(-keys, kind="stable")[:k]


class TopK(Selector):
    """The ``k`` candidates with the highest scores (``bottom=True``: the lowest)."""

    requires = ("scores",)

    def __init__(self, bottom: bool = False, seed: int = 0) -> None:
        super().__init__(seed)
        self.bottom = bottom

    @property
    def name(self) -> str:  # type: ignore[override]
        return "bottom-k" if self.bottom else "top-k"

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        assert pool.scores is not None
        order = _ranked(pool.scores, rng, descending=not self.bottom)[:k]
        reasons = [f"score {pool.scores[i]:.4g} (rank {r + 1})" for r, i in enumerate(order)]
        return self._selection(pool, order, reasons)


class RandomSelection(Selector):
    """A uniform random subset: the baseline every strategy has to beat."""

    name = "random"

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        return self._selection(pool, rng.choice(len(pool), size=k, replace=False))


def _quotas(sizes: np.ndarray, k: int, balanced: bool) -> np.ndarray:
    """How many to take from each group: proportional to group size (largest remainders), or as
    equal as the group sizes allow (water-filling) when ``balanced``."""
    if k > sizes.sum():
        raise InputError(f"budget {k} exceeds the {sizes.sum()} candidates")
    if balanced:
        quota = np.zeros_like(sizes)
        left = k
        while left > 0:
            open_ = np.flatnonzero(quota < sizes)
            share = max(1, left // len(open_))
            for g in open_[np.argsort(sizes[open_] - quota[open_], kind="stable")]:
                take = min(share, sizes[g] - quota[g], left)
                quota[g] += take
                left -= take
                if left == 0:
                    break
        return quota
    exact = sizes * (k / sizes.sum())
    quota = np.floor(exact).astype(np.int64)
    remainder = exact - quota
    for g in np.argsort(-remainder, kind="stable")[: k - quota.sum()]:
        quota[g] += 1
    return quota


class Stratified(Selector):
    """Within each group of a tag (class, task, source), the best-scored candidates — either in
    proportion to the group's size (``balanced=False``) or as equal a number per group as the
    group sizes allow (``balanced=True``: class-balanced selection). Without scores, a random
    sample within each group."""

    def __init__(self, by: str = "label", balanced: bool = False, seed: int = 0) -> None:
        super().__init__(seed)
        self.by = by
        self.balanced = balanced
        self.requires = (f"tag:{by}",)  # type: ignore[misc]

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{'balanced' if self.balanced else 'stratified'}-by-{self.by}"

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        groups = pool.tag(self.by).astype(str)
        names, inverse = np.unique(groups, return_inverse=True)
        quota = _quotas(np.bincount(inverse), k, self.balanced)
        scores = pool.scores if pool.scores is not None else np.zeros(len(pool))
        picks: list[int] = []
        reasons: list[str] = []
        for g, name in enumerate(names):
            members = np.flatnonzero(inverse == g)
            chosen = members[_ranked(scores[members], rng)[: quota[g]]]
            picks += chosen.tolist()
            how = "random" if pool.scores is None else "best-scored"
            reasons += [f"{how} of {self.by}={name} (quota {quota[g]})"] * len(chosen)
        return self._selection(pool, picks, reasons)


class SoftmaxSampling(Selector):
    """Sample without replacement with probabilities ``softmax(score / temperature)`` (the
    Gumbel-top-k trick): a low temperature approaches top-k, a high one random selection, so the
    subset keeps some diversity while favouring high scores."""

    name = "softmax-sampling"
    requires = ("scores",)

    def __init__(self, temperature: float = 1.0, standardize: bool = True, seed: int = 0) -> None:
        super().__init__(seed)
        if not temperature > 0:
            raise InputError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.standardize = standardize

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        assert pool.scores is not None
        logits = pool.scores
        if self.standardize:  # so that one temperature means the same on any score scale
            logits = (logits - logits.mean()) / (logits.std() or 1.0)
        logits = logits / self.temperature
        order = gumbel_top_k(logits, k, rng)
        log_p = logits - np.logaddexp.reduce(logits)
        reasons = [f"sampled (p={np.exp(log_p[i]):.2e}, score {pool.scores[i]:.4g})" for i in order]
        return self._selection(pool, order, reasons)
