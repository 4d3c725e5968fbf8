"""The settings search of :mod:`infscope.index.calibration` on recall curves with known answers."""

from __future__ import annotations

import math

import pytest

from infscope.index.calibration import BISECT_STEPS, MAX_RERANK_GROWTH, calibrated_setting


def measured(curve):
    """``curve`` as a ``recall_at`` that records the settings it was asked for."""
    asked = []

    def recall_at(nprobe: int, rerank: int) -> float:
        asked.append((nprobe, rerank))
        return curve(nprobe, rerank)

    return recall_at, asked


@pytest.mark.parametrize("needed", [33, 40, 47, 64, 100, 700, 1025])
def test_the_last_doubling_is_bisected_to_within_its_resolution(needed):
    """Recall reaches the target from ``needed`` cells on (candidates never help): doubling
    stops at the next power of two, the bisection at most 2^(1/8) above ``needed``."""
    recall_at, asked = measured(lambda nprobe, rerank: 0.99 if nprobe >= needed else 0.5)
    nprobe, rerank = calibrated_setting(recall_at, 32, 10, 4096, 0.97)
    assert rerank == 10 and nprobe >= needed
    assert nprobe <= math.ceil(needed * 2 ** (1 / 2**BISECT_STEPS))
    assert recall_at(nprobe, rerank) >= 0.97
    tried = [n for n, r in asked if r == 10]
    assert max(tried) <= 2 ** math.ceil(math.log2(needed))  # no more cells than doubling


def test_a_first_setting_that_passes_is_kept():
    recall_at, asked = measured(lambda nprobe, rerank: 0.98)
    assert calibrated_setting(recall_at, 32, 10, 4096, 0.97) == (32, 10)
    assert set(asked) == {(32, 10)}


def test_candidates_grow_when_they_find_more_and_are_bisected_too():
    """Coarse codes: more cells find nothing, more candidates do (from 100 per result)."""
    recall_at, _ = measured(lambda nprobe, rerank: 0.99 if rerank >= 100 else 0.6 + rerank / 1000)
    nprobe, rerank = calibrated_setting(recall_at, 32, 10, 4096, 0.97)
    assert nprobe == 32 and 100 <= rerank <= math.ceil(100 * 2 ** (1 / 8))


def test_a_target_out_of_reach_returns_the_largest_setting_tried():
    """Every cell and 32× the candidates fall short: no bisection, the most that was tried."""
    recall_at, _ = measured(lambda nprobe, rerank: 0.5 + nprobe / 1e5 + rerank / 1e6)
    nprobe, rerank = calibrated_setting(recall_at, 1, 1, 16, 0.99)
    assert (nprobe, rerank) == (16, MAX_RERANK_GROWTH)


def test_nothing_rescored_grows_only_the_cells():
    recall_at, asked = measured(lambda nprobe, rerank: 0.99 if nprobe >= 5 else 0.1)
    nprobe, rerank = calibrated_setting(recall_at, 1, 0, 40, 0.97)
    assert (nprobe, rerank) == (5, 0) and all(r == 0 for _, r in asked)


def test_the_cells_stop_at_nlist_and_bisect_below_it():
    """nlist not a power of two: the last doubling is capped at nlist, then bisected."""
    recall_at, _ = measured(lambda nprobe, rerank: 0.99 if nprobe >= 30 else 0.1)
    nprobe, _ = calibrated_setting(recall_at, 16, 0, 40, 0.97)
    assert 30 <= nprobe <= 33
