"""Progress of an unlearning run on stderr (tqdm, as extraction and retraining show theirs).

A Newton step's time goes into conjugate gradient, one Hessian-vector product per iteration and
each product a pass over the remaining data; :class:`CountedCurvature` ticks a bar per product,
so a long solve shows how far it is (at most ``max_iter`` iterations per step, fewer when it
converges). SGD steps tick a bar per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class CountedCurvature:
    """``curvature`` whose every product advances ``bar`` by one; everything else is the
    curvature's own (solvers read its size and description through it)."""

    def __init__(self, curvature: Any, bar: Any) -> None:
        self._curvature, self._bar = curvature, bar

    def matvec(self, vectors: np.ndarray) -> np.ndarray:
        product = self._curvature.matvec(vectors)
        self._bar.update(1)
        return product

    def __getattr__(self, name: str) -> Any:
        return getattr(self._curvature, name)
