import numpy as np
import pytest

from infscope.errors import InputError
from infscope.selection import Pool, TopK, select_excluding


def scored_pool(n: int = 50) -> Pool:
    return Pool(ids=[f"r{i}" for i in range(n)], scores=np.arange(n, dtype=float))


def test_excluded_rows_are_never_picked_and_the_rest_keep_their_order():
    pool = scored_pool()
    excluded = [f"r{i}" for i in range(40, 50)]  # the ten best-scored rows
    picked = select_excluding(TopK(balance=None), pool, 5, excluded)
    assert list(picked.indices) == [39, 38, 37, 36, 35]  # indices of the whole pool
    assert picked.ids == ["r39", "r38", "r37", "r36", "r35"]
    assert picked.info["excluded"] == 10 and picked.info["excluded_not_in_pool"] == 0


def test_a_fractional_budget_is_a_share_of_the_whole_pool():
    pool = scored_pool(100)
    picked = select_excluding(TopK(balance=None), pool, 0.1, [f"r{i}" for i in range(60)])
    assert len(picked) == 10  # 10% of 100, not of the 40 left


def test_ids_outside_the_pool_are_counted_not_fatal():
    picked = select_excluding(TopK(balance=None), scored_pool(), 3, ["r49", "unknown"])
    assert 49 not in picked.indices
    assert picked.info["excluded_not_in_pool"] == 1


def test_a_budget_above_what_remains_is_an_error():
    with pytest.raises(InputError, match="more than the 5 candidates left after excluding 45"):
        select_excluding(TopK(balance=None), scored_pool(), 10, [f"r{i}" for i in range(45)])
