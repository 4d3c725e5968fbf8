"""infscope.audit.evidence.noise_structure: the noise-structure estimate and its uniform-noise null,
on synthetic flips of known structure at 2-200 classes with few examples per class."""

import itertools

import numpy as np
import pytest

from infscope.audit.evidence import NULL_LEVEL, _max_multiplicity, noise_structure
from infscope.evaluation.noise import flip_labels


def recognising_model(true, classes, rng, confusion=0.1, sharp=0.85):
    """Out-of-sample probabilities of a model that puts ``sharp`` on the true class — or, for a
    ``confusion`` share of the rows, on the true class's partner (2k <-> 2k+1): a model that
    confuses neighbouring classes whatever the labels say."""
    n = true.size
    probs = np.full((n, classes), (1 - sharp) / (classes - 1))
    top = true.copy()
    confused = rng.random(n) < confusion
    top[confused] = np.minimum(true[confused] ^ 1, classes - 1)
    probs[np.arange(n), top] = sharp
    return probs


def pair_flips(true, classes, rate, rng):
    """Flip ``rate`` of the labels to the true class's partner (2k <-> 2k+1): pure structure."""
    noisy = true.copy()
    rows = rng.choice(true.size, int(round(rate * true.size)), replace=False)
    partner = true[rows] ^ 1
    noisy[rows] = np.where(partner < classes, partner, true[rows] - 1)
    return noisy


@pytest.mark.parametrize("bins, m", [(3, 4), (5, 3), (99, 2), (2, 7), (4, 6)])
def test_null_simulation_matches_the_exact_largest_count(bins, m):
    # exact: every one of bins**m equally likely placements of m flips among the other classes
    placements = itertools.product(range(bins), repeat=m)
    exact = np.mean([np.bincount(p, minlength=bins).max() for p in placements])
    drawn = _max_multiplicity(np.random.default_rng(0), m, bins, 20000)
    assert drawn.mean() == pytest.approx(exact, abs=0.03)  # 20k draws: standard error < 0.01


@pytest.mark.parametrize("classes", [10, 50, 200])
@pytest.mark.parametrize("per_class", [10, 20])
def test_uniform_flips_with_few_examples_per_class_never_switch_the_ranking(classes, per_class):
    """20% uniform flips = 2-4 per class, which chance alone often sends to one class: the
    estimate must not claim structure. With a model that recognises the true class the null
    test's false-switch rate is 1 - NULL_LEVEL = 1% (30 draws: at most 2 rejections, expected
    0.3). A model that also confuses neighbouring classes on 10% of the rows adds real structure
    to the estimated flips (the test may reject), yet the ranking switches on no draw of either."""
    assert NULL_LEVEL == 0.99
    rejected, betas = 0, []
    for draw in range(30):
        rng = np.random.default_rng(draw)
        true = np.repeat(np.arange(classes), per_class)
        noisy, _ = flip_labels(true, 0.2, rng, noise="uniform", n_classes=classes)
        exact = noise_structure(
            recognising_model(true, classes, rng, confusion=0.0), noisy, draws=500, seed=draw
        )
        confused = noise_structure(recognising_model(true, classes, rng), noisy, draws=500)
        rejected += exact.p_value < 1 - NULL_LEVEL
        betas += [exact.beta, confused.beta]
        assert exact.null_mean > 1 / (classes - 1)  # chance concentrates few flips
    assert rejected <= 2
    assert max(betas) == 0.0


@pytest.mark.parametrize("classes, per_class", [(10, 10), (50, 10), (200, 5), (10, 100)])
def test_confusable_flips_switch_to_the_margin_when_the_evidence_suffices(classes, per_class):
    for draw in range(10):
        rng = np.random.default_rng(draw)
        true = np.repeat(np.arange(classes), per_class)
        noisy = pair_flips(true, classes, 0.2, rng)
        structure = noise_structure(recognising_model(true, classes, rng), noisy, seed=draw)
        assert structure.concentration > 0.9 and structure.p_value < 0.01
        assert structure.beta == 1.0, structure


def test_too_little_evidence_of_structure_keeps_the_self_confidence_ranking():
    # 3 classes x 5 examples: 3 flips, all to the partner — chance does that often enough
    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(3), 5)
    noisy = pair_flips(true, 3, 0.2, rng)
    structure = noise_structure(recognising_model(true, 3, rng, confusion=0.0), noisy)
    assert structure.flips == 3 and structure.observed == 1.0
    assert structure.p_value > 0.01 and structure.beta == 0.0


def test_two_classes_and_no_flips_have_no_structure():
    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(2), 50)
    noisy, _ = flip_labels(true, 0.2, rng, n_classes=2)
    two = noise_structure(recognising_model(true, 2, rng, confusion=0.0), noisy)
    assert (two.concentration, two.beta, two.classes) == (0.0, 0.0, 2) and two.flips > 0
    clean = np.repeat(np.arange(5), 20)
    none = noise_structure(recognising_model(clean, 5, rng, confusion=0.0), clean)
    assert none.flips == 0 and none.beta == 0.0 and none.p_value == 1.0
