"""Attribution estimators: query x train influence scores and self-influence."""

from infscope.attribution.base import NORMALIZATIONS, CheckpointSum, Estimator
from infscope.attribution.gradient_similarity import ESTIMATORS, GradientSimilarity, TracIn
from infscope.attribution.scores import Scores, SelfInfluence, load_scores

__all__ = [
    "ESTIMATORS",
    "NORMALIZATIONS",
    "CheckpointSum",
    "Estimator",
    "GradientSimilarity",
    "Scores",
    "SelfInfluence",
    "TracIn",
    "load_scores",
]
