"""Target-aware selection from a query x train influence matrix whose rows are tagged with target
tasks: LESS-style (mean influence per task, max over tasks, top-k) and BIDS (instance-level
normalisation, then iterative balancing across tasks).

``pool.influence`` is ``[n_query, n]`` in infscope's sign (positive = the candidate helps the
query), ``pool.query_tasks`` names each row's task; without ``query_tasks`` all rows form one task.
Both keep each label's share near the pool's while they pick
(:class:`~infscope.selection.LabelBalance`, on by default when the pool has a ``label`` tag).
"""

from __future__ import annotations

import numpy as np

from infscope.errors import InputError
from infscope.selection.balance import BalanceArg, RankedPicker, balance_option
from infscope.selection.base import Pool, Selection, Selector
from infscope.selection.basic import ranked_selection


def task_rows(pool: Pool) -> tuple[list[str], list[np.ndarray]]:
    """Task names (sorted) and the influence rows of each."""
    assert pool.influence is not None
    tasks = pool.query_tasks or ["target"] * pool.influence.shape[0]
    names = sorted(set(tasks))
    labels = np.asarray(tasks, dtype=object)
    return names, [np.flatnonzero(labels == name) for name in names]


def normalize_instances(influence: np.ndarray) -> np.ndarray:
    """Instance-level normalisation (BIDS): z-score each query's row over the training
    candidates, so that every query — and hence every task — speaks on the same scale. Without
    it, tasks whose gradients are large dominate any max or sum over tasks."""
    mean = influence.mean(axis=1, keepdims=True)
    std = influence.std(axis=1, keepdims=True)
    return (influence - mean) / np.where(std > 0, std, 1.0)


def task_influence(influence: np.ndarray, rows: list[np.ndarray], aggregate: str) -> np.ndarray:
    """``[n_tasks, n]``: each candidate's influence on each task, the mean or the max over the
    task's queries."""
    if aggregate not in ("mean", "max"):
        raise InputError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
    reduce = np.mean if aggregate == "mean" else np.max
    return np.stack([reduce(influence[r], axis=0) for r in rows])


class LESS(Selector):
    """Targeted selection in the manner of LESS (Xia et al. 2024): a candidate's value is its
    mean influence over each target task's queries, maximised over tasks; the top-``k`` by that
    value are selected. (LESS computes the influence as cosine similarity of Adam-preconditioned
    LoRA gradients: use :class:`~infscope.attribution.GradientSimilarity` with ``cosine``.)"""

    name = "less"
    requires = ("influence",)

    def __init__(self, balance: BalanceArg = True, seed: int = 0) -> None:
        super().__init__(seed)
        self.balance = balance_option(balance)

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        assert pool.influence is not None
        names, rows = task_rows(pool)
        per_task = task_influence(pool.influence, rows, "mean")
        best_task = per_task.argmax(axis=0)
        value = per_task.max(axis=0)
        order = np.lexsort((rng.permutation(len(pool)), -value))
        return ranked_selection(
            self,
            pool,
            order,
            k,
            self.balance,
            lambda i, r: (
                f"mean influence {value[i]:.4g} on task {names[best_task[i]]} (rank {r + 1})"
            ),
            tasks=names,
        )


class BIDS(Selector):
    """Balanced and Influential Data Selection (Dai et al. 2025).

    1. Instance-level normalisation of the influence matrix (:func:`normalize_instances`).
    2. Each candidate's influence on each task: ``aggregate`` (max by default) over the task's
       queries.
    3. Iteratively: the task the selected set currently serves least (lowest mean influence of
       the selected candidates on it) gets the unselected candidate with the highest influence on
       it.

    The result is balanced across target tasks even when one task's raw influences are inflated.
    ``info`` reports each task's mean normalised influence from the selected set.
    """

    name = "bids"
    requires = ("influence",)

    def __init__(
        self,
        aggregate: str = "max",
        normalize: bool = True,
        balance: BalanceArg = True,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if aggregate not in ("mean", "max"):
            raise InputError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
        self.aggregate = aggregate
        self.normalize = normalize
        self.balance = balance_option(balance)

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        assert pool.influence is not None
        names, rows = task_rows(pool)
        influence = normalize_instances(pool.influence) if self.normalize else pool.influence
        per_task = task_influence(influence, rows, self.aggregate)  # [T, n]
        tie = rng.permutation(len(pool))
        # each task's candidates from most to least influential, walked past taken ones
        ranked = [RankedPicker(np.lexsort((tie, -row))) for row in per_task]
        caps = self.balance.caps(pool) if self.balance is not None else None
        taken = np.zeros(len(pool), dtype=bool)
        served = np.zeros(len(names))  # sum over the selected set of influence on each task
        picks: list[int] = []
        reasons: list[str] = []
        for step in range(k):
            mean_served = served / max(step, 1)
            task = int(np.argmin(mean_served))  # lowest index wins ties: deterministic
            pick = ranked[task].take(taken, caps)
            assert pick is not None  # every ranking covers the pool and k <= n
            taken[pick] = True
            if caps is not None:
                caps.add(pick)
            served += per_task[:, pick]
            picks.append(pick)
            reasons.append(
                f"most influential ({per_task[task, pick]:.3g}) on the least served task "
                f"{names[task]} (served {mean_served[task]:.3g})"
            )
        final = served / k
        info: dict[str, object] = {
            "tasks": names,
            "served": {n: float(v) for n, v in zip(names, final)},
            "label_balance": self.balance.describe(pool) if self.balance is not None else "off",
        }
        if caps is not None:
            info["balance_relaxed"] = caps.relaxed
        return self._selection(pool, picks, reasons, **info)
