"""Label balance: selection that ranks by influence must not collapse onto one label.

The training examples whose loss gradients align best with a target's are mostly those of one
label (the target's own, or whichever label the few target queries favour), so ranking by
influence picks a set far more skewed than the pool — measured on the multi-task benchmark: the
most frequent label's share of a task's picks was 0.74 for top-k against 0.39 in the pool. Ranking
selectors therefore take a :class:`LabelBalance` (on by default): while they pick, no label's
share of a group's picks may exceed its share of the group's pool rows by more than
``tolerance`` (groups: the values of the ``within`` tag, e.g. the task, since labels are only
comparable inside one task). :func:`label_skew` measures the same thing for any selection;
:class:`~infscope.selection.Selector` warns when a selection is more skewed than the pool by more
than :data:`SKEW_MARGIN`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from infscope.errors import InputError


class Pool(Protocol):
    """What balancing reads of a :class:`~infscope.selection.base.Pool`: its tags."""

    tags: Mapping[str, Any]

    def __len__(self) -> int: ...

    def tag(self, name: str) -> np.ndarray: ...


#: the warning threshold: mean majority-label share of the selection above the pool's by this much
SKEW_MARGIN = 0.15
#: groups with fewer picks than this are left out of :func:`label_skew` (their shares are noise)
MIN_GROUP_PICKS = 5


@dataclass(frozen=True)
class LabelBalance:
    """Keep every label's share of the picks within ``tolerance`` of its share of the pool.

    ``by`` names the label tag and ``within`` the tag whose groups are balanced separately (the
    task: label ``0`` of one task is not label ``0`` of another); a pool without the ``within``
    tag is one group, a pool without the ``by`` tag is selected unbalanced (``info`` says so).
    The bound holds for every prefix of the pick order, up to rounding: a pick of label ``l`` in
    group ``g`` is allowed while ``count(g, l) + 1 <= ceil((share(g, l) + tolerance) * (count(g) +
    1))``; a candidate it turns away stays available for later picks. Only when every remaining
    candidate is turned away is the bound relaxed (``info["balance_relaxed"]`` counts those picks).
    """

    by: str = "label"
    within: str | None = "task"
    tolerance: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance <= 1:
            raise InputError(f"tolerance must lie in [0, 1], got {self.tolerance}")

    def caps(self, pool: Pool) -> LabelCaps | None:
        """The running bound for ``pool``, or None when it has no ``by`` tag."""
        if self.by not in pool.tags:
            return None
        within = pool.tag(self.within) if self.within in pool.tags else None
        return LabelCaps(pool.tag(self.by), within, self.tolerance)

    def describe(self, pool: Pool) -> str:
        if self.by not in pool.tags:
            return f"off (the pool has no {self.by!r} tag)"
        scope = f" within each {self.within!r}" if self.within in pool.tags else ""
        return f"{self.by!r} shares{scope} at most {self.tolerance:g} above the pool's"


#: what a selector's ``balance`` argument may be
BalanceArg = LabelBalance | bool | float | None


def balance_option(value: Any) -> LabelBalance | None:
    """A selector's ``balance`` argument: a :class:`LabelBalance`, None/False (off), True (the
    default bound) or a number (the default bound with that tolerance, from the command line)."""
    if value is None or value is False:
        return None
    if value is True:
        return LabelBalance()
    if isinstance(value, LabelBalance):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return LabelBalance(tolerance=float(value))
    raise InputError(f"balance must be a LabelBalance, a tolerance, true or false, got {value!r}")


def _groups(values: np.ndarray) -> tuple[np.ndarray, int]:
    names, inverse = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return inverse.astype(np.int64), len(names)


class LabelCaps:
    """The running bound of :class:`LabelBalance` over one pool (see there)."""

    def __init__(self, labels: np.ndarray, within: np.ndarray | None, tolerance: float) -> None:
        n = len(labels)
        outer, _ = _groups(within) if within is not None else (np.zeros(n, np.int64), 1)
        pair = np.char.add(np.char.add(outer.astype(str), "\x00"), np.asarray(labels).astype(str))
        self.group, n_groups = _groups(pair)
        self.outer_of = np.zeros(n_groups, dtype=np.int64)
        self.outer_of[self.group] = outer
        pool_group = np.bincount(self.group, minlength=n_groups).astype(float)
        pool_outer = np.bincount(outer, minlength=int(outer.max()) + 1).astype(float)
        self.limit = pool_group / pool_outer[self.outer_of] + tolerance
        self.count = np.zeros(n_groups)
        self.outer_count = np.zeros(len(pool_outer))
        self.relaxed = 0

    def open_groups(self) -> np.ndarray:
        """Boolean per (group, label): may the next pick come from it."""
        cap = np.ceil(self.limit * (self.outer_count[self.outer_of] + 1) - 1e-9)
        return self.count + 1 <= cap

    def add(self, index: int) -> None:
        g = self.group[index]
        self.count[g] += 1
        self.outer_count[self.outer_of[g]] += 1


class RankedPicker:
    """Walks a ranking (best first), taking the best candidate that is neither taken nor turned
    away by the caps; the ranking is scanned in vectorised chunks from the first untaken rank."""

    def __init__(self, order: np.ndarray) -> None:
        self.order = np.asarray(order, dtype=np.int64)
        self.start = 0

    def take(self, taken: np.ndarray, caps: LabelCaps | None) -> int | None:
        """The best allowed candidate (not marked taken; None when the ranking is used up). When
        every remaining one is turned away, the best remaining one (and ``caps.relaxed`` + 1)."""
        order = self.order
        while self.start < len(order) and taken[order[self.start]]:
            self.start += 1
        if self.start == len(order):
            return None
        if caps is None:
            return int(order[self.start])
        open_ = caps.open_groups()
        pos = self.start
        chunk = 256
        while pos < len(order):
            block = order[pos : pos + chunk]
            ok = np.flatnonzero(~taken[block] & open_[caps.group[block]])
            if ok.size:
                return int(block[ok[0]])
            pos += len(block)
            chunk *= 2
        caps.relaxed += 1
        return int(order[self.start])


def fill_ranked(order: np.ndarray, k: int, caps: LabelCaps | None, n: int) -> np.ndarray:
    """The first ``k`` picks along ``order`` under ``caps`` (``order`` covers all ``n``)."""
    taken = np.zeros(n, dtype=bool)
    picker = RankedPicker(order)
    picks = np.empty(k, dtype=np.int64)
    for step in range(k):
        i = picker.take(taken, caps)
        assert i is not None  # order covers the pool and k <= n
        taken[i] = True
        picks[step] = i
        if caps is not None:
            caps.add(i)
    return picks


@dataclass(frozen=True)
class LabelSkew:
    """Majority-label shares, selected against pool, over the ``within`` groups with at least
    :data:`MIN_GROUP_PICKS` picks (the mean weighted by picks)."""

    by: str
    within: str | None
    pool_share: float
    selected_share: float
    groups: dict[str, tuple[float, float, int]]  # group -> (pool share, selected share, picks)

    @property
    def excess(self) -> float:
        return self.selected_share - self.pool_share

    def warning(self, margin: float = SKEW_MARGIN) -> str | None:
        """A one-line warning when the selection is more skewed than the pool by over ``margin``."""
        if not self.groups or self.excess <= margin:
            return None
        worst = max(self.groups.items(), key=lambda kv: kv[1][1] - kv[1][0])
        scope = f" within {self.within}" if self.within else ""
        return (
            f"the selection is skewed toward one {self.by}{scope}: its most frequent "
            f"{self.by}'s share is {self.selected_share:.2f} against {self.pool_share:.2f} in the "
            f"pool (most in {worst[0]}: {worst[1][1]:.2f} vs {worst[1][0]:.2f}); keep a "
            f"LabelBalance on, or stratify by {self.by}"
        )


def label_skew(
    pool: Pool, indices: Sequence[int], by: str = "label", within: str | None = "task"
) -> LabelSkew | None:
    """How much more one label dominates the picks of each ``within`` group than the group's pool
    rows (None without the ``by`` tag; a pool without ``within`` is one group)."""
    if by not in pool.tags:
        return None
    labels = pool.tag(by).astype(str)
    scoped = within if within in pool.tags else None
    outer = pool.tag(scoped).astype(str) if scoped else np.full(len(pool), "all")
    indices = np.asarray(indices, dtype=np.int64)
    groups = {}
    for name in np.unique(outer[indices]) if len(indices) else []:
        picked = labels[indices][outer[indices] == name]
        if len(picked) < MIN_GROUP_PICKS:
            continue
        members = labels[outer == name]
        share = np.unique(members, return_counts=True)[1].max() / len(members)
        groups[str(name)] = (
            float(share),
            float(np.unique(picked, return_counts=True)[1].max() / len(picked)),
            int(len(picked)),
        )
    if not groups:
        return LabelSkew(by, scoped, float("nan"), float("nan"), {})
    values = np.array(list(groups.values()), dtype=float)  # [groups, (pool, selected, picks)]
    weights = values[:, 2] / values[:, 2].sum()
    return LabelSkew(
        by, scoped, float(values[:, 0] @ weights), float(values[:, 1] @ weights), groups
    )
