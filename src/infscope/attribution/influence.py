"""Influence functions and TRAK: ``score(q, z) = <(H + λI)^-1 φ(q), φ(z)>``.

The first-order effect of up-weighting training example ``z`` on query ``q``'s measurement at an
(approximate) optimum (Koh & Liang): positive means ``z`` lowers ``q``'s measurement — it helps.
``H`` is a :mod:`curvature <infscope.attribution.curvature>` operator (default: the empirical
Fisher of the stored training features) and the inverse comes from a
:mod:`solver <infscope.attribution.solvers>` (exact, CG, LiSSA, Arnoldi).

**Damping decides rankings more than the estimator does**, so it is an explicit argument:
``damping_mode="relative"`` (default) sets ``λ = damping × mean eigenvalue of H`` (scale free);
``"absolute"`` uses ``damping`` as is. The absolute ``λ`` used at each checkpoint is recorded with
the scores; :func:`~infscope.attribution.damping.select_damping` chooses it from data.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from infscope.attribution.base import CheckpointSum
from infscope.attribution.curvature import Curvature, FeatureFisher
from infscope.attribution.solvers import InverseSolver, make_solver
from infscope.errors import InputError, StoreMismatchError
from infscope.store import FeatureStore

DAMPING_MODES = ("relative", "absolute")


class InfluenceFunction(CheckpointSum):
    """Influence functions with a chosen curvature, inverse solver and damping.

    Args:
        solver: ``"exact"``, ``"cg"``, ``"lissa"``, ``"arnoldi"`` or an :class:`InverseSolver`.
        damping: ``λ`` relative to the mean eigenvalue of ``H`` (or absolute, see below).
        damping_mode: ``"relative"`` or ``"absolute"``.
        curvature: ``None`` for the empirical Fisher of the training features at each checkpoint,
            or a :class:`Curvature` (e.g. :class:`~infscope.attribution.curvature.ModelHessian`,
            which belongs to one checkpoint).
        normalize: ``"none"``; ``"unit"`` (unit-norm features first); ``"relatif"`` (RelatIF:
            divide by ``sqrt(<(H+λI)^-1 φ(z), φ(z)>)``, so examples that are influential on
            everything — often outliers — stop dominating).
        checkpoints: ``"last"`` (default), ``"all"`` (average over checkpoints: an ensemble), or
            a list of checkpoint ids.
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
        checkpoints: str | Sequence[str] = "last",
        block_size: int = 4096,
        solver_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(normalize, block_size)
        if damping_mode not in DAMPING_MODES:
            raise InputError(f"damping_mode must be one of {DAMPING_MODES}, got {damping_mode!r}")
        if not damping > 0:
            raise InputError(f"damping must be positive, got {damping}")
        if isinstance(checkpoints, str) and checkpoints not in ("last", "all"):
            checkpoints = [checkpoints]
        self.solver = (
            make_solver(solver, **(solver_options or {})) if isinstance(solver, str) else solver
        )
        self.damping, self.damping_mode = float(damping), damping_mode
        self.curvature = curvature
        self.checkpoints = checkpoints
        self.solvers: dict[str, InverseSolver] = {}

    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        if self.checkpoints == "last":
            ids = [train.checkpoints[-1].id]
        elif self.checkpoints == "all":
            ids = [c.id for c in train.checkpoints]
        else:
            ids = [train.checkpoint(c).id for c in self.checkpoints]
        return [(c, 1.0 / len(ids)) for c in ids]

    def _fit(self, train: FeatureStore) -> None:
        super()._fit(train)
        weights = self.checkpoint_weights(train)
        if self.curvature is not None and len(weights) > 1:
            raise InputError(
                "a given curvature belongs to one checkpoint; use checkpoints='last' or one id"
            )
        self.solvers = {}
        for checkpoint, _ in weights:
            curvature = self.curvature or FeatureFisher(train, checkpoint, self.block_size)
            curvature.check_store(train)
            if self.damping_mode == "relative":
                mean_eigenvalue = curvature.trace() / curvature.dim
                if not mean_eigenvalue > 0:
                    raise InputError(
                        "the curvature is zero (all gradients vanish); use damping_mode='absolute'"
                    )
                damping = self.damping * mean_eigenvalue
            else:
                damping = self.damping
            solver = copy.deepcopy(self.solver) if len(weights) > 1 else self.solver
            self.solvers[checkpoint] = solver.fit(curvature, damping)

    def _prepare(self, block: np.ndarray) -> np.ndarray:
        return super()._prepare(block) if self.normalize == "unit" else block

    def _precondition(self, checkpoint: str, block: np.ndarray) -> np.ndarray:
        return self.solvers[checkpoint].solve(block.T.astype(np.float64)).T

    def _train_scale(self, checkpoint: str, start: int, block: np.ndarray) -> np.ndarray | None:
        if self.normalize != "relatif":
            return None
        own = np.einsum("ij,ij->i", self._precondition(checkpoint, block), block)
        return 1.0 / np.sqrt(np.maximum(own, np.finfo(np.float64).tiny))

    @property
    def absolute_damping(self) -> dict[str, float]:
        """The ``λ`` used at each checkpoint."""
        return {c: s.damping for c, s in self.solvers.items()}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "damping": self.damping,
            "damping_mode": self.damping_mode,
            "absolute_damping": self.absolute_damping,
            "curvature": type(self.curvature).__name__ if self.curvature else "FeatureFisher",
            **self.solver.describe(),
        }


class TRAK(InfluenceFunction):
    """TRAK (Park et al. 2023) over the projected gradients of the model output function.

    For each checkpoint or independently trained model ``c`` (an ensemble), with ``Φ_c`` the
    training features:
    ``τ(q, z) = [1/C Σ_c φ_c(q)ᵀ (Φ_cᵀ Φ_c + λI)^-1 φ_c(z)] · [1/C Σ_c (1 − p_c(z))]``,
    where ``1 − p`` is the probability the model gives to the wrong classes (TRAK's re-weighting
    term ``Q``). Both stores must hold gradients of the *margin* measurement (extract training
    examples with ``gradient="measurement"``, task measurement ``"margin"``); the re-weighting
    term comes from the margins recorded beside the features. ``reweight=False`` drops it (for
    tasks without a margin). Damping is relative, small by default: TRAK's kernel is usually
    well conditioned when ``k < n``.
    """

    name = "trak"
    train_gradient = "measurement"
    normalizations = ("none",)

    def __init__(
        self,
        damping: float = 1e-3,
        damping_mode: str = "relative",
        solver: str | InverseSolver = "exact",
        checkpoints: str | Sequence[str] = "all",
        reweight: bool = True,
        block_size: int = 4096,
        solver_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            solver, damping, damping_mode, None, "none", checkpoints, block_size, solver_options
        )
        self.reweight = reweight
        self.wrong_class_probability: np.ndarray | None = None

    def _fit(self, train: FeatureStore) -> None:
        measurement = train.spec.task.get("measurement")
        if self.reweight and measurement != "margin":
            raise StoreMismatchError(
                f"TRAK's re-weighting needs margin gradients: {train.root} holds {measurement!r} "
                f"gradients (extract with the task's measurement='margin', or use reweight=False)"
            )
        super()._fit(train)
        weights = self.checkpoint_weights(train)
        if self.reweight:
            # the stored measurement is the negative margin m̃, and 1 − p = sigmoid(m̃)
            self.wrong_class_probability = np.mean(
                [1.0 / (1.0 + np.exp(-train.losses(c))) for c, _ in weights], axis=0
            )

    def check_query(self, query: FeatureStore) -> None:
        super().check_query(query)
        if self.reweight and query.spec.task.get("measurement") != "margin":
            raise StoreMismatchError(
                f"TRAK queries need margin gradients; {query.root} holds {query.spec.task.get('measurement')!r}"
            )

    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        # TRAK's kernel is Φᵀ Φ, not the mean Φᵀ Φ / n of the Fisher: divide by n
        return [(c, w / train.n_examples) for c, w in super().checkpoint_weights(train)]

    def _train_scale(self, checkpoint: str, start: int, block: np.ndarray) -> np.ndarray | None:
        if self.wrong_class_probability is None:
            return None
        return self.wrong_class_probability[start : start + len(block)]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reweight": self.reweight}
