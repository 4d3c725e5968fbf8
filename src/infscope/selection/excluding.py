"""Selection from a pool with some rows left out — e.g. the rows ``infscope audit`` flags as
likely mislabelled, the recommended first step on a noisy pool (see the selection benchmarks:
the audit's flags, then a label-blind selector, beat influence-aware selection there but under
heavy systematic noise).

The budget is resolved against the *whole* pool, so ``budget=0.15`` picks 15% of the pool's
size from the rows that remain, and the picks are indices of the whole pool: its summary,
diagnostics and records apply unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from infscope.errors import InputError
from infscope.selection.base import Pool, Selection, Selector, resolve_budget


def select_excluding(
    selector: Selector, pool: Pool, budget: int | float, excluded: Iterable[str]
) -> Selection:
    """``selector``'s picks of ``budget`` (a count, or a share of the whole pool) among the
    candidates whose ids are not in ``excluded``; ids that are not candidates are ignored, and
    their number is in ``info["excluded_not_in_pool"]``."""
    leave_out = {str(i) for i in excluded}
    keep = np.fromiter(
        (i for i, candidate in enumerate(pool.ids) if candidate not in leave_out), dtype=np.int64
    )
    k = resolve_budget(budget, len(pool))
    if k > len(keep):
        raise InputError(
            f"a budget of {k} is more than the {len(keep)} candidates left after excluding "
            f"{len(pool) - len(keep)}"
        )
    inner = selector.select(pool.subset(keep), k)
    info = {
        **inner.info,
        "excluded": int(len(pool) - len(keep)),
        "excluded_not_in_pool": len(leave_out) - int(len(pool) - len(keep)),
    }
    return Selection(
        keep[inner.indices], list(inner.ids), inner.method, inner.weights, inner.reasons, info
    )

