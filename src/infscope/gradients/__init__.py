"""Per-example gradient features: module selection, batched extraction, projections, and the
model pass that writes them to a store."""

from infscope.gradients.extractor import (
    CapturedBatch,
    GradientExtractor,
    ModuleSelection,
    model_fingerprint,
)
from infscope.gradients.modules import SUPPORTED_TYPES, TrackedModule, select_modules
from infscope.gradients.passes import model_pass, per_example_features
from infscope.gradients.projection import (
    PROJECTION_KINDS,
    PROJECTIONS,
    ProjectionConfig,
    build_projector,
    register_projection,
)
from infscope.lazy import exports

__all__ = [
    "PROJECTIONS",
    "PROJECTION_KINDS",
    "SUPPORTED_TYPES",
    "CapturedBatch",
    "GradientExtractor",
    "ModuleSelection",
    "ProjectionConfig",
    "TrackedModule",
    "build_projector",
    "model_fingerprint",
    "model_pass",
    "per_example_features",
    "register_projection",
    "select_modules",
]

# Deprecated for one release: the eigenbasis moved to infscope.curvature with the other curvature
# code (README named these paths). Resolved by name on first access only: no import of
# infscope.curvature from here.
__getattr__, _ = exports(
    __name__,
    {},
    moved={"fit_kronecker_basis": "infscope.curvature", "KroneckerBasis": "infscope.curvature"},
)
