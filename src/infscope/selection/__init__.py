"""From scores to a dataset: selectors that pick a training subset under a budget.

Every strategy is a :class:`Selector` reading a :class:`Pool` and returning a :class:`Selection`
(ids, weights, order and a reason per pick), ready to write out as jsonl or a
``datasets.Dataset``.
"""

from infscope.selection.alignment import TargetAligned, estimate_noise, pool_alignment
from infscope.selection.annotation import IDEAL, KMeansCentres, VoteK
from infscope.selection.balance import SKEW_MARGIN, LabelBalance, LabelSkew, label_skew
from infscope.selection.bandit import ClusterBandit, cluster_features
from infscope.selection.base import Pool, Selection, Selector, resolve_budget
from infscope.selection.basic import RandomSelection, SoftmaxSampling, Stratified, TopK
from infscope.selection.comparison import MethodComparison, SeedStats, compare_methods, seed_stats
from infscope.selection.demonstrations import (
    BSRDemonstrations,
    DemonstrationSelector,
    InContextInfluence,
    InfluenceEstimate,
    SetBSRDemonstrations,
    SimilarDemonstrations,
    TokenQuery,
    idf_weights,
)
from infscope.selection.diagnostics import SelectionReport, diagnose
from infscope.selection.dsir import DSIR, dsir_log_weights, hashed_ngram_counts
from infscope.selection.excluding import select_excluding
from infscope.selection.label_noise import NoiseEstimate, noise_in_picks, target_alignment
from infscope.selection.learned import (
    FitSummary,
    InfluencePredictor,
    PredictorConfig,
    sample_probe,
)
from infscope.selection.registry import SELECTORS, build_selector, register_selector
from infscope.selection.similarity import (
    ClusterMatch,
    TargetSimilarity,
    proportional_quotas,
    target_similarity,
)
from infscope.selection.targeted import BIDS, LESS, normalize_instances
from infscope.selection.transport import TAROT, RatioCurve, whitened_features

__all__ = [
    "BIDS",
    "DSIR",
    "IDEAL",
    "LESS",
    "SKEW_MARGIN",
    "SELECTORS",
    "TAROT",
    "BSRDemonstrations",
    "ClusterBandit",
    "ClusterMatch",
    "DemonstrationSelector",
    "FitSummary",
    "InContextInfluence",
    "InfluenceEstimate",
    "InfluencePredictor",
    "KMeansCentres",
    "LabelBalance",
    "LabelSkew",
    "MethodComparison",
    "SeedStats",
    "RatioCurve",
    "SetBSRDemonstrations",
    "SimilarDemonstrations",
    "TargetAligned",
    "TargetSimilarity",
    "NoiseEstimate",
    "estimate_noise",
    "noise_in_picks",
    "pool_alignment",
    "select_excluding",
    "target_alignment",
    "TokenQuery",
    "VoteK",
    "build_selector",
    "register_selector",
    "compare_methods",
    "diagnose",
    "seed_stats",
    "dsir_log_weights",
    "hashed_ngram_counts",
    "idf_weights",
    "label_skew",
    "whitened_features",
    "Pool",
    "PredictorConfig",
    "RandomSelection",
    "Selection",
    "SelectionReport",
    "Selector",
    "SoftmaxSampling",
    "Stratified",
    "TopK",
    "cluster_features",
    "normalize_instances",
    "proportional_quotas",
    "resolve_budget",
    "sample_probe",
    "target_similarity",
]
