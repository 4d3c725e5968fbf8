"""Influence for gradient-boosted decision trees (scikit-learn, LightGBM, XGBoost).

:class:`TreeInfluence` scores training examples by BoostIn or TracIn on the fitted trees and
returns infscope's :class:`~infscope.attribution.scores.Scores` and
:class:`~infscope.attribution.scores.SelfInfluence`; :func:`fit_classifier` trains comparable
deterministic models in each library; :func:`load_model_file` reads LightGBM text and XGBoost JSON
models (never pickles). LightGBM and XGBoost are imported only when one of their models is used.
"""

from infscope.trees.ensemble import TreeEnsemble
from infscope.trees.influence import METHODS, TreeInfluence, trace
from infscope.trees.models import ensemble_of, load_model_file
from infscope.trees.training import LIBRARIES, TreeParams, fit_classifier

__all__ = [
    "LIBRARIES",
    "METHODS",
    "TreeEnsemble",
    "TreeInfluence",
    "TreeParams",
    "ensemble_of",
    "fit_classifier",
    "load_model_file",
    "trace",
]
