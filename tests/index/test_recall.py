"""recall@k of an approximate top-k and of a candidate set, on rows with known overlaps."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.attribution.top_k import TopScores
from infscope.errors import InputError
from infscope.index.recall import candidate_recall, recall_at_k, rows_recall


def top(rows: list[list[int]], queries: list[str] | None = None) -> TopScores:
    found = np.array(rows, dtype=np.int64)
    queries = queries or [f"q{i}" for i in range(len(found))]
    arrays = {"helpful": found, "helpful_values": np.zeros(found.shape, dtype=np.float32)}
    return TopScores(queries, [f"t{i}" for i in range(10)], "dot", arrays, {})


def test_rows_recall_counts_each_rows_overlap_in_any_order():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 0], [8, 7, 6, 5]])
    assert rows_recall(found, truth) == pytest.approx((2 / 4 + 4 / 4) / 2)


def test_recall_at_k_and_candidate_recall_share_the_count():
    exact = top([[1, 2], [3, 4]])
    assert recall_at_k(top([[2, 9], [3, 4]]), exact) == pytest.approx(0.75)
    assert candidate_recall(np.array([[9, 8, 1, 2], [0, 5, 6, 3]]), exact) == pytest.approx(0.75)


def test_mismatched_shapes_or_queries_are_errors():
    exact = top([[1, 2], [3, 4]])
    with pytest.raises(InputError, match="shapes differ"):
        recall_at_k(top([[1, 2]]), exact)
    with pytest.raises(InputError, match="shapes differ"):
        recall_at_k(top([[1, 2], [3, 4]], ["a", "b"]), exact)
    with pytest.raises(InputError, match="candidate rows"):
        candidate_recall(np.array([[1, 2, 3]]), exact)
