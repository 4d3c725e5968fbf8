"""Influence functions: ``score(q, z) = <(H + λI)^-1 φ(q), φ(z)>``.

The first-order effect of up-weighting training example ``z`` on query ``q``'s measurement at an
(approximate) optimum (Koh & Liang): positive means ``z`` lowers ``q``'s measurement — it helps.
``H`` is a :mod:`curvature <infscope.attribution.curvature>` operator (default: the empirical
Fisher of the stored training features) and the inverse comes from a
:mod:`solver <infscope.attribution.solvers>` (exact, CG, LiSSA, Arnoldi).

**Damping decides rankings more than the estimator does**, so it is an explicit argument:
``damping_mode="relative"`` (default) sets ``λ = damping × mean eigenvalue of H`` (scale free);
``"absolute"`` uses ``damping`` as is. The absolute ``λ`` used is recorded with the scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infscope.attribution.base import CheckpointSum
from infscope.attribution.curvature import Curvature, FeatureFisher
from infscope.attribution.solvers import InverseSolver, make_solver
from infscope.errors import InputError
from infscope.store import FeatureStore

DAMPING_MODES = ("relative", "absolute")


class InfluenceFunction(CheckpointSum):
    """Influence functions with a chosen curvature, inverse solver and damping.

    Args:
        solver: ``"exact"``, ``"cg"``, ``"lissa"``, ``"arnoldi"`` or an :class:`InverseSolver`.
        damping: ``λ`` relative to the mean eigenvalue of ``H`` (or absolute, see below).
        damping_mode: ``"relative"`` or ``"absolute"``.
        curvature: ``None`` for the empirical Fisher of the training features at the checkpoint,
            or a :class:`Curvature` (e.g. :class:`~infscope.attribution.curvature.ModelHessian`).
        normalize: ``"none"``; ``"unit"`` (unit-norm features first); ``"relatif"`` (RelatIF:
            divide by ``sqrt(<(H+λI)^-1 φ(z), φ(z)>)``, so examples that are influential on
            everything — often outliers — stop dominating).
        checkpoint: which checkpoint (default: the last one in the store).
        solver_options: keyword arguments for the named solver (``max_iter``, ``depth``, ``rank``...).
    """

    name = "influence"
    normalizations = ("none", "unit", "relatif")

    def __init__(
        self,
        solver: str | InverseSolver = "exact",
        damping: float = 0.1,
        damping_mode: str = "relative",
        curvature: Curvature | None = None,
        normalize: str = "none",
        checkpoint: str | None = None,
        block_size: int = 4096,
        solver_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(normalize, block_size)
        if damping_mode not in DAMPING_MODES:
            raise InputError(f"damping_mode must be one of {DAMPING_MODES}, got {damping_mode!r}")
        if not damping > 0:
            raise InputError(f"damping must be positive, got {damping}")
        self.solver = (
            make_solver(solver, **(solver_options or {})) if isinstance(solver, str) else solver
        )
        self.damping, self.damping_mode = float(damping), damping_mode
        self.curvature = curvature
        self.checkpoint = checkpoint
        self.absolute_damping: float | None = None

    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        checkpoint = (
            train.checkpoints[-1].id
            if self.checkpoint is None
            else train.checkpoint(self.checkpoint).id
        )
        return [(checkpoint, 1.0)]

    def _fit(self, train: FeatureStore) -> None:
        super()._fit(train)
        ((checkpoint, _),) = self.checkpoint_weights(train)
        curvature = self.curvature or FeatureFisher(train, checkpoint, self.block_size)
        curvature.check_store(train)
        if self.damping_mode == "relative":
            mean_eigenvalue = curvature.trace() / curvature.dim
            if not mean_eigenvalue > 0:
                raise InputError(
                    "the curvature is zero (all training gradients vanish); use damping_mode='absolute'"
                )
            self.absolute_damping = self.damping * mean_eigenvalue
        else:
            self.absolute_damping = self.damping
        self.solver.fit(curvature, self.absolute_damping)

    def _prepare(self, block: np.ndarray) -> np.ndarray:
        return super()._prepare(block) if self.normalize == "unit" else block

    def _precondition(self, checkpoint: str, block: np.ndarray) -> np.ndarray:
        return self.solver.solve(block.T.astype(np.float64)).T

    def _train_scale(self, checkpoint: str, start: int, block: np.ndarray) -> np.ndarray | None:
        if self.normalize != "relatif":
            return None
        own = np.einsum("ij,ij->i", self._precondition(checkpoint, block), block)
        return 1.0 / np.sqrt(np.maximum(own, np.finfo(np.float64).tiny))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "damping": self.damping,
            "damping_mode": self.damping_mode,
            "absolute_damping": self.absolute_damping,
            "curvature": type(self.curvature).__name__ if self.curvature else "FeatureFisher",
            **self.solver.describe(),
        }
