"""Target alignment on noisy pools: the exact mean over nearest targets, the rejection of rows
whose label pulls against the targets, and the noise estimate in summaries and diagnostics."""

import numpy as np
import pytest

from infscope.errors import InputError
from infscope.evaluation.noise import flip_labels
from infscope.selection import (
    ClusterMatch,
    Pool,
    TargetAligned,
    TargetSimilarity,
    build_selector,
    diagnose,
    estimate_noise,
    target_alignment,
)


def test_alignment_is_the_mean_influence_over_the_nearest_targets():
    rng = np.random.default_rng(0)
    features, targets = rng.normal(size=(30, 4)), rng.normal(size=(7, 4))
    influence = rng.normal(size=(7, 30))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim = unit(features) @ unit(targets).T
    for k in (1, 3, 7, 50):
        expected = [influence[np.argsort(-sim[i])[: min(k, 7)], i].mean() for i in range(30)]
        np.testing.assert_allclose(target_alignment(influence, features, targets, k), expected)
    with pytest.raises(InputError, match="neighbours"):
        target_alignment(influence, features, targets, 0)
    with pytest.raises(InputError, match="target and"):
        target_alignment(influence, features, targets[:5], 3)


def noisy_pool(rate=0.3, seed=0):
    """Three classes in 2-d blobs; a softmax-regression model fitted to the clean labels; the
    per-example gradients ``(p - onehot(y)) x`` of the pool (noisy labels) and of 30 clean
    targets; influence = minus the cosine of pool and target gradients' descent directions (a
    step on a row's loss moves the target's loss by -lr <g_target, g_row>, so positive cosine of
    the gradients helps)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    clean = np.repeat(np.arange(3), 100)
    x = centres[clean] + rng.normal(size=(300, 2))
    labels, flipped = flip_labels(clean, rate, seed, noise="confusable", features=x)
    target_labels = np.repeat(np.arange(3), 10)
    tx = centres[target_labels] + rng.normal(size=(30, 2))
    weights = np.hstack([centres, np.zeros((3, 1))]) * 0.5  # a sensible fitted model

    def grads(points, y):
        h = np.hstack([points, np.ones((len(points), 1))])
        logits = h @ weights.T
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - np.eye(3)[y])[:, :, None] * h[:, None, :]
        g = g.reshape(len(points), -1)
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    influence = grads(tx, target_labels) @ grads(x, labels).T
    pool = Pool(
        ids=[str(i) for i in range(300)],
        influence=influence,
        features=x,
        target_features=tx,
        tags={"label": labels.tolist()},
    )
    return pool, flipped


def test_aligned_match_rejects_the_rows_whose_label_pulls_against_the_targets():
    pool, flipped = noisy_pool()
    aligned = TargetAligned(neighbours=5, n_clusters=6, seed=0).select(pool, 90)
    blind = ClusterMatch(n_clusters=6, seed=0).select(pool, 90)
    assert flipped[blind.indices].mean() > 0.2  # label-blind: the pool's noise comes along
    assert flipped[aligned.indices].mean() < 0.05
    assert aligned.info["within"] == "cluster-match"
    assert 0.2 < aligned.info["rejected_share"] < 0.45
    assert aligned.info["budget_from_rejected"] == 0
    again = build_selector("aligned-match", seed=0, neighbours=5, n_clusters=6).select(pool, 90)
    np.testing.assert_array_equal(again.indices, aligned.indices)
    # any label-blind selector can serve the eligible rows
    top = TargetAligned(neighbours=5, within=TargetSimilarity()).select(pool, 60)
    assert top.info["within"] == "similarity" and flipped[top.indices].mean() < 0.05


def test_too_few_eligible_rows_fill_with_the_best_aligned():
    pool, _ = noisy_pool()
    alignment = target_alignment(pool.influence, pool.features, pool.target_features, 5)
    threshold = np.sort(alignment)[-20]  # 20 eligible rows for a budget of 50
    sel = TargetAligned(neighbours=5, threshold=float(threshold)).select(pool, 50)
    assert set(sel.indices) == set(np.argsort(-alignment)[:50])
    assert sel.info["budget_from_rejected"] == pytest.approx(30 / 50)


def test_noise_estimate_in_summary_and_diagnostics():
    pool, flipped = noisy_pool()
    blind = ClusterMatch(n_clusters=6, seed=0).select(pool, 90)
    aligned = TargetAligned(neighbours=10, n_clusters=6, seed=0).select(pool, 90)
    estimate = estimate_noise(pool, blind.indices)
    assert abs(estimate.pool - flipped.mean()) < 0.1  # the estimate tracks the true noise
    assert estimate_noise(pool, aligned.indices).selected < estimate.selected
    assert "estimated label noise" in blind.summary(pool)
    assert "estimated label noise" in diagnose(blind, pool).text()
    bare = Pool(ids=pool.ids, features=pool.features, target_features=pool.target_features)
    assert estimate_noise(bare, blind.indices) is None
    assert "estimated label noise" not in blind.summary(bare)


def test_bad_options_are_clear_errors():
    with pytest.raises(InputError, match="neighbours"):
        TargetAligned(neighbours=0)
    with pytest.raises(InputError, match="within must be a Selector"):
        TargetAligned(within="cluster-match")
    pool, _ = noisy_pool()
    no_influence = Pool(ids=pool.ids, features=pool.features, target_features=pool.target_features)
    with pytest.raises(InputError, match="needs influence"):
        TargetAligned().select(no_influence, 10)
    mismatched = Pool(
        ids=pool.ids,
        influence=pool.influence[:5],
        features=pool.features,
        target_features=pool.target_features,
    )
    with pytest.raises(InputError, match="target features of the influence's queries"):
        TargetAligned().select(mismatched, 10)
    assert estimate_noise(mismatched, np.arange(10)) is None
