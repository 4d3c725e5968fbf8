"""The Estimator interface: ``fit`` on training features, then ``score`` queries.

An estimator reads features from :class:`~infscope.store.FeatureStore` objects block by block,
so memory stays bounded by the block size (plus the output matrix, which may be a memory map).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from infscope.attribution.scores import Scores, SelfInfluence
from infscope.errors import InputError, StoreError, StoreMismatchError
from infscope.store import FeatureStore

NORMALIZATIONS = ("none", "unit")


class Estimator(ABC):
    """``fit(train_store)`` → ``score(query_store)`` / ``self_influence()``.

    Positive scores mean the training example helps the query (lowers its measurement).
    """

    name = "estimator"

    def __init__(self, block_size: int = 4096) -> None:
        if block_size < 1:
            raise InputError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        self.train: FeatureStore | None = None

    def fit(self, train: FeatureStore) -> Estimator:
        """Remember (and validate) the training features."""
        if train.spec.gradient != "loss":
            raise StoreMismatchError(
                f"{train.root} holds {train.spec.gradient!r} gradients; training features must be "
                f"loss gradients (extract them with gradient='loss')"
            )
        if not train.is_complete():
            raise StoreError(
                f"{train.root} is incomplete {train.status()}; resume extraction first"
            )
        self.train = train
        self._fit(train)
        return self

    def _fit(self, train: FeatureStore) -> None:
        """Estimator-specific preparation (factors, kernels); nothing by default."""

    def _require_fit(self) -> FeatureStore:
        if self.train is None:
            raise InputError(f"{type(self).__name__} is not fitted: call fit(train_store) first")
        return self.train

    def check_query(self, query: FeatureStore) -> None:
        """Queries must be projected exactly like the training features."""
        train = self._require_fit()
        for name in ("feature_dim", "projection", "modules", "model"):
            ours, theirs = getattr(train.spec, name), getattr(query.spec, name)
            if ours != theirs:
                raise StoreMismatchError(
                    f"query store {query.root} differs from training store {train.root} in "
                    f"{name}: {theirs!r} vs {ours!r}; extract both with the same settings"
                )
        if not query.is_complete():
            raise StoreError(
                f"{query.root} is incomplete {query.status()}; resume extraction first"
            )

    def score(self, query: FeatureStore, out: str | Path | None = None) -> Scores:
        """Scores ``[n_query, n_train]``; with ``out``, written into a memory-mapped ``.npy``."""
        train = self._require_fit()
        self.check_query(query)
        shape = (query.n_examples, train.n_examples)
        if out is None:
            values = np.zeros(shape, dtype=np.float32)
        else:
            values = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=shape)
        self._score_into(query, values)
        return Scores(values, list(query.ids), list(train.ids), self.name, self.describe())

    def self_influence(self) -> SelfInfluence:
        """Each training example's score against itself."""
        train = self._require_fit()
        values = self._self_influence(train)
        return SelfInfluence(values.astype(np.float32), list(train.ids), self.name, self.describe())

    @abstractmethod
    def _score_into(self, query: FeatureStore, values: np.ndarray) -> None:
        """Fill ``values[q, t]``."""

    @abstractmethod
    def _self_influence(self, train: FeatureStore) -> np.ndarray:
        """One value per training example."""

    def describe(self) -> dict:
        """Settings recorded with the scores."""
        return {"method": self.name, "block_size": self.block_size}
