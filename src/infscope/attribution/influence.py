"""Influence functions and TRAK: ``score(q, z) = <(H + λI)^-1 φ(q), φ(z)>``.

The first-order effect of up-weighting training example ``z`` on query ``q``'s measurement at an
(approximate) optimum (Koh & Liang): positive means ``z`` lowers ``q``'s measurement — it helps.
``H`` is a curvature operator (default: the empirical Fisher of the stored training features,
:class:`~infscope.curvature.fisher.FeatureFisher`; or the model Hessian,
:class:`~infscope.curvature.hessian.ModelHessian`) and the inverse comes from a
:mod:`solver <infscope.curvature.solvers>` (``auto``: exact when small enough, else CG).

**Damping decides rankings more than the estimator does.** It is relative by default (see
:mod:`infscope.attribution.damped`): ``λ = damping × trace(H) / min(n, dim)``, plus, for an
indefinite curvature (the Hessian of a model away from a minimum), the shift ``−σ_min`` that
makes ``H + λI`` positive definite (Levenberg-Marquardt style; ``σ_min`` from Lanczos). In
absolute mode ``λ`` is used as given: the exact solver then refuses an indefinite ``H + λI`` and
CG stops a column at negative curvature. The default
``damping = 1`` was within 0.03 LDS of the best value on every classification task of
``docs/benchmarks.md``; :func:`~infscope.evaluation.damping.select_damping` tunes it from data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infscope.attribution.base import CheckpointChoice
from infscope.attribution.damped import DampedEstimator
from infscope.curvature.fisher import FeatureFisher
from infscope.curvature.linalg import Curvature, krylov_eigenpairs
from infscope.curvature.solvers import (
    SOLVERS,
    InverseSolver,
    KernelInverse,
    PreparedInverse,
    auto_solver,
    make_solver,
)
from infscope.curvature.spectrum import FISHER_DAMPING_SHARE, SpectrumBlock
from infscope.deprecation import legacy_arguments
from infscope.errors import InputError, StoreMismatchError
from infscope.store import FeatureStore

__all__ = ["TRAK", "InfluenceFunction"]

#: eigenvalues a Krylov run resolves for ``damping="auto"`` when the solver holds none (CG, LiSSA)
KRYLOV_SPECTRUM_RANK = 100


class InfluenceFunction(DampedEstimator):
    """Influence functions with a chosen curvature, inverse solver and damping.

    Args:
        normalize: ``"none"``; ``"unit"`` (unit-norm features, curvature included); ``"relatif"``
            (RelatIF: divide by ``sqrt(<(H+λI)^-1 φ(z), φ(z)>)``, so examples that are
            influential on everything — often outliers — stop dominating).
        checkpoints: ``"last"`` (default), ``"all"`` (average over checkpoints: an ensemble), a
            checkpoint id or a list of ids.
        damping: ``λ`` relative to ``trace(H) / min(n, dim)`` (default: the curvature's
            ``default_damping``, 1 for the Fisher, 0.3 for the model Hessian), or absolute.
        damping_mode: ``"relative"`` or ``"absolute"``.
        damping_share: with ``damping="auto"``, the share of its directions the damped
            curvature resolves (default: the curvature's ``default_damping_share``,
            :data:`~infscope.curvature.spectrum.FISHER_DAMPING_SHARE` for the Fisher,
            :data:`~infscope.curvature.spectrum.HESSIAN_DAMPING_SHARE` for the model Hessian).
        solver: ``"auto"`` (exact up to 8192 dimensions to decompose — of ``H``, or of the
            ``n x n`` kernel when ``n < dim`` — else CG), ``"exact"``, ``"cg"``, ``"lissa"``,
            ``"arnoldi"`` or an :class:`~infscope.curvature.solvers.InverseSolver`.
        solver_options: keyword arguments for the named solver (``max_iter``, ``depth``,
            ``rank``...).
        curvature: ``None`` for the empirical Fisher of the training features at each checkpoint
            (of the unit-normalised features with ``normalize="unit"``), or a curvature operator
            of one checkpoint (e.g. :class:`~infscope.curvature.hessian.ModelHessian`).
        fisher: a store of the training examples' sampled-label gradients
            (``featurize(..., gradient="fisher")``, same projection and checkpoint ids) whose
            Fisher is the curvature at each checkpoint: the true Fisher.
    """

    name = "influence"
    normalizations = ("none", "unit", "relatif")
    default_damping = 1.0
    default_damping_share = FISHER_DAMPING_SHARE

    @legacy_arguments(
        "solver",
        "damping",
        "damping_mode",
        "curvature",
        "normalize",
        "checkpoints",
        "block_size",
        "solver_options",
    )
    def __init__(
        self,
        *,
        normalize: str = "none",
        checkpoints: CheckpointChoice = None,
        damping: float | None = None,
        damping_mode: str = "relative",
        damping_share: float | None = None,
        solver: str | InverseSolver = "auto",
        solver_options: dict[str, Any] | None = None,
        curvature: Curvature | None = None,
        fisher: FeatureStore | None = None,
        block_size: int = 4096,
    ) -> None:
        if damping is None and curvature is not None and damping_mode == "relative":
            damping = curvature.default_damping
        super().__init__(
            normalize=normalize,
            checkpoints=checkpoints,
            damping=damping,
            damping_mode=damping_mode,
            damping_share=damping_share,
            block_size=block_size,
        )
        if isinstance(solver, str):
            if solver not in SOLVERS:
                raise InputError(f"unknown solver {solver!r}; choose from {SOLVERS}")
            if solver == "auto" and solver_options:
                raise InputError("solver_options need a named solver, not 'auto'")
            if solver != "auto":
                solver = make_solver(solver, **(solver_options or {}))
        elif not isinstance(solver, InverseSolver):
            raise InputError(f"solver must be a name or an InverseSolver, got {solver!r}")
        if fisher is not None and (curvature is not None or not isinstance(fisher, FeatureStore)):
            raise InputError("fisher must be a FeatureStore, and is not given with a curvature")
        if damping_share is None and curvature is not None:  # the curvature's own share
            self.damping_share = curvature.default_damping_share
        self.solver = solver
        self.curvature = curvature
        self.fisher = fisher
        self.inverses: dict[str, PreparedInverse] = {}
        self.damping_units: dict[str, float] = {}
        self.shifts: dict[str, float] = {}  # −σ_min of an indefinite curvature (relative mode)
        self.absolute_damping: dict[str, float] = {}

    def _curvature(self, train: FeatureStore, checkpoint: str) -> Curvature:
        """The curvature at ``checkpoint``: the one given, the Fisher of the ``fisher`` store's
        features there, or the empirical Fisher of the training features."""
        if self.curvature is not None:
            return self.curvature
        if self.fisher is not None:
            return FeatureFisher(self.fisher, self.fisher.checkpoint(checkpoint).id, self.block_size)
        return FeatureFisher(
            train,
            checkpoint,
            self.rows_per_block(train.feature_dim),
            normalize=self.normalize == "unit",
        )

    def _fit(self, train: FeatureStore) -> None:
        super()._fit(train)
        weights = self.checkpoint_weights(train)
        if self.curvature is not None and len(weights) > 1:
            raise InputError(
                "a given curvature belongs to one checkpoint; use checkpoints='last' or one id"
            )
        self.inverses, self.damping_units, self.shifts = {}, {}, {}
        for checkpoint, _ in weights:
            curvature = self._curvature(train, checkpoint)
            curvature.check_store(train)
            solver = auto_solver(curvature) if self.solver == "auto" else self.solver
            self.inverses[checkpoint] = solver.prepare(curvature)
            if self.damping_mode == "relative":
                self.damping_units[checkpoint] = curvature.damping_unit()
                self.shifts[checkpoint] = -curvature.smallest_eigenvalue()
            else:
                self.damping_units[checkpoint], self.shifts[checkpoint] = 1.0, 0.0

    def _apply_damping(self) -> None:
        self.absolute_damping = {
            c: self.damping * unit + self.shifts[c] for c, unit in self.damping_units.items()
        }
        for checkpoint, damping in self.absolute_damping.items():
            self.inverses[checkpoint].check_damping(damping)

    def _spectra(self) -> list[list[SpectrumBlock]]:
        """The eigenvalues the solver holds (exact, kernel, Arnoldi with its residual), or for a
        solver without them (CG, LiSSA) the top of a Krylov run as Arnoldi's; shifted like the
        damping of an indefinite curvature."""
        return [
            [_solver_spectrum(inverse, self.shifts[c], self.damping_units[c])]
            for c, inverse in self.inverses.items()
        ]

    def _precondition(self, checkpoint: str, block: np.ndarray) -> np.ndarray:
        damping = self.absolute_damping[checkpoint]
        return self.inverses[checkpoint].solve(block.T, damping).T

    def describe(self) -> dict[str, Any]:
        solvers = {c: inverse.describe() for c, inverse in self.inverses.items()}
        return {
            **super().describe(),
            "damping_unit": self.damping_units,
            "indefinite_shift": self.shifts,
            "absolute_damping": self.absolute_damping,
            "solvers": solvers,
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
    tasks without a margin). ``λ`` is relative to ``trace(Φᵀ Φ / n) / min(n, k)`` as for every
    influence function (TRAK's own code uses ``λ = 0``, which on these tasks loses to a plain
    gradient dot product; see ``docs/benchmarks.md``).
    """

    name = "trak"
    train_gradient = "measurement"
    normalizations = ("none",)
    default_damping = 1.0
    default_checkpoints = "all"

    @legacy_arguments(
        "damping",
        "damping_mode",
        "solver",
        "checkpoints",
        "reweight",
        "block_size",
        "solver_options",
    )
    def __init__(
        self,
        *,
        checkpoints: CheckpointChoice = None,
        damping: float | None = None,
        damping_mode: str = "relative",
        damping_share: float | None = None,
        solver: str | InverseSolver = "auto",
        solver_options: dict[str, Any] | None = None,
        reweight: bool = True,
        block_size: int = 4096,
    ) -> None:
        super().__init__(
            checkpoints=checkpoints,
            damping=damping,
            damping_mode=damping_mode,
            damping_share=damping_share,
            solver=solver,
            solver_options=solver_options,
            block_size=block_size,
        )
        self.reweight = reweight
        self.wrong_class_probability: np.ndarray | None = None

    def _fit(self, train: FeatureStore) -> None:
        measurement = train.spec.measurement
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
        if self.reweight and query.spec.measurement != "margin":
            raise StoreMismatchError(
                f"TRAK queries need margin gradients; {query.root} holds "
                f"{query.spec.measurement!r}"
            )

    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        # TRAK's kernel is Φᵀ Φ, not the mean Φᵀ Φ / n of the Fisher: divide by n
        return [(c, w / train.n_examples) for c, w in super().checkpoint_weights(train)]

    def _train_scales(self, checkpoint: str) -> np.ndarray | None:
        return self.wrong_class_probability

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reweight": self.reweight}


def _solver_spectrum(inverse: PreparedInverse, shift: float, unit: float) -> SpectrumBlock:
    """A prepared inverse's eigenvalues (plus a flat tail holding the rest of the trace over the
    ``min(n, dim)`` non-zero directions it does not resolve), shifted by ``shift``."""
    curvature = inverse.curvature
    values = getattr(inverse, "eigenvalues", None)
    if values is None:
        values = krylov_eigenpairs(curvature, 2 * KRYLOV_SPECTRUM_RANK)[0][:KRYLOV_SPECTRUM_RANK]
    values = np.asarray(values, dtype=np.float64)
    rest = min(curvature.n_examples, curvature.dim) - int((values > 0).sum())
    mass = curvature.trace() - float(np.clip(values, 0.0, None).sum())
    counts = np.ones(len(values))
    if rest > 0 and mass > 0 and not isinstance(inverse, KernelInverse):
        values, counts = np.append(values, mass / rest), np.append(counts, rest)
    return SpectrumBlock(np.clip(values + shift, 0.0, None), unit, counts)
