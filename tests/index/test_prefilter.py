"""The lexical prefilter ranks by TF-IDF cosine, exact scoring of candidates equals the full
matrix on those pairs, and with every example a candidate it is the exact top-k."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.attribution import TracIn
from infscope.errors import InputError
from infscope.index import LexicalPrefilter, candidate_recall, score_candidates
from tests.index.test_ann import clustered, write_store

TEXTS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "stock markets fell sharply today",
    "the cat chased a mouse",
    "interest rates and stock prices",
    "dogs and cats are pets",
]


def test_candidates_follow_shared_words():
    prefilter = LexicalPrefilter(TEXTS)
    found = prefilter.candidates(["my cat sat down", "stock prices rose"], 2)
    assert found[0, 0] == 0 and set(found[0]) == {0, 3}
    assert set(found[1]) == {2, 4}
    assert prefilter.candidates(["zzz unknown"], 3).tolist() == [[0, 1, 2]]  # ties by index
    with pytest.raises(InputError, match="m must"):
        prefilter.candidates(["cat"], 0)
    with pytest.raises(InputError, match="one text"):
        LexicalPrefilter([None, "x"])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefilter")
    train = write_store(root / "train", {"a": clustered(200, 16, 5, 0)}, "loss", "t")
    query = write_store(root / "query", {"a": clustered(9, 16, 5, 1)}, "measurement", "q")
    return train, query


def test_scores_of_candidates_are_exact(stores):
    train, query = stores
    estimator = TracIn().fit(train)
    full = estimator.score(query).values
    rng = np.random.default_rng(0)
    candidates = np.stack([rng.choice(200, 30, replace=False) for _ in range(9)])
    top = score_candidates(estimator, query, candidates, k=5)
    restricted = np.take_along_axis(full, candidates, 1)
    best = np.take_along_axis(candidates, np.argsort(-restricted, 1, kind="stable")[:, :5], 1)
    assert {tuple(sorted(r)) for r in top.arrays["helpful"]} == {tuple(sorted(r)) for r in best}
    np.testing.assert_allclose(
        top.arrays["helpful_values"], np.take_along_axis(full, top.arrays["helpful"], 1), rtol=1e-5
    )
    everything = np.tile(np.arange(200), (9, 1))
    exact = estimator.score_top(query, 5)
    assert candidate_recall(everything, exact) == 1.0
    np.testing.assert_array_equal(
        score_candidates(estimator, query, everything, 5).arrays["harmful"], exact.arrays["harmful"]
    )
    assert 0.0 <= candidate_recall(candidates, exact) < 1.0
    with pytest.raises(InputError, match="candidate indices"):
        score_candidates(estimator, query, candidates + 200, 5)
    with pytest.raises(InputError, match="candidates must be"):
        score_candidates(estimator, query, candidates[:3], 5)
