"""Synthetic label noise: the share flipped, the classes chosen, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.errors import InputError
from infscope.evaluation.noise import conflicting_duplicates, flip_labels


def _blobs(n_per_class: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(classes, 5))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(size=(len(labels), 5)), labels


@pytest.mark.parametrize("noise", ["uniform", "confusable"])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.4, 1.0])
def test_flips_exactly_the_share_each_to_another_class(noise, rate):
    features, labels = _blobs(50, 4)
    before = labels.copy()
    noisy, flipped = flip_labels(labels, rate, 3, noise=noise, features=features)
    np.testing.assert_array_equal(labels, before)  # the input is left alone
    assert flipped.sum() == round(rate * len(labels))
    assert (noisy[flipped] != labels[flipped]).all()
    np.testing.assert_array_equal(noisy[~flipped], labels[~flipped])
    assert noisy.min() >= 0 and noisy.max() < 4


def test_uniform_spreads_over_the_other_classes_and_is_seeded():
    labels = np.zeros(6000, dtype=np.int64)
    noisy, flipped = flip_labels(labels, 0.5, 0, n_classes=4)
    counts = np.bincount(noisy[flipped], minlength=4)
    assert counts[0] == 0
    assert np.allclose(counts[1:] / flipped.sum(), 1 / 3, atol=0.03)
    again, _ = flip_labels(labels, 0.5, 0, n_classes=4)
    other, _ = flip_labels(labels, 0.5, 1, n_classes=4)
    np.testing.assert_array_equal(noisy, again)
    assert (noisy != other).any()


def test_confusable_picks_the_nearest_other_centroid():
    # classes 0 and 1 are close, 2 is far: every flip of a 0 goes to 1 and of a 1 to 0
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [100.0, 0.0]])
    labels = np.repeat(np.arange(3), 100)
    features = centres[labels] + rng.normal(scale=0.3, size=(300, 2))
    noisy, flipped = flip_labels(labels, 0.3, 0, noise="confusable", features=features)
    expected = np.array([1, 0, 1])[labels]
    np.testing.assert_array_equal(noisy[flipped], expected[flipped])


def test_matches_the_draw_order_the_benchmarks_used():
    """The rows are drawn first, then one class offset per flipped row in row order: the
    sequence the label-noise benchmarks were run with, so their figures reproduce."""
    labels = np.arange(100) % 7
    rng = np.random.default_rng(42)
    mask = np.zeros(100, dtype=bool)
    mask[rng.choice(100, 20, replace=False)] = True
    expected = labels.copy()
    expected[mask] = (labels[mask] + rng.integers(1, 7, mask.sum())) % 7
    noisy, flipped = flip_labels(labels, 0.2, 42, n_classes=7)
    np.testing.assert_array_equal(flipped, mask)
    np.testing.assert_array_equal(noisy, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 1.5}, "flip rate"),
        ({"noise": "pairwise"}, "unknown noise model"),
        ({"noise": "confusable"}, "needs the rows' features"),
        ({"labels": np.array([0.5, 1.0])}, "class indices"),
        ({"labels": np.array([0, 5]), "n_classes": 3}, r"\[0, 3\)"),
        ({"labels": np.zeros(4, dtype=int)}, "at least two classes"),
        ({"noise": "confusable", "features": np.full((10, 2), np.nan)}, "finite"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs, message):
    arguments = {"labels": np.arange(10) % 2, "rate": 0.2, "seed": 0, **kwargs}
    with pytest.raises(InputError, match=message):
        flip_labels(
            arguments.pop("labels"), arguments.pop("rate"), arguments.pop("seed"), **arguments
        )


@pytest.mark.parametrize("noise", ["uniform", "confusable"])
def test_conflicting_duplicates_repeat_rows_with_another_label(noise):
    features, labels = _blobs(40, 3)
    sources, conflicting = conflicting_duplicates(labels, 0.25, 5, noise=noise, features=features)
    assert len(sources) == 30 and len(set(sources.tolist())) == 30
    assert (np.diff(sources) > 0).all()
    assert (conflicting != labels[sources]).all()
    assert conflicting.min() >= 0 and conflicting.max() < 3
    # the same draw as the flips: same rows, same new labels
    noisy, flipped = flip_labels(labels, 0.25, 5, noise=noise, features=features)
    np.testing.assert_array_equal(sources, np.flatnonzero(flipped))
    np.testing.assert_array_equal(conflicting, noisy[flipped])
    with pytest.raises(InputError, match="flip rate"):
        conflicting_duplicates(labels, -0.1, 0)
