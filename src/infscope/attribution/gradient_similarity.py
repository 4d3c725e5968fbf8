"""Gradient dot product, cosine similarity and TracIn over checkpoints.

All three are ``sum_c w_c <phi_c(q), phi_c(z)>`` over checkpoints ``c`` of the projected query
gradient ``phi(q)`` and training gradient ``phi(z)``:

* :class:`GradientSimilarity` — one checkpoint, ``w = 1``; with ``normalize="unit"`` it is the
  cosine similarity;
* :class:`TracIn` — every checkpoint, ``w_c`` = the learning rate in effect there (TracIn-CP:
  the first-order decrease of the query's measurement summed over training).

A positive score means a gradient step on ``z`` lowers the query's measurement: ``z`` helps.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from infscope.attribution.base import NORMALIZATIONS, Estimator
from infscope.errors import InputError, StoreError, StoreMismatchError
from infscope.store import FeatureStore


def _normalise(block: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)


class CheckpointSum(Estimator):
    """``sum_c w_c <phi_c(q), phi_c(z)>`` over chosen checkpoints, computed in blocks."""

    def __init__(self, normalize: str = "none", block_size: int = 4096) -> None:
        super().__init__(block_size)
        if normalize not in NORMALIZATIONS:
            raise InputError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.normalize = normalize

    @abstractmethod
    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        """``(checkpoint id, weight)`` pairs the score sums over."""

    def _fit(self, train: FeatureStore) -> None:
        self.checkpoint_weights(
            train
        )  # fail at fit, not mid-scoring, on a missing checkpoint or rate

    def _prepare(self, block: np.ndarray) -> np.ndarray:
        return _normalise(block) if self.normalize == "unit" else block

    def check_query(self, query: FeatureStore) -> None:
        super().check_query(query)
        known = {c.id for c in query.checkpoints}
        missing = [c for c, _ in self.checkpoint_weights(self.train) if c not in known]
        if missing:
            raise StoreMismatchError(
                f"query store {query.root} has no features for checkpoint(s) {missing}; "
                f"it has {sorted(known)}"
            )

    def _score_into(self, query: FeatureStore, values: np.ndarray) -> None:
        weights = self.checkpoint_weights(self.train)
        n_blocks = -(-self.train.n_examples // self.block_size) * len(weights)
        with tqdm(total=n_blocks, desc=f"scoring[{self.name}]", unit="block", disable=None) as bar:
            for checkpoint, weight in weights:
                queries = [
                    (start, self._prepare(block))
                    for start, block in query.iter_blocks(checkpoint, self.block_size)
                ]
                for t_start, t_block in self.train.iter_blocks(checkpoint, self.block_size):
                    t_block = self._prepare(t_block)
                    t_stop = t_start + len(t_block)
                    for q_start, q_block in queries:
                        product = q_block @ t_block.T
                        values[q_start : q_start + len(q_block), t_start:t_stop] += weight * product
                    bar.update()

    def _self_influence(self, train: FeatureStore) -> np.ndarray:
        values = np.zeros(train.n_examples, dtype=np.float64)
        for checkpoint, weight in self.checkpoint_weights(train):
            for start, block in train.iter_blocks(checkpoint, self.block_size):
                block = self._prepare(block)
                values[start : start + len(block)] += weight * np.einsum("ij,ij->i", block, block)
        return values

    def describe(self) -> dict:
        return {
            **super().describe(),
            "normalize": self.normalize,
            "checkpoints": dict(self.checkpoint_weights(self._require_fit())),
        }


class GradientSimilarity(CheckpointSum):
    """``<phi(q), phi(z)>`` at one checkpoint (default: the last one added to the store).

    ``normalize="none"`` is the gradient dot product; ``"unit"`` the cosine similarity, which
    discounts examples whose gradients are merely large.
    """

    def __init__(
        self, normalize: str = "none", checkpoint: str | None = None, block_size: int = 4096
    ) -> None:
        super().__init__(normalize, block_size)
        self.checkpoint = checkpoint

    @property
    def name(self) -> str:  # type: ignore[override]
        return "cosine" if self.normalize == "unit" else "dot"

    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        if self.checkpoint is None:
            return [(train.checkpoints[-1].id, 1.0)]
        return [(train.checkpoint(self.checkpoint).id, 1.0)]


class TracIn(CheckpointSum):
    """TracIn-CP: ``sum_c lr_c <phi_c(q), phi_c(z)>`` over checkpoints.

    Learning rates come from ``learning_rates`` (checkpoint id → rate) or else from the store's
    checkpoint metadata; a checkpoint with neither is an error, never a silent 1.
    """

    name = "tracin"

    def __init__(
        self,
        normalize: str = "none",
        learning_rates: dict[str, float] | None = None,
        checkpoints: Sequence[str] | None = None,
        block_size: int = 4096,
    ) -> None:
        super().__init__(normalize, block_size)
        self.learning_rates = dict(learning_rates or {})
        self.checkpoints = list(checkpoints) if checkpoints is not None else None

    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        ids = self.checkpoints or [c.id for c in train.checkpoints]
        weights = []
        for checkpoint_id in ids:
            info = train.checkpoint(checkpoint_id)
            rate = self.learning_rates.get(checkpoint_id, info.learning_rate)
            if rate is None:
                raise StoreError(
                    f"no learning rate for checkpoint {checkpoint_id!r}: record it at extraction "
                    f"(learning_rate=...) or pass learning_rates={{'{checkpoint_id}': lr}}"
                )
            weights.append((checkpoint_id, float(rate)))
        return weights


ESTIMATORS = {
    "dot": lambda **kw: GradientSimilarity(normalize="none", **kw),
    "cosine": lambda **kw: GradientSimilarity(normalize="unit", **kw),
    "tracin": TracIn,
}
