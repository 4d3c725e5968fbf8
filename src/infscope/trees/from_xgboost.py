"""XGBoost boosters (or ``XGBClassifier``, or a saved JSON/UBJSON model) as a
:class:`TreeEnsemble`.

Leaf tables come from the booster's JSON (``split_conditions`` at nodes without children hold the
leaf values, learning rate included), leaf ids from ``predict(pred_leaf=True)``. The initial margin
is measured, not parsed (its stored form differs by objective and version): the margin after the
first iteration minus that iteration's leaf values. A model file does not record the learning rate
or ``lambda``; give them (an in-memory booster reports its own). Softmax hessians are doubled, as
XGBoost does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from infscope.errors import InputError
from infscope.trees.ensemble import TreeEnsemble

_OBJECTIVES = {"binary:logistic", "binary:logitraw", "multi:softprob", "multi:softmax"}


def _tables(booster: Any) -> list[np.ndarray]:
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    tables = []
    for tree in trees:
        leaf = np.asarray(tree["left_children"]) == -1
        tables.append(
            np.where(leaf, np.asarray(tree["split_conditions"], dtype=np.float64), np.nan)
        )
    return tables


def from_xgboost(
    model: Any, learning_rate: float | None = None, reg_lambda: float | None = None
) -> TreeEnsemble:
    """An ``xgboost.Booster``, an ``XGBClassifier`` or the path of a saved model. For a file,
    ``learning_rate`` and ``reg_lambda`` must be given (the file does not record them)."""
    import xgboost

    classes = None
    if isinstance(model, (str, Path)):
        if learning_rate is None or reg_lambda is None:
            raise InputError("an XGBoost model file does not record eta and lambda: give both")
        try:
            booster = xgboost.Booster(model_file=str(model))
        except xgboost.core.XGBoostError as err:
            first = str(err).splitlines()[0]
            raise InputError(f"{model}: not a readable XGBoost model ({first})") from None
    elif isinstance(model, xgboost.XGBModel):
        booster, classes = model.get_booster(), np.asarray(model.classes_)
    elif isinstance(model, xgboost.Booster):
        booster = model
    else:
        raise InputError(f"expected an XGBoost booster, model or model file, got {type(model)}")
    config = json.loads(booster.save_config())["learner"]
    objective = config["objective"]["name"]
    if objective not in _OBJECTIVES:
        raise InputError(f"XGBoost objective {objective!r}: only binary and multiclass log loss")
    train = config["gradient_booster"].get("tree_train_param", {})
    for name in ("alpha", "max_delta_step"):
        if float(train.get(name, 0)) != 0:
            raise InputError(f"XGBoost {name}={train[name]} changes leaf values; not supported")
    if float(train.get("subsample", 1)) != 1:
        raise InputError("XGBoost row subsampling fits leaves on subsets; not supported")
    tables = _tables(booster)
    n_outputs = max(1, int(config["learner_model_param"]["num_class"]))
    n_features = booster.num_features()

    def apply(features: np.ndarray) -> np.ndarray:
        leaves = booster.predict(xgboost.DMatrix(features), pred_leaf=True)
        return leaves.reshape(features.shape[0], -1).astype(np.int64)

    probe = np.zeros((1, n_features))
    first = apply(probe)[0, :n_outputs]
    margin = booster.predict(xgboost.DMatrix(probe), output_margin=True, iteration_range=(0, 1))
    init = np.asarray(margin, dtype=np.float64).reshape(-1) - [
        tables[k][first[k]] for k in range(n_outputs)
    ]
    return TreeEnsemble(
        library="xgboost",
        apply=apply,
        leaf_values=tables,
        n_outputs=n_outputs,
        init_score=init,
        learning_rate=float(train["eta"] if learning_rate is None else learning_rate),
        l2=float(train["lambda"] if reg_lambda is None else reg_lambda),
        hessian_scale=2.0 if n_outputs > 1 else 1.0,
        classes=classes,
    )
