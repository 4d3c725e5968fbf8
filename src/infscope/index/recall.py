"""How much of the exact top-k an approximate search (or a candidate set) finds: recall@k."""

from __future__ import annotations

import numpy as np

from infscope.attribution.top_k import TopScores
from infscope.errors import InputError

__all__ = ["candidate_recall", "recall_at_k", "rows_recall"]


def recall_at_k(approximate: TopScores, exact: TopScores, direction: str = "helpful") -> float:
    """Mean share of each query's exact top-``k`` that the approximate top-``k`` finds."""
    found, truth = approximate.arrays[direction], exact.arrays[direction]
    if found.shape != truth.shape or approximate.query_ids != exact.query_ids:
        raise InputError(f"top-k shapes differ: {found.shape} vs {truth.shape}")
    return rows_recall(found, truth)


def candidate_recall(candidates: np.ndarray, exact: TopScores, direction: str = "helpful") -> float:
    """Mean share of each query's exact top-``k`` that lies among its candidates."""
    truth = exact.arrays[direction]
    if len(candidates) != len(truth):
        raise InputError(f"{len(candidates)} candidate rows for {len(truth)} queries")
    return rows_recall(candidates, truth)


def rows_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` found in the same row of ``found``."""
    hits = [len(np.intersect1d(a, b)) for a, b in zip(found, truth)]
    return float(np.mean(hits) / truth.shape[1])
