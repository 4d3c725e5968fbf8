"""Representer point selection (Yeh et al. 2018) for the final linear layer.

For a final layer trained to a stationary point of ``1/n Σ L_i + λ‖W‖²``, each prediction
decomposes as ``Σ_i α_i f_iᵀ f_t`` with ``α_i = −1/(2λn) ∂L_i/∂logits``: training example ``i``'s
representer value for test point ``t`` and class ``c`` is ``α_ic f_iᵀ f_t``. That is the dot
product of the final layer's per-example loss gradient ``g_i f_iᵀ`` with the gradient of the
query measurement ``−logit_c``, ``−e_c f_tᵀ``, divided by ``2λn``: so this estimator reads
unprojected final-layer features (identity projection, one module) and queries extracted with the
task measurement ``"logit"``. Positive values push the query towards its label's class: they help.
"""

from __future__ import annotations

from typing import Any

from infscope.attribution.base import CheckpointChoice
from infscope.attribution.gradient_similarity import GradientSimilarity
from infscope.deprecation import legacy_arguments
from infscope.errors import InputError, StoreMismatchError
from infscope.store import FeatureStore


class RepresenterPoints(GradientSimilarity):
    """Representer values ``α_ic f_iᵀ f_t`` from final-layer features; ``l2_regularization`` is
    the ``λ`` the final layer was trained with."""

    name = "representer"

    @legacy_arguments("checkpoint", "block_size", checkpoint="checkpoints")
    def __init__(
        self,
        l2_regularization: float,
        *,
        checkpoints: CheckpointChoice = None,
        block_size: int = 4096,
    ) -> None:
        super().__init__(checkpoints=checkpoints, block_size=block_size)
        if not l2_regularization > 0:
            raise InputError(f"l2_regularization must be positive, got {l2_regularization}")
        self.l2_regularization = float(l2_regularization)

    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        return [
            (c, 1.0 / (2 * self.l2_regularization * train.n_examples))
            for c, _ in super().checkpoint_weights(train)
        ]

    def _fit(self, train: FeatureStore) -> None:
        if len(train.spec.modules) != 1 or train.spec.projection.get("kind") != "identity":
            raise StoreMismatchError(
                f"representer points need unprojected features of the final layer only; {train.root} "
                f"holds {train.spec.projection.get('kind')!r} features of {list(train.spec.modules)} "
                f"(extract with ModuleSelection(include=('<final layer>',)) and kind='identity')"
            )
        super()._fit(train)

    def check_query(self, query: FeatureStore) -> None:
        super().check_query(query)
        if query.spec.gradient != "measurement" or query.spec.measurement != "logit":
            raise StoreMismatchError(
                f"representer queries need gradients of the 'logit' measurement; {query.root} holds "
                f"{query.spec.gradient} gradients of {query.spec.measurement!r}"
            )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "l2_regularization": self.l2_regularization}
