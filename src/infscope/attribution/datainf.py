"""DataInf (Kwon et al. 2024): a closed-form inverse of each layer's damped Fisher.

Per layer ``l``, ``(G_l + λ_l I)^-1`` with ``G_l = 1/n Σ_i g_i g_iᵀ`` is approximated by swapping
the order of inversion and averaging (exact for a single example, Sherman-Morrison):
``1/(n λ_l) Σ_i (I − g_i g_iᵀ / (λ_l + ‖g_i‖²))``, so a query's preconditioned gradient is
``(1/λ_l) (v − 1/n Σ_i g_i (g_iᵀ v) / (λ_l + ‖g_i‖²))`` — one pass over the training features,
no matrix inverse. Made for LoRA layers (small per-layer gradients), valid for any layer.
``λ_l = damping × mean_i ‖g_i‖² / min(n, d_l)``: relative to the mean non-zero eigenvalue of
``G_l``, as for every damped estimator (:mod:`infscope.attribution.damped`).

The swap of inversion and averaging is accurate only when ``λ_l`` is large next to ``‖g_i‖²``
(Kwon et al. bound its error by ``O(max ‖g‖⁴ / λ²)``). For ``λ_l ≪ ‖g_i‖²`` each term is a
projection that no longer depends on ``λ_l``, so within one layer the ranking stops changing with
the damping; only the balance between layers (each scaled by ``1/λ_l``) does.

Layers are the per-module blocks of identity or Kronecker-projected stores; for dense or sparse
projections (modules mixed) the whole feature vector is treated as one layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infscope.attribution.base import CheckpointChoice
from infscope.attribution.damped import DampedEstimator
from infscope.curvature.spectrum import FISHER_DAMPING_SHARE, SpectrumBlock
from infscope.deprecation import legacy_arguments
from infscope.errors import InputError, NonFiniteError
from infscope.store import FeatureStore

#: training examples whose per-layer kernel gives ``damping="auto"`` its spectrum
SPECTRUM_EXAMPLES = 2048


class DataInf(DampedEstimator):
    """DataInf influence at one checkpoint (default: the last)."""

    name = "datainf"
    default_damping = 1.0
    default_damping_share = FISHER_DAMPING_SHARE
    one_checkpoint = True

    @legacy_arguments(
        "damping", "damping_mode", "checkpoint", "block_size", checkpoint="checkpoints"
    )
    def __init__(
        self,
        *,
        checkpoints: CheckpointChoice = None,
        damping: float | None = None,
        damping_mode: str = "relative",
        damping_share: float | None = None,
        block_size: int = 4096,
    ) -> None:
        super().__init__(
            checkpoints=checkpoints,
            damping=damping,
            damping_mode=damping_mode,
            damping_share=damping_share,
            block_size=block_size,
        )
        self.layers: list[tuple[str, slice]] = []
        self.squared_norms = np.zeros((0, 0))
        self.lambdas = np.zeros(0)
        self.inverse_weights = np.zeros((0, 0))

    def _fit(self, train: FeatureStore) -> None:
        super()._fit(train)
        layout = train.spec.layout
        if layout is not None:
            self.layers = [(block.module, block.columns) for block in layout]
        else:
            self.layers = [("all", slice(0, train.feature_dim))]
        ((checkpoint, _),) = self.checkpoint_weights(train)
        squared = np.zeros((train.n_examples, len(self.layers)))
        for start, block in train.iter_blocks(checkpoint, self.rows_per_block(train.feature_dim)):
            block = block.astype(np.float64)
            for layer, (_, cols) in enumerate(self.layers):
                squared[start : start + len(block), layer] = (block[:, cols] ** 2).sum(axis=1)
        if not np.isfinite(squared).all():
            raise NonFiniteError(f"{train.root} holds NaN or inf features")
        self.squared_norms = squared  # [n, layers]
        sizes = np.array([cols.stop - cols.start for _, cols in self.layers])
        self.units = squared.mean(axis=0) / np.minimum(train.n_examples, sizes)
        if self.damping_mode == "relative" and not (self.units > 0).all():
            zero = [name for (name, _), unit in zip(self.layers, self.units) if not unit > 0]
            raise InputError(
                f"layers {zero} have zero gradients everywhere: use damping_mode='absolute'"
            )

    def _spectra(self) -> list[list[SpectrumBlock]]:
        """Each layer's Fisher eigenvalues: of the kernel ``Φ_l Φ_lᵀ / m`` over at most
        :data:`SPECTRUM_EXAMPLES` evenly spaced training examples (its non-zero eigenvalues are
        the layer Fisher's; a subsample estimates the leading ones at ``O(m² d)``)."""
        ((checkpoint, _),) = self.checkpoint_weights(self.train)
        n = self.train.n_examples
        picked = np.unique(np.linspace(0, n - 1, min(n, SPECTRUM_EXAMPLES)).astype(int))
        rows = self.train.rows(checkpoint, picked).astype(np.float64)
        blocks = []
        for layer, (_, cols) in enumerate(self.layers):
            kernel = rows[:, cols] @ rows[:, cols].T / len(picked)
            values = np.linalg.eigvalsh((kernel + kernel.T) / 2)
            blocks.append(SpectrumBlock(np.clip(values, 0.0, None), float(self.units[layer])))
        return [blocks]

    def _apply_damping(self) -> None:
        if self.damping_mode == "relative":
            self.lambdas = self.damping * self.units
        else:
            self.lambdas = np.full(len(self.layers), self.damping)
        self.inverse_weights = 1.0 / (self.lambdas + self.squared_norms)  # [n, layers]

    def _precondition(self, checkpoint: str, block: np.ndarray) -> np.ndarray:
        queries = block.astype(np.float64)
        correction = np.zeros_like(queries)
        rows = self.rows_per_block(self.train.feature_dim)
        for start, train in self.train.iter_blocks(checkpoint, rows):
            train = train.astype(np.float64)
            weights = self.inverse_weights[start : start + len(train)]
            for layer, (_, cols) in enumerate(self.layers):
                dots = (train[:, cols] @ queries[:, cols].T) * weights[:, layer : layer + 1]
                correction[:, cols] += dots.T @ train[:, cols]
        out = queries - correction / self.train.n_examples
        for layer, (_, cols) in enumerate(self.layers):
            out[:, cols] /= self.lambdas[layer]
        return out

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "layers": [name for name, _ in self.layers],
            "absolute_damping": self.lambdas.tolist(),
        }
