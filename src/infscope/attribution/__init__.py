"""Attribution estimators: query x train influence scores and self-influence."""

from infscope.attribution.base import NORMALIZATIONS, CheckpointSum, Estimator
from infscope.attribution.datainf import DataInf
from infscope.attribution.gradient_similarity import GradientSimilarity, TracIn
from infscope.attribution.influence import TRAK, InfluenceFunction
from infscope.attribution.kfac import EKFAC
from infscope.attribution.registry import METHODS, EstimatorSpec, build_estimator
from infscope.attribution.representer import RepresenterPoints
from infscope.attribution.scores import Scores, SelfInfluence, load_scores

__all__ = [
    "METHODS",
    "DataInf",
    "EKFAC",
    "InfluenceFunction",
    "RepresenterPoints",
    "TRAK",
    "EstimatorSpec",
    "build_estimator",
    "NORMALIZATIONS",
    "CheckpointSum",
    "Estimator",
    "GradientSimilarity",
    "Scores",
    "SelfInfluence",
    "TracIn",
    "load_scores",
]
