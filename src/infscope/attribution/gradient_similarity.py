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

from infscope.attribution.base import CheckpointChoice, CheckpointSum
from infscope.deprecation import legacy_arguments
from infscope.errors import StoreError
from infscope.store import FeatureStore


class GradientSimilarity(CheckpointSum):
    """``<phi(q), phi(z)>`` at one checkpoint (default: the last one added to the store).

    ``normalize="none"`` is the gradient dot product; ``"unit"`` the cosine similarity, which
    discounts examples whose gradients are merely large.
    """

    one_checkpoint = True

    @legacy_arguments("normalize", "checkpoint", "block_size", checkpoint="checkpoints")
    def __init__(
        self,
        *,
        normalize: str = "none",
        checkpoints: CheckpointChoice = None,
        block_size: int = 4096,
    ) -> None:
        super().__init__(normalize=normalize, checkpoints=checkpoints, block_size=block_size)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "cosine" if self.normalize == "unit" else "dot"


class TracIn(CheckpointSum):
    """TracIn-CP: ``sum_c lr_c <phi_c(q), phi_c(z)>`` over checkpoints (default: all of them).

    Learning rates come from ``learning_rates`` (checkpoint id → rate) or else from the store's
    checkpoint metadata; a checkpoint with neither is an error, never a silent 1.
    """

    name = "tracin"
    default_checkpoints = "all"

    @legacy_arguments("normalize", "learning_rates", "checkpoints", "block_size")
    def __init__(
        self,
        *,
        normalize: str = "none",
        checkpoints: CheckpointChoice = None,
        learning_rates: dict[str, float] | None = None,
        block_size: int = 4096,
    ) -> None:
        super().__init__(normalize=normalize, checkpoints=checkpoints, block_size=block_size)
        self.learning_rates = dict(learning_rates or {})

    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        weights = []
        for checkpoint_id in self.checkpoint_ids(train):
            info = train.checkpoint(checkpoint_id)
            rate = self.learning_rates.get(checkpoint_id, info.learning_rate)
            if rate is None:
                raise StoreError(
                    f"no learning rate for checkpoint {checkpoint_id!r} of {train.root}: add it "
                    f"with `infscope store set {train.root} --checkpoint {checkpoint_id} "
                    "--learning-rate LR` (FeatureStore.set_learning_rate; no re-extraction), "
                    f"or pass TracIn(learning_rates={{'{checkpoint_id}': lr}})"
                )
            weights.append((checkpoint_id, float(rate)))
        return weights
