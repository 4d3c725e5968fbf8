"""From scores to a dataset: selectors that pick a training subset under a budget.

Every strategy is a :class:`Selector` reading a :class:`Pool` and returning a :class:`Selection`
(ids, weights, order and a reason per pick), ready to write out as jsonl or a
``datasets.Dataset``.
"""

from infscope.selection.annotation import IDEAL, VoteK
from infscope.selection.bandit import ClusterBandit, cluster_features
from infscope.selection.base import Pool, Selection, Selector, resolve_budget
from infscope.selection.basic import RandomSelection, SoftmaxSampling, Stratified, TopK
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
from infscope.selection.dsir import DSIR, dsir_log_weights, hashed_ngram_counts
from infscope.selection.registry import SELECTORS, build_selector
from infscope.selection.targeted import BIDS, LESS, normalize_instances
from infscope.selection.transport import TAROT, RatioCurve, whitened_features

__all__ = [
    "BIDS",
    "DSIR",
    "IDEAL",
    "LESS",
    "SELECTORS",
    "TAROT",
    "BSRDemonstrations",
    "ClusterBandit",
    "DemonstrationSelector",
    "InContextInfluence",
    "InfluenceEstimate",
    "RatioCurve",
    "SetBSRDemonstrations",
    "SimilarDemonstrations",
    "TokenQuery",
    "VoteK",
    "build_selector",
    "dsir_log_weights",
    "hashed_ngram_counts",
    "idf_weights",
    "whitened_features",
    "Pool",
    "RandomSelection",
    "Selection",
    "Selector",
    "SoftmaxSampling",
    "Stratified",
    "TopK",
    "cluster_features",
    "normalize_instances",
    "resolve_budget",
]
