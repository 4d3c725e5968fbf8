"""Which ``(nprobe, rerank)`` a direction searches with: near the smallest that reaches a recall.

An index measures each direction's recall on seeded training rows at build time (see
:mod:`infscope.index.ann`); this module decides which settings to measure. From the config's,
each step doubles the cells (up to all) or the candidates re-scored per result (up to
:data:`MAX_RERANK_GROWTH` times the config's), whichever finds more, until the target is reached
(the cells on a tie: more candidates from the same cells find nothing new when the codes are
exact). Doubling overshoots: at 10⁷ rows the harmful direction found 0.9694 of its calibration
top-100 in 1,024 cells and 0.9744 in 2,048, so a target of 0.97 cost twice the cells (its search
28 → 56 ms on 2 threads) for 0.0006 of recall. So the last doubling is then bisected — geometrically,
:data:`BISECT_STEPS` times, to within ``2^(1/2^BISECT_STEPS)`` of the smallest count that reaches
the target — each step one more measurement at fewer cells (or candidates) than the one already
made.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["BISECT_STEPS", "MAX_RERANK_GROWTH", "calibrated_setting"]

#: calibration raises ``rerank`` to at most this multiple of the config's (when the codes order
#: the candidates too coarsely)
MAX_RERANK_GROWTH = 32
#: bisections of the last doubling: 3 find the smallest passing count within 2^(1/8) ≈ 9%
BISECT_STEPS = 3


def calibrated_setting(
    recall_at: Callable[[int, int], float],
    nprobe: int,
    rerank: int,
    nlist: int,
    target: float,
) -> tuple[int, int]:
    """The ``(nprobe, rerank)`` whose ``recall_at`` reaches ``target`` (or the largest tried,
    when every cell and the largest candidate count fall short): doubling from ``(nprobe,
    rerank)``, then the last doubling bisected. ``recall_at`` measures (and should cache) one
    setting; ``nprobe ≤ nlist``; ``rerank = 0`` (nothing re-scored) is never grown."""
    last, cap = None, MAX_RERANK_GROWTH * rerank  # last: (coordinate, value before doubling)
    while recall_at(nprobe, rerank) < target:
        steps = [(min(2 * nprobe, nlist), rerank)] if nprobe < nlist else []
        if 0 < rerank < cap:
            steps.append((nprobe, 2 * rerank))
        if not steps:
            return nprobe, rerank
        grown = max(steps, key=lambda step: recall_at(*step))
        last = (0, nprobe) if grown[0] != nprobe else (1, rerank)
        nprobe, rerank = grown
    if last is None:
        return nprobe, rerank
    coordinate, low = last
    setting = [nprobe, rerank]
    high = setting[coordinate]
    for _ in range(BISECT_STEPS):
        middle = round(math.sqrt(low * high))
        if middle <= low or middle >= high:
            break
        setting[coordinate] = middle
        if recall_at(*setting) >= target:
            high = middle
        else:
            low = middle
    setting[coordinate] = high
    return setting[0], setting[1]
