import numpy as np
import pytest

from infscope.errors import InfscopeWarning, InputError
from infscope.selection import Pool, RandomSelection, SoftmaxSampling, Stratified, TopK


def pool(n=100, seed=0):
    rng = np.random.default_rng(seed)
    labels = ["a"] * (n // 2) + ["b"] * (3 * n // 10) + ["c"] * (n - n // 2 - 3 * n // 10)
    return Pool(ids=[str(i) for i in range(n)], scores=rng.normal(size=n), tags={"label": labels})


def test_top_and_bottom_k():
    p = pool()
    top = TopK(balance=None).select(p, 10)
    assert set(top.indices) == set(np.argsort(-p.scores)[:10])
    assert list(top.indices) == list(np.argsort(-p.scores)[:10])  # in rank order
    bottom = TopK(bottom=True, balance=None).select(p, 0.1)
    assert set(bottom.indices) == set(np.argsort(p.scores)[:10])


def test_ties_do_not_follow_file_order():
    p = Pool(ids=[str(i) for i in range(1000)], scores=np.zeros(1000))
    picked = TopK(seed=3).select(p, 100).indices
    assert picked.max() > 500  # not just the first 100 rows


def test_random_is_deterministic_per_seed():
    p = pool()
    a, b, c = (RandomSelection(seed=s).select(p, 20).indices for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert set(a) != set(c)


def test_stratified_keeps_proportions_and_balanced_equalises():
    p = pool()
    prop = Stratified(by="label").select(p, 20)
    assert {k: v[1] for k, v in prop.counts(p, "label").items()} == {"a": 10, "b": 6, "c": 4}
    bal = Stratified(by="label", balanced=True).select(p, 30)
    assert {k: v[1] for k, v in bal.counts(p, "label").items()} == {"a": 10, "b": 10, "c": 10}
    # when a group is too small, the rest is shared by the others
    bal = Stratified(by="label", balanced=True).select(p, 90)
    assert {k: v[1] for k, v in bal.counts(p, "label").items()} == {"a": 40, "b": 30, "c": 20}
    # within a group, the best-scored are kept
    labels = p.tag("label")
    chosen_a = [i for i in prop.indices if labels[i] == "a"]
    members = np.flatnonzero(labels == "a")
    assert set(chosen_a) == set(members[np.argsort(-p.scores[members])[:10]])


def test_stratified_needs_the_tag():
    with pytest.raises(InputError, match="tag:task"):
        Stratified(by="task").select(pool(), 10)


def test_softmax_sampling_interpolates_between_topk_and_random():
    p = pool(n=2000)
    top = set(TopK().select(p, 200).indices)
    cold = set(SoftmaxSampling(temperature=0.01).select(p, 200).indices)
    warm = SoftmaxSampling(temperature=1.0).select(p, 200)
    hot = SoftmaxSampling(temperature=100.0).select(p, 200)
    assert len(cold & top) >= 190
    assert p.scores[warm.indices].mean() > p.scores[hot.indices].mean() + 0.5
    assert abs(p.scores[hot.indices].mean()) < 0.2
    with pytest.raises(InputError):
        SoftmaxSampling(temperature=0)


def test_stratified_wraps_any_selector():
    from infscope.selection import LESS, build_selector

    # one task whose queries favour label 1: LESS alone (unbalanced) takes only label-1 examples
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 50)
    influence = rng.normal(0, 0.1, (4, 100)) + labels * 1.0
    pool = Pool(ids=[str(i) for i in range(100)], influence=influence, tags={"label": labels})
    with pytest.warns(InfscopeWarning, match="skewed toward one label"):
        alone = LESS(balance=None).select(pool, 20)
    assert labels[alone.indices].mean() == 1.0
    assert labels[LESS().select(pool, 20).indices].mean() <= 0.6  # the default label balance
    wrapped = Stratified(by="label", within=LESS()).select(pool, 20)
    assert np.bincount(labels[wrapped.indices]).tolist() == [10, 10]
    # inside each label, LESS's choice: the highest mean influence
    zeros = np.flatnonzero(labels == 0)
    best = set(zeros[np.argsort(-influence[:, zeros].mean(0))[:10]])
    assert set(wrapped.indices[labels[wrapped.indices] == 0]) == best
    assert wrapped.method == "less+stratified-by-label" and "within label=0" in wrapped.reasons[0]
    built = build_selector("less", stratify_by="label").select(pool, 20)
    np.testing.assert_array_equal(np.sort(built.indices), np.sort(wrapped.indices))
    with pytest.raises(InputError, match="needs influence"):
        Stratified(within=LESS()).select(Pool(ids=["a", "b"], tags={"label": [0, 1]}), 1)
