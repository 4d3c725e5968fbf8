"""A lexical prefilter: narrow the training set to each query's textually closest examples
before exact influence, as the EK-FAC study of LLM generalisation does with TF-IDF.

Exact influence costs a product with every training example; most of a query's most influential
examples share words with it. :class:`LexicalPrefilter` ranks the training texts by TF-IDF
cosine similarity to each query (scikit-learn's ``TfidfVectorizer``, sparse, word 1–2-grams,
sublinear term frequency) and keeps ``m`` candidates; :func:`score_candidates` then scores only
those exactly (reading their features from the store), so the cost per query is ``m`` products
instead of ``n``. What this loses is measured, not assumed:
:func:`~infscope.index.recall.candidate_recall` is the share of the exact top-``k`` that lies
among the candidates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from infscope.attribution.base import CheckpointSum
from infscope.attribution.top_k import TopScores
from infscope.errors import InputError
from infscope.store import FeatureStore

__all__ = ["LexicalPrefilter", "score_candidates"]


class LexicalPrefilter:
    """TF-IDF over the training texts (fit once); :meth:`candidates` per query."""

    def __init__(
        self,
        train_texts: Sequence[str],
        ngram_range: tuple[int, int] = (1, 2),
        min_df: int = 1,
        block_size: int = 1024,
    ) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = list(train_texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InputError("the prefilter needs one text (a string) per training example")
        self.vectorizer = TfidfVectorizer(
            ngram_range=ngram_range, min_df=min_df, sublinear_tf=True, dtype=np.float32
        )
        try:
            self.matrix = self.vectorizer.fit_transform(texts)  # [n, vocab], rows unit-norm
        except ValueError as err:  # every text empty or stop words only
            raise InputError(f"no vocabulary in the training texts: {err}") from None
        self.n_train = len(texts)
        self.block_size = block_size

    def candidates(self, query_texts: Sequence[str], m: int) -> np.ndarray:
        """``[n_query, m]`` training indices, most similar first (ties by the lower index);
        queries sharing no term with a training text rank it by index."""
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise InputError(f"m must be a positive int, got {m!r}")
        m = min(m, self.n_train)
        queries = self.vectorizer.transform(list(query_texts))
        out = np.empty((queries.shape[0], m), dtype=np.int64)
        for start in range(0, queries.shape[0], self.block_size):
            similarity = (queries[start : start + self.block_size] @ self.matrix.T).toarray()
            index = np.broadcast_to(np.arange(self.n_train), similarity.shape)
            order = np.lexsort((index, -similarity), axis=1)[:, :m]
            out[start : start + len(similarity)] = order
        return out


def score_candidates(
    estimator: CheckpointSum, query: FeatureStore, candidates: np.ndarray, k: int = 10
) -> TopScores:
    """Each query's ``k`` most helpful and most harmful training examples among its
    ``candidates`` (``[n_query, m]`` training indices), scored exactly: the same scores as
    ``estimator.score`` on those pairs, at ``m`` instead of ``n`` products per query."""
    if estimator.train is None:
        raise InputError(f"{type(estimator).__name__} is not fitted: call fit(train_store) first")
    train = estimator.train
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.ndim != 2 or candidates.shape[0] != query.n_examples:
        raise InputError(
            f"candidates must be [n_query={query.n_examples}, m], got {candidates.shape}"
        )
    if candidates.size and (candidates.min() < 0 or candidates.max() >= train.n_examples):
        raise InputError(f"candidate indices must lie in [0, {train.n_examples})")
    estimator.check_query(query)
    estimator.check_weights(query)
    k = min(k, candidates.shape[1])
    checkpoints = [c for c, _ in estimator.checkpoint_weights(train)]
    scales = estimator.train_scales()
    arrays: dict[str, list[np.ndarray]] = {}
    step = estimator.rows_per_block(train.feature_dim * len(checkpoints) * candidates.shape[1])
    for start in range(0, query.n_examples, step):
        rows = np.arange(start, min(start + step, query.n_examples))
        vectors = estimator.query_vectors([query.rows(c, rows) for c in checkpoints])
        picked = candidates[rows]
        unique = np.unique(picked)
        train_vectors = estimator.train_vectors(
            [train.rows(c, unique) for c in checkpoints], unique, scales
        )
        exact = np.einsum("qd,qcd->qc", vectors, train_vectors[np.searchsorted(unique, picked)])
        for direction, signed in (("helpful", exact), ("harmful", -exact)):
            order = np.lexsort((picked, -signed), axis=1)[:, :k]
            arrays.setdefault(direction, []).append(np.take_along_axis(picked, order, 1))
            values = np.take_along_axis(exact, order, 1).astype(np.float32)
            arrays.setdefault(f"{direction}_values", []).append(values)
    result = {name: np.concatenate(parts) for name, parts in arrays.items()}
    metadata = {
        **estimator.describe(),
        "candidates": candidates.shape[1],
        "train_store": os.path.abspath(train.root),
        "query_store": os.path.abspath(query.root),
    }
    return TopScores(list(query.ids), list(train.ids), estimator.name, result, metadata)
