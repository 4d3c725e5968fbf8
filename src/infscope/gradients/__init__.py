"""Per-example gradient features: module selection, batched extraction, projections."""

from infscope.gradients.covariance import fit_kronecker_basis
from infscope.gradients.eigenbasis import KroneckerBasis
from infscope.gradients.extractor import (
    GradientExtractor,
    ModuleSelection,
    model_fingerprint,
    per_example_features,
)
from infscope.gradients.modules import SUPPORTED_TYPES, TrackedModule, select_modules
from infscope.gradients.projection import PROJECTION_KINDS, ProjectionConfig, build_projector

__all__ = [
    "PROJECTION_KINDS",
    "SUPPORTED_TYPES",
    "GradientExtractor",
    "KroneckerBasis",
    "ModuleSelection",
    "ProjectionConfig",
    "TrackedModule",
    "build_projector",
    "fit_kronecker_basis",
    "model_fingerprint",
    "per_example_features",
    "select_modules",
]
