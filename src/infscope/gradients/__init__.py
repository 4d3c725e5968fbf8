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
from infscope.gradients.projection import PROJECTION_KINDS, ProjectionConfig, build_projector

__all__ = [
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
    "select_modules",
]
