"""Curvature: from a model or a store to ``H`` and its inverse.

K-FAC covariances gathered while features are extracted (:mod:`~infscope.curvature.covariance`),
full-space Kronecker eigenbases (:mod:`~infscope.curvature.basis_fit`,
:mod:`~infscope.curvature.eigenbasis`), K-FAC/EK-FAC factors and their file
(:mod:`~infscope.curvature.kfac`, :mod:`~infscope.curvature.kfac_file`), the empirical Fisher of a
store (:mod:`~infscope.curvature.fisher`), the model Hessian (:mod:`~infscope.curvature.hessian`),
the ``Curvature`` operator interface (:mod:`~infscope.curvature.linalg`) and the solvers of
``(H + λI)⁻¹ V`` (:mod:`~infscope.curvature.solvers`). Estimators (:mod:`infscope.attribution`)
read what this package builds; the model passes live here and in :mod:`infscope.gradients`.
"""

from infscope.curvature.basis_fit import fit_kronecker_basis
from infscope.curvature.covariance import (
    KroneckerCovariances,
    accumulate,
    featurize_with_covariances,
)
from infscope.curvature.eigenbasis import KroneckerBasis, ModuleBasis, as_bases
from infscope.curvature.fisher import FeatureFisher
from infscope.curvature.hessian import ModelHessian
from infscope.curvature.kfac import KFACFactors, load_factors
from infscope.curvature.linalg import Curvature
from infscope.curvature.solvers import (
    SOLVERS,
    ArnoldiSolver,
    CGSolver,
    ExactSolver,
    InverseSolver,
    LissaSolver,
    auto_solver,
    make_solver,
)

__all__ = [
    "SOLVERS",
    "ArnoldiSolver",
    "CGSolver",
    "Curvature",
    "ExactSolver",
    "FeatureFisher",
    "InverseSolver",
    "KFACFactors",
    "KroneckerBasis",
    "KroneckerCovariances",
    "LissaSolver",
    "ModelHessian",
    "ModuleBasis",
    "accumulate",
    "as_bases",
    "auto_solver",
    "featurize_with_covariances",
    "fit_kronecker_basis",
    "load_factors",
    "make_solver",
]
