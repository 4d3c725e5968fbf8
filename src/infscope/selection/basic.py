"""Score-driven selection without a target model: top-k / bottom-k, random, stratified and
class-balanced, and sampling with scores as logits at a temperature.

All of them read ``pool.scores`` (one value per candidate, higher = more wanted) except
:class:`RandomSelection`; stratification reads one tag (``"label"`` by default). Top-k and
sampling keep each label's share near the pool's (:class:`~infscope.selection.LabelBalance`, on
by default when the pool has a ``label`` tag; ``balance=None`` turns it off).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from infscope.errors import InputError
from infscope.selection.balance import BalanceArg, LabelBalance, balance_option, fill_ranked
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


def ranked_selection(
    selector: Selector,
    pool: Pool,
    order: np.ndarray,
    k: int,
    balance: LabelBalance | None,
    reason: Callable[[int, int], str],
    **info: object,
) -> Selection:
    """The first ``k`` of ``order`` (a ranking of the whole pool) under ``balance``; ``reason(i,
    rank)`` says why candidate ``i`` at ``rank`` (0-based, in ``order``) was picked."""
    caps = balance.caps(pool) if balance is not None else None
    picks = fill_ranked(order, k, caps, len(pool))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    reasons = [reason(i, int(rank[i])) for i in picks.tolist()]
    info["label_balance"] = balance.describe(pool) if balance is not None else "off"
    if caps is not None:
        info["balance_relaxed"] = caps.relaxed
    return selector._selection(pool, picks, reasons, **info)


class TopK(Selector):
    """The ``k`` candidates with the highest scores (``bottom=True``: the lowest), under a label
    balance by default (``balance``: see :class:`~infscope.selection.LabelBalance`)."""

    requires = ("scores",)

    def __init__(self, bottom: bool = False, balance: BalanceArg = True, seed: int = 0) -> None:
        super().__init__(seed)
        self.bottom = bottom
        self.balance = balance_option(balance)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "bottom-k" if self.bottom else "top-k"

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        scores = pool.scores
        assert scores is not None
        order = _ranked(scores, rng, descending=not self.bottom)
        return ranked_selection(
            self, pool, order, k, self.balance, lambda i, r: f"score {scores[i]:.4g} (rank {r + 1})"
        )


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
    """Split the budget over the groups of a tag (class, task, source) — in proportion to group
    size (``balanced=False``) or as equally as the group sizes allow (``balanced=True``:
    class-balanced selection) — and select inside each group with ``within``: by default the
    best-scored candidates (random ones when the pool has no scores).

    ``within`` can be any selector, e.g. ``Stratified(LESS(), by="label")`` keeps LESS's choice of
    examples but not its composition: influence-driven selection tends to collapse onto one class
    of a task, since examples of the query's label have the most aligned gradients."""

    def __init__(
        self,
        by: str = "label",
        balanced: bool = False,
        within: Selector | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.by = by
        self.balanced = balanced
        self.within = within
        self.requires = (f"tag:{by}", *(within.requires if within else ()))  # type: ignore[misc]

    @property
    def name(self) -> str:  # type: ignore[override]
        prefix = f"{self.within.name}+" if self.within is not None else ""
        return f"{prefix}{'balanced' if self.balanced else 'stratified'}-by-{self.by}"

    def _inner(self, pool: Pool) -> Selector:
        if self.within is not None:
            return self.within
        return TopK(seed=self.seed) if pool.scores is not None else RandomSelection(self.seed)

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        groups = pool.tag(self.by).astype(str)
        names, inverse = np.unique(groups, return_inverse=True)
        quota = _quotas(np.bincount(inverse), k, self.balanced)
        inner = self._inner(pool)
        picks: list[int] = []
        reasons: list[str] = []
        info: dict[str, object] = {}
        for g, name in enumerate(names):
            if quota[g] == 0:
                continue
            members = np.flatnonzero(inverse == g)
            chosen = inner._select(pool.subset(members), int(quota[g]), rng)
            picks += members[chosen.indices].tolist()
            note = f"{self.by}={name} (quota {quota[g]})"
            reasons += [f"{reason}; within {note}" for reason in chosen.reasons]
            info.update({f"{name}: {key}": value for key, value in chosen.info.items()})
        return self._selection(pool, picks, reasons, **info)


class SoftmaxSampling(Selector):
    """Sample without replacement with probabilities ``softmax(score / temperature)`` (the
    Gumbel-top-k trick): a low temperature approaches top-k, a high one random selection, so the
    subset keeps some diversity while favouring high scores."""

    name = "softmax-sampling"
    requires = ("scores",)

    def __init__(
        self,
        temperature: float = 1.0,
        standardize: bool = True,
        balance: BalanceArg = True,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if not temperature > 0:
            raise InputError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.standardize = standardize
        self.balance = balance_option(balance)

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        scores = pool.scores
        assert scores is not None
        logits = scores
        if self.standardize:  # so that one temperature means the same on any score scale
            logits = (logits - logits.mean()) / (logits.std() or 1.0)
        logits = logits / self.temperature
        order = gumbel_top_k(logits, len(pool), rng)
        p = np.exp(logits - np.logaddexp.reduce(logits))
        return ranked_selection(
            self,
            pool,
            order,
            k,
            self.balance,
            lambda i, r: f"sampled (p={p[i]:.2e}, score {scores[i]:.4g})",
        )
