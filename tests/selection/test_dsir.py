import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from infscope.errors import InputError
from infscope.selection.base import Pool
from infscope.selection.dsir import (
    DSIR,
    dsir_log_weights,
    hashed_ngram_counts,
    ngram_bucket,
    tokenize,
)

COMMON = ["the", "a", "of", "and", "is", "to"]


def domain_text(rng, words, length=30, mix=None):
    """``length`` words: each from ``words`` (or, with probability ``mix``, from ``mix[1]``),
    interleaved with common function words."""
    out = []
    for _ in range(length):
        if rng.random() < 0.3:
            out.append(rng.choice(COMMON))
        elif mix is not None and rng.random() < mix[0]:
            out.append(rng.choice(mix[1]))
        else:
            out.append(rng.choice(words))
    return " ".join(out)


def two_domains(seed=0, per=100, m=30):
    """Pool: ``per`` texts about 'alpha' words then ``per`` about 'beta' words; target: alpha."""
    rng = np.random.default_rng(seed)
    alpha = [f"alpha{i}" for i in range(80)]
    beta = [f"beta{i}" for i in range(80)]
    texts = [domain_text(rng, alpha) for _ in range(per)] + [
        domain_text(rng, beta) for _ in range(per)
    ]
    target = [domain_text(rng, alpha) for _ in range(m)]
    pool = Pool(ids=[f"t{i}" for i in range(2 * per)], texts=texts, target_texts=target)
    return pool, np.arange(2 * per) < per


def test_tokenize_lowercases_words_and_punctuation():
    assert tokenize("Hello, World!! it's 42") == ["hello", ",", "world", "!!", "it", "'", "s", "42"]
    assert tokenize("   ") == []


def test_hash_buckets_are_fixed_across_processes():
    # fixed known buckets (blake2b, 8-byte digest, little-endian, mod 10,000)
    assert ngram_bucket("the") == 9790
    assert ngram_bucket("hello world") == 6775
    code = (
        "from infscope.selection.dsir import hashed_ngram_counts;"
        "c = hashed_ngram_counts(['Hello, world! hello world']);"
        "print(c.indices.tolist(), c.data.tolist())"
    )
    here = hashed_ngram_counts(["Hello, world! hello world"])
    expected = f"{here.indices.tolist()} {here.data.tolist()}"
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == expected


def test_counts_are_unigrams_plus_bigrams():
    counts = hashed_ngram_counts(["a b a b", ""], buckets=1000)
    expected = Counter(ngram_bucket(g, 1000) for g in ["a", "b", "a", "b", "a b", "b a", "a b"])
    assert dict(zip(counts[0].indices.tolist(), counts[0].data.tolist())) == expected
    assert counts[1].nnz == 0 and counts.shape == (2, 1000)
    assert hashed_ngram_counts(["a b c"], buckets=1000, ngrams=1).sum() == 3
    assert hashed_ngram_counts(["a b c"], buckets=1000, ngrams=3).sum() == 6


def test_log_weights_match_the_add_one_bag_of_ngrams_formula():
    texts = ["red fish blue fish", "one fish two fish", "red red red", "blue sky"]
    target = ["red fish", "red blue fish"]
    buckets = 50

    def bag(docs):
        counts = Counter()
        for doc in docs:
            words = doc.split()
            counts.update(ngram_bucket(w, buckets) for w in words)
            counts.update(ngram_bucket(f"{a} {b}", buckets) for a, b in zip(words, words[1:]))
        total = sum(counts.values()) + buckets
        return lambda b: (counts[b] + 1) / total

    p_target, p_raw = bag(target), bag(texts)
    expected = []
    for doc in texts:
        words = doc.split()
        grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
        buckets_of = [ngram_bucket(g, buckets) for g in grams]
        expected.append(sum(np.log(p_target(b)) - np.log(p_raw(b)) for b in buckets_of))
    got = dsir_log_weights(texts, target, buckets=buckets)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_weights_order_texts_by_their_share_of_target_words():
    rng = np.random.default_rng(0)
    alpha = [f"alpha{i}" for i in range(50)]
    beta = [f"beta{i}" for i in range(50)]
    shares = [0.0, 0.25, 0.5, 0.75, 1.0]
    texts = [domain_text(rng, beta, mix=(s, alpha)) for s in shares for _ in range(20)]
    target = [domain_text(rng, alpha) for _ in range(20)]
    log_w = dsir_log_weights(texts, target).reshape(len(shares), 20)
    means = log_w.mean(axis=1)
    assert np.all(np.diff(means) > 0), means
    assert log_w[-1].min() > log_w[0].max()


def test_dsir_picks_the_target_domain():
    pool, is_alpha = two_domains()
    dsir = DSIR()
    sel = dsir.select(pool, 50)
    assert len(sel) == 50
    assert is_alpha[sel.indices].mean() >= 0.9
    log_w = dsir.log_weights(pool)
    assert log_w[is_alpha].min() > log_w[~is_alpha].max()
    np.testing.assert_allclose(sel.info["log_weights"], log_w[sel.indices])
    assert sel.info["kl_reduction"] > 0
    np.testing.assert_array_equal(sel.weights, 1.0)
    assert re.fullmatch(r"log importance weight [+-]\d+\.\d\d \(rank \d+ of 200\)", sel.reasons[0])


def test_dsir_is_deterministic_given_the_seed():
    pool, _ = two_domains(seed=1)
    a, b = DSIR(seed=7).select(pool, 40), DSIR(seed=7).select(pool, 40)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.reasons == b.reasons
    assert not np.array_equal(a.indices, DSIR(seed=8).select(pool, 40).indices)


def test_gumbel_top_k_samples_in_proportion_to_the_weights():
    # one pick from three texts: the Gumbel-max trick picks text i with probability w_i / sum(w)
    texts = ["alpha alpha", "alpha beta", "beta beta"]
    target = ["alpha", "alpha beta", "beta"]
    pool = Pool(ids=["x", "y", "z"], texts=texts, target_texts=target)
    probs = np.exp(dsir_log_weights(texts, target))
    probs /= probs.sum()
    runs = 1000
    picks = [DSIR(seed=s).select(pool, 1).indices[0] for s in range(runs)]
    freq = np.bincount(picks, minlength=3) / runs
    np.testing.assert_allclose(freq, probs, atol=4 * np.sqrt(0.25 / runs))


def test_text_without_words_is_neutral():
    log_w = dsir_log_weights(["alpha beta", "", "?!"], ["alpha"])
    assert log_w[1] == 0.0 and log_w[2] != 0.0  # punctuation is a token


def test_dsir_validates_inputs():
    ids = ["a", "b"]
    with pytest.raises(InputError, match="target_texts"):
        DSIR().select(Pool(ids=ids, texts=["x", "y"]), 1)
    with pytest.raises(InputError, match="empty"):
        DSIR().select(Pool(ids=ids, texts=["x", "y"], target_texts=[]), 1)
    with pytest.raises(InputError, match="target texts contain no words"):
        DSIR().select(Pool(ids=ids, texts=["x", "y"], target_texts=["", "  "]), 1)
    with pytest.raises(InputError, match="pool's texts contain no words"):
        DSIR().select(Pool(ids=ids, texts=["", " "], target_texts=["x"]), 1)
    with pytest.raises(InputError, match="one string"):
        hashed_ngram_counts("just one text")
    with pytest.raises(InputError, match="buckets"):
        DSIR(buckets=1)
    with pytest.raises(InputError, match="ngrams"):
        DSIR(ngrams=0)
