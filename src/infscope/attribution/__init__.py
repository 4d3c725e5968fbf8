"""Attribution estimators: query x train influence scores and self-influence, read from feature
stores. Names are imported on first use (``infscope.attribution.registry`` alone loads no
estimator)."""

from infscope.lazy import exports

_NAMES = {
    "NORMALIZATIONS": "infscope.attribution.base",
    "CheckpointSum": "infscope.attribution.base",
    "Estimator": "infscope.attribution.base",
    "DataInf": "infscope.attribution.datainf",
    "GradientSimilarity": "infscope.attribution.gradient_similarity",
    "TracIn": "infscope.attribution.gradient_similarity",
    "TRAK": "infscope.attribution.influence",
    "InfluenceFunction": "infscope.attribution.influence",
    "EKFAC": "infscope.attribution.kfac",
    "METHODS": "infscope.attribution.registry",
    "EstimatorSpec": "infscope.attribution.registry",
    "build_estimator": "infscope.attribution.registry",
    "register_estimator": "infscope.attribution.registry",
    "RepresenterPoints": "infscope.attribution.representer",
    "Scores": "infscope.attribution.scores",
    "SelfInfluence": "infscope.attribution.scores",
    "load_scores": "infscope.attribution.scores",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES, moved={"KFACFactors": "infscope.curvature"})
