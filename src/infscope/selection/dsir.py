"""DSIR: data selection by importance resampling on hashed n-grams (Xie et al., NeurIPS 2023).

Every text becomes a vector of hashed n-gram counts (lowercased word/punctuation tokens; unigrams
and bigrams by default, hashed into 10,000 buckets with a stable hash). A bag-of-n-grams model
(add-one smoothed bucket probabilities) is fitted on the target texts and one on the raw pool; a
text's log importance weight is ``log p_target(x) - log p_raw(x)``, i.e. its count vector dotted
with the per-bucket log-probability ratio. The budget is then sampled without replacement with
probability proportional to the weights, by the Gumbel-top-k trick, so the selection follows the
target distribution in feature space instead of collapsing onto the most target-like texts.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from infscope.errors import InputError
from infscope.selection.base import Pool, Selection, Selector
from infscope.selection.basic import gumbel_top_k

_TOKEN = re.compile(r"\w+|[^\w\s]+")


def tokenize(text: str) -> list[str]:
    """Lowercased runs of word characters and runs of punctuation."""
    return _TOKEN.findall(text.lower())


def ngram_bucket(ngram: str, buckets: int = 10_000) -> int:
    """The bucket of one n-gram (tokens joined by single spaces): blake2b, so the same in every
    process and on every machine (Python's ``hash`` is salted per process)."""
    digest = hashlib.blake2b(ngram.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


class _BucketCache(dict):
    """n-gram -> bucket, hashing each distinct n-gram once."""

    def __init__(self, buckets: int) -> None:
        super().__init__()
        self.buckets = buckets

    def __missing__(self, ngram: str) -> int:
        bucket = self[ngram] = ngram_bucket(ngram, self.buckets)
        return bucket


def hashed_ngram_counts(
    texts: Sequence[str], buckets: int = 10_000, ngrams: int = 2
) -> sp.csr_matrix:
    """``[len(texts), buckets]`` sparse counts of each text's 1..``ngrams``-grams by bucket."""
    _check_settings(buckets, ngrams)
    if isinstance(texts, str):
        raise InputError("texts must be a sequence of strings, not one string")
    cache = _BucketCache(buckets)
    indices = array("i")
    indptr = array("q", [0])
    for text in texts:
        words = tokenize(text)
        indices.extend(map(cache.__getitem__, words))
        for n in range(2, ngrams + 1):
            grams = map(" ".join, zip(*(words[i:] for i in range(n))))
            indices.extend(map(cache.__getitem__, grams))
        indptr.append(len(indices))
    cols = np.asarray(indices, dtype=np.int32)
    data = np.ones(len(cols), dtype=np.float64)
    counts = sp.csr_matrix(
        (data, cols, np.asarray(indptr, dtype=np.int64)), shape=(len(texts), buckets)
    )
    counts.sum_duplicates()
    return counts


def bag_of_ngrams(counts: sp.spmatrix) -> np.ndarray:
    """Add-one smoothed bucket probabilities fitted on the rows of ``counts``."""
    totals = np.asarray(counts.sum(axis=0)).ravel() + 1.0
    return totals / totals.sum()


def dsir_log_weights(
    texts: Sequence[str], target_texts: Sequence[str], buckets: int = 10_000, ngrams: int = 2
) -> np.ndarray:
    """Each text's log importance weight ``log p_target(x) - log p_raw(x)``, with bag-of-n-grams
    models fitted on ``target_texts`` and on ``texts`` themselves (the raw pool)."""
    return _weigh(texts, target_texts, buckets, ngrams)[2]


def _weigh(
    texts: Sequence[str], target_texts: Sequence[str], buckets: int, ngrams: int
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Pool counts, target counts and the pool's log importance weights."""
    raw = hashed_ngram_counts(texts, buckets, ngrams)
    target = hashed_ngram_counts(target_texts, buckets, ngrams)
    if target.shape[0] == 0:
        raise InputError("target_texts is empty: give at least one target text")
    if target.nnz == 0:
        raise InputError("the target texts contain no words: nothing to fit the target model on")
    if raw.nnz == 0:
        raise InputError("the pool's texts contain no words: nothing to weigh")
    return raw, target, raw @ (np.log(bag_of_ngrams(target)) - np.log(bag_of_ngrams(raw)))


def kl_reduction(target: sp.spmatrix, raw: sp.spmatrix, selected: sp.spmatrix) -> float:
    """DSIR's data metric: ``KL(target || raw) - KL(target || selected)`` between the smoothed
    bag-of-n-grams models (positive: the selection is closer to the target than the pool is)."""
    log_ratio = np.log(bag_of_ngrams(selected)) - np.log(bag_of_ngrams(raw))
    return float(bag_of_ngrams(target) @ log_ratio)


def _check_settings(buckets: int, ngrams: int) -> None:
    if buckets < 2:
        raise InputError(f"buckets must be at least 2, got {buckets}")
    if ngrams < 1:
        raise InputError(f"ngrams must be at least 1 (1 = unigrams only), got {ngrams}")


class DSIR(Selector):
    """Importance resampling toward ``pool.target_texts`` on hashed n-gram features (Xie et al.
    2023): ``k`` texts sampled without replacement with probability proportional to their
    importance weights (Gumbel-top-k with the selector's seed).

    Each reason gives the pick's log importance weight and its rank in the pool. ``weights`` stay
    1: resampling already moves the selection toward the target, so training on it with the
    importance weights as well would count them twice. ``info`` holds ``log_weights`` (per pick,
    in pick order) and ``kl_reduction`` (:func:`kl_reduction` of the selection). Texts with no
    words have log weight 0 (the same probability under both models).
    """

    name = "dsir"
    requires = ("texts", "target_texts")

    def __init__(self, buckets: int = 10_000, ngrams: int = 2, seed: int = 0) -> None:
        super().__init__(seed)
        _check_settings(buckets, ngrams)
        self.buckets = int(buckets)
        self.ngrams = int(ngrams)

    def log_weights(self, pool: Pool) -> np.ndarray:
        """Every candidate's log importance weight (see :func:`dsir_log_weights`)."""
        if pool.texts is None or pool.target_texts is None:
            raise InputError(f"{self.name} needs texts and target_texts in the pool")
        return dsir_log_weights(pool.texts, pool.target_texts, self.buckets, self.ngrams)

    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        assert pool.texts is not None and pool.target_texts is not None
        raw, target, log_w = _weigh(pool.texts, pool.target_texts, self.buckets, self.ngrams)
        picks = gumbel_top_k(log_w, k, rng)
        rank = np.empty(len(log_w), dtype=np.int64)
        rank[np.argsort(-log_w, kind="stable")] = np.arange(1, len(log_w) + 1)
        reasons = [
            f"log importance weight {log_w[i]:+.2f} (rank {rank[i]} of {len(log_w)})"
            for i in picks.tolist()
        ]
        return self._selection(
            pool,
            picks,
            reasons,
            log_weights=log_w[picks],
            kl_reduction=kl_reduction(target, raw, raw[picks]),
        )
