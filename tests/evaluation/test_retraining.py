"""RetrainingRunner: outputs in mask order, validation, cache files, resume after a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infscope.errors import InputError
from infscope.evaluation import (
    RetrainingRunner,
    leave_one_out_masks,
    random_subset_masks,
)
from infscope.evaluation.retraining import masks_fingerprint


class Crash(RuntimeError):
    pass


class CountingTrain:
    """Measurement = (sum of kept indices + seed) per query, as 2 queries; may crash."""

    def __init__(self, crash_after: int | None = None):
        self.calls: list[int] = []
        self.crash_after = crash_after

    def __call__(self, indices: np.ndarray, seed: int) -> np.ndarray:
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise Crash("killed")
        self.calls.append(int(indices.sum()) * 1000 + seed)
        return np.array([indices.sum() + seed, -float(len(indices))])


def expected_outputs(masks, seeds):
    return np.stack([[np.flatnonzero(m).sum() + s, -float(m.sum())] for m, s in zip(masks, seeds)])


@pytest.fixture
def masks():
    return random_subset_masks(12, 7, 0.5, seed=1)


def test_run_without_cache(masks):
    outcome = RetrainingRunner(CountingTrain(), masks, seeds=list(range(10, 17))).run(
        progress=False
    )
    np.testing.assert_array_equal(outcome.outputs, expected_outputs(masks, range(10, 17)))
    np.testing.assert_array_equal(outcome.seeds, np.arange(10, 17))
    assert outcome.seconds.shape == (7,) and (outcome.seconds >= 0).all()
    assert (outcome.n_subsets, outcome.n_train, outcome.n_query) == (7, 12, 2)
    default = RetrainingRunner(CountingTrain(), masks).run(progress=False)
    np.testing.assert_array_equal(default.seeds, np.arange(7))


def test_resume_after_crash_trains_only_the_rest(masks, tmp_path):
    cache = tmp_path / "cache"
    first = CountingTrain(crash_after=3)
    with pytest.raises(Crash):
        RetrainingRunner(first, masks, cache_dir=cache).run(progress=False)
    assert sorted(p.name for p in cache.glob("subset-*.npz")) == [
        "subset-00000.npz",
        "subset-00001.npz",
        "subset-00002.npz",
    ]
    assert not list(cache.glob(".*tmp"))  # atomic writes leave no temp files
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["n_train"] == 12 and manifest["num_subsets"] == 7
    assert manifest["masks_sha256"] == masks_fingerprint(masks)
    assert manifest["seeds"] == list(range(7))
    with np.load(cache / "subset-00001.npz", allow_pickle=False) as data:
        np.testing.assert_array_equal(data["mask"], masks[1])
        assert int(data["seed"]) == 1 and data["output"].shape == (2,)
        assert float(data["seconds"]) >= 0

    second = CountingTrain()
    outcome = RetrainingRunner(second, masks, cache_dir=cache).run(progress=False)
    assert len(second.calls) == 4  # subsets 3..6 only
    assert second.calls == [np.flatnonzero(masks[i]).sum() * 1000 + i for i in range(3, 7)]
    np.testing.assert_array_equal(outcome.outputs, expected_outputs(masks, range(7)))

    third = CountingTrain()
    RetrainingRunner(third, masks, cache_dir=cache).run(progress=False)
    assert third.calls == []


def test_resume_rejects_other_masks_or_seeds(masks, tmp_path):
    cache = tmp_path / "cache"
    RetrainingRunner(CountingTrain(), masks, cache_dir=cache).run(progress=False)
    other = masks.copy()
    other[2] = ~other[2]
    with pytest.raises(InputError, match="different masks"):
        RetrainingRunner(CountingTrain(), other, cache_dir=cache)
    with pytest.raises(InputError, match=r"different seeds \(first difference at subset 4\)"):
        RetrainingRunner(CountingTrain(), masks, cache_dir=cache, seeds=[0, 1, 2, 3, 9, 5, 6])
    with pytest.raises(InputError, match="num_subsets=7, not 6"):
        RetrainingRunner(CountingTrain(), masks[:6], cache_dir=cache)
    with pytest.raises(InputError, match="n_train=12, not 11"):
        RetrainingRunner(CountingTrain(), masks[:, :11], cache_dir=cache)


def test_bad_outputs_name_the_subset(masks):
    def nan_on_third(indices, seed):
        return np.array([np.nan if seed == 2 else 1.0, 0.0])

    with pytest.raises(InputError, match="non-finite measurements for subset 2"):
        RetrainingRunner(nan_on_third, masks).run(progress=False)

    def grows(indices, seed):
        return np.zeros(2 + (seed == 4))

    with pytest.raises(InputError, match="3 measurements for subset 4 but 2"):
        RetrainingRunner(grows, masks).run(progress=False)

    with pytest.raises(InputError, match=r"shape \(\) for subset 0"):
        RetrainingRunner(lambda i, s: 1.0, masks).run(progress=False)


def test_runner_validation(masks):
    with pytest.raises(InputError, match="2-D boolean"):
        RetrainingRunner(CountingTrain(), masks[0])
    with pytest.raises(InputError, match="boolean"):
        RetrainingRunner(CountingTrain(), masks * 2)
    with pytest.raises(InputError, match="6 seeds for 7 subsets"):
        RetrainingRunner(CountingTrain(), masks, seeds=range(6))
    with pytest.raises(InputError, match="callable"):
        RetrainingRunner("train", masks)
    # 0/1 integer masks are accepted as booleans
    ints = RetrainingRunner(CountingTrain(), masks.astype(np.int8))
    assert ints.masks.dtype == bool


def test_random_subset_masks():
    masks = random_subset_masks(11, 30, 0.5, seed=7)
    assert masks.shape == (30, 11) and masks.dtype == bool
    assert (masks.sum(axis=1) == round(0.5 * 11)).all()
    assert (random_subset_masks(10, 5, 0.33, seed=0).sum(axis=1) == 3).all()
    np.testing.assert_array_equal(masks, random_subset_masks(11, 30, 0.5, seed=7))
    assert not np.array_equal(masks, random_subset_masks(11, 30, 0.5, seed=8))
    assert len({row.tobytes() for row in masks}) > 20  # rows differ from each other
    # every example is kept about alpha of the time over many subsets
    many = random_subset_masks(20, 2000, 0.25, seed=0)
    assert np.abs(many.mean(axis=0) - 0.25).max() < 0.05
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(InputError, match="alpha"):
            random_subset_masks(10, 3, bad, seed=0)
    with pytest.raises(InputError, match="keeps 0 of 4"):
        random_subset_masks(4, 3, 0.1, seed=0)
    with pytest.raises(InputError, match="num_subsets"):
        random_subset_masks(10, 0, 0.5, seed=0)


def test_leave_one_out_masks():
    masks = leave_one_out_masks(5, [4, 1])
    expected = np.array(
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 0, 1, 1, 1]],
        dtype=bool,
    )
    np.testing.assert_array_equal(masks, expected)
    with pytest.raises(InputError, match=r"\[5\] are outside"):
        leave_one_out_masks(5, [0, 5])
    with pytest.raises(InputError, match="repeat"):
        leave_one_out_masks(5, [1, 1])
    with pytest.raises(InputError, match="non-empty"):
        leave_one_out_masks(5, [])
    with pytest.raises(InputError, match="integers"):
        leave_one_out_masks(5, [0.5])
