import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from infscope.errors import InputError
from infscope.selection.demonstrations import (
    BSRDemonstrations,
    InContextInfluence,
    SetBSRDemonstrations,
    SimilarDemonstrations,
    TokenQuery,
    idf_weights,
)


def test_similar_picks_the_nearest_by_cosine_in_rank_order():
    candidates = np.array([[1.0, 0.0], [0.0, 1.0], [10.0, 9.0], [1.0, 1.2], [-1.0, 0.0]])
    sel = SimilarDemonstrations(candidates, ids=list("abcde")).select([1.0, 1.0], 3)
    assert sel.ids == ["c", "d", "a"]  # direction, not length, decides
    assert sel.info["order"] == "rank"
    assert sel.reasons[0].startswith("cosine 0.99") and sel.reasons[0].endswith("(rank 1)")


def covering_candidates():
    """The query's tokens are e0, e1, e2. Candidates 0 and 1 both cover e0 and e1 (near
    duplicates); candidate 2 covers only e2; candidate 3 covers nothing."""
    e = np.eye(4)
    query = e[:3]
    candidates = [
        e[[0, 1]],
        e[[0, 1]] + [0.0, 0.0, 0.0, 0.05],
        e[[2]],
        e[[3]],
    ]
    return query, candidates


def test_set_bsr_picks_the_complementary_pair_where_bsr_picks_redundant_ones():
    query, candidates = covering_candidates()
    bsr = BSRDemonstrations(candidates).select(query, 2)
    assert bsr.indices.tolist() == [0, 1]  # each recalls 2 of 3 tokens, together still 2
    np.testing.assert_allclose(
        BSRDemonstrations(candidates).recall(query), [2 / 3, 2 / 3 / math.hypot(1, 0.05), 1 / 3, 0]
    )
    set_bsr = SetBSRDemonstrations(candidates).select(query, 2)
    assert set_bsr.indices.tolist() == [0, 2]  # together they cover every token
    assert set_bsr.info["set_bsr"] == pytest.approx(1.0)
    assert set_bsr.reasons[1].startswith("set recall gain 0.3333 -> set BSR 1.0000")


def test_idf_weights_follow_bertscore_and_reweight_the_recall():
    corpus = [[1, 2], [1, 3], [1]]
    np.testing.assert_allclose(
        idf_weights([1, 2, 9], corpus), [0.0, math.log(4 / 2), math.log(4 / 1)]
    )
    query, candidates = covering_candidates()
    weighted = TokenQuery(query, weights=np.array([0.1, 0.1, 1.0]))
    assert BSRDemonstrations(candidates).select(weighted, 1).indices.tolist() == [2]
    with pytest.raises(InputError, match="token weights"):
        BSRDemonstrations(candidates).select(TokenQuery(query, np.array([1.0, -1.0, 1.0])), 1)
    with pytest.raises(InputError, match="one each"):
        BSRDemonstrations(candidates).select(TokenQuery(query, np.ones(2)), 1)


def test_set_bsr_is_greedy_on_the_set_recall_and_never_below_independent_ranking():
    rng = np.random.default_rng(0)
    candidates = [rng.normal(size=(rng.integers(2, 8), 16)) for _ in range(30)]
    for trial in range(5):
        query = rng.normal(size=(10, 16))
        bsr = BSRDemonstrations(candidates)
        best = bsr.token_similarity(query)  # [tokens, candidates]
        ranked = bsr.select(query, 4).indices
        greedy = SetBSRDemonstrations(candidates).select(query, 4)
        assert greedy.indices[0] == ranked[0]  # the first pick is the best single candidate
        assert greedy.info["set_bsr"] == pytest.approx(best[:, greedy.indices].max(1).mean())
        assert greedy.info["set_bsr"] >= best[:, ranked].max(1).mean() - 1e-12, trial


def planted(n=30, m=4, n_prompts=600, noise=0.5, position_weight=None, seed=0):
    rng = np.random.default_rng(seed)
    effect = rng.normal(size=n)
    effect[:3] = 3.0  # planted helpful
    effect[3:6] = -3.0  # planted harmful
    weight = np.ones(m) if position_weight is None else np.asarray(position_weight)
    calls = []

    def lm_score(demos, query):
        calls.append(list(demos))
        return float(weight @ effect[demos] + noise * rng.normal())

    ici = InContextInfluence(n, lm_score, m=m, n_prompts=n_prompts, seed=seed)
    return ici, effect, calls


def test_in_context_influence_recovers_planted_effects():
    ici, effect, calls = planted()
    est = ici.estimate("query")
    assert len(calls) == 600 and est.scores.shape == (600,) and est.prompts.shape == (600, 4)
    assert spearmanr(est.influence, effect).statistic > 0.9
    assert set(np.argsort(est.influence)[:3]) == {3, 4, 5}  # the harmful ones are the worst
    sel = ici.select("query", 3)
    assert sorted(sel.indices) == [0, 1, 2]
    assert sel.reasons[0].startswith("in-context influence +")
    assert sel.info["influence"].shape == (30,)
    np.testing.assert_array_equal(est.counts, np.bincount(est.prompts.ravel(), minlength=30))


def test_influence_is_the_contrast_of_prompt_means():
    ici, _, _ = planted(n=8, m=3, n_prompts=60)
    est = ici.estimate(None)
    contains = (est.prompts == 5).any(axis=1)
    expected = est.scores[contains].mean() - est.scores[~contains].mean()
    assert est.influence[5] == pytest.approx(expected)
    at_front = est.prompts[:, 0] == 5
    assert est.position_influence[5, 0] == pytest.approx(
        est.scores[at_front].mean() - est.scores[~contains].mean()
    )


def test_position_weight_reveals_recency():
    ici, _, _ = planted(n=20, m=4, n_prompts=1500, position_weight=[0.25, 0.5, 1.0, 2.0])
    weights = ici.estimate("q").position_weight
    assert np.all(np.diff(weights) > 0), weights
    flat, _, _ = planted(n=20, m=4, n_prompts=1500)
    np.testing.assert_allclose(flat.estimate("q").position_weight, 1.0, atol=0.15)


def test_positive_only_and_determinism():
    ici, _, _ = planted(seed=4)
    np.testing.assert_array_equal(ici.prompts(), planted(seed=4)[0].prompts())
    everything = InContextInfluence(30, ici.lm_score, m=4, n_prompts=600, positive_only=False)
    assert len(everything.select("q", 30)) == 30
    helpful = ici.select("q", 30)
    assert 0 < len(helpful) < 30
    assert all(v > 0 for v in helpful.info["influence"][helpful.indices])


def test_in_context_influence_validation():
    score = lambda demos, query: 0.0  # noqa: E731
    with pytest.raises(InputError, match="m must be below"):
        InContextInfluence(4, score, m=4)
    with pytest.raises(InputError, match="n_prompts must be a positive count"):
        InContextInfluence(10, score, n_prompts=0)
    with pytest.raises(InputError, match="lm_score must be a callable"):
        InContextInfluence(10, "model")
    with pytest.raises(InputError, match="appear in none of the 3 prompts.*raise n_prompts"):
        InContextInfluence(30, score, m=2, n_prompts=3).select("q", 2)
    with pytest.raises(InputError, match="appear in all of the 1 prompts"):
        InContextInfluence(5, score, m=2, n_prompts=1).select("q", 2)
    with pytest.raises(InputError, match="must be finite"):
        InContextInfluence(5, lambda d, q: float("nan"), m=2, n_prompts=20).select("q", 2)
    with pytest.raises(InputError, match="one real number, got str"):
        InContextInfluence(5, lambda d, q: "good", m=2, n_prompts=20).select("q", 2)


def test_demonstration_input_validation():
    with pytest.raises(InputError, match="dimension 3, the candidates have 2"):
        SimilarDemonstrations(np.eye(2)).select([1.0, 0.0, 0.0], 1)
    with pytest.raises(InputError, match="all-zero row"):
        SimilarDemonstrations(np.array([[0.0, 0.0], [1.0, 0.0]]))
    with pytest.raises(InputError, match="budget 3 must lie in 1..2"):
        SimilarDemonstrations(np.eye(2)).select([1.0, 0.0], 3)
    with pytest.raises(InputError, match="2 ids for 3 candidates"):
        SimilarDemonstrations(np.eye(3), ids=["a", "b"])
    with pytest.raises(InputError, match="differ in dimension"):
        BSRDemonstrations([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(InputError, match="no candidates"):
        SetBSRDemonstrations([])


def test_in_context_influence_with_a_tiny_gpt2():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=32,
        n_positions=64,
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_inner=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    rng = np.random.default_rng(0)
    demos = [rng.integers(0, 32, size=4).tolist() for _ in range(6)]  # "input input input label"
    query = (rng.integers(0, 32, size=3).tolist(), 7)  # (input tokens, correct answer token)

    def lm_score(indices, q):
        tokens, answer = q
        ids = torch.tensor([sum((demos[i] for i in indices), []) + tokens])
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
        return torch.log_softmax(logits, dim=-1)[answer].item()

    ici = InContextInfluence(6, lm_score, m=2, n_prompts=30, positive_only=False)
    sel = ici.select(query, 3)
    assert len(sel) == 3 and np.isfinite(sel.info["influence"]).all()
    np.testing.assert_array_equal(sel.indices, ici.select(query, 3).indices)  # deterministic
