"""LightGBM boosters (or ``LGBMClassifier``, or a saved text model) as a :class:`TreeEnsemble`.

Leaf tables come from ``Booster.dump_model()`` (JSON), leaf ids from ``predict(pred_leaf=True)``,
the learning rate and L2 penalty from the booster's parameters (a text model records them).
With ``boost_from_average`` (LightGBM's default) the first iteration's trees carry the initial
score — the log-odds (binary) or log class shares (softmax) of the training labels — in their leaf
values; the ensemble leaves ``init_score`` to be fitted to the labels and takes it out of those
trees. Softmax hessians are scaled by ``K / (K - 1)``, as LightGBM does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from infscope.errors import InputError
from infscope.trees.ensemble import TreeEnsemble

_OBJECTIVES = {"binary", "multiclass", "softmax"}
#: settings under which leaf values are no longer -lr * G / (H + l2) of the whole training set
_UNSUPPORTED = {"lambda_l1": 0.0, "max_delta_step": 0.0, "path_smooth": 0.0}


def _leaf_table(tree: dict[str, Any], n_leaves: int) -> np.ndarray:
    table = np.full(n_leaves, np.nan)
    stack = [tree]
    while stack:
        node = stack.pop()
        if "leaf_value" in node:
            table[int(node.get("leaf_index", 0))] = float(node["leaf_value"])
        else:
            stack += [node["left_child"], node["right_child"]]
    return table


def from_lightgbm(model: Any) -> TreeEnsemble:
    """A ``lightgbm.Booster``, an ``LGBMClassifier`` or the path of a LightGBM text model."""
    import lightgbm

    classes = None
    if isinstance(model, (str, Path)):
        try:
            booster = lightgbm.Booster(model_file=str(model))
        except lightgbm.basic.LightGBMError as err:
            raise InputError(f"{model}: not a readable LightGBM text model ({err})") from None
    elif isinstance(model, lightgbm.LGBMModel):
        booster, classes = model.booster_, np.asarray(model.classes_)
    elif isinstance(model, lightgbm.Booster):
        booster = model
    else:
        raise InputError(f"expected a LightGBM booster, model or model file, got {type(model)}")
    # a text round trip gives the parameters their canonical names (reg_lambda -> lambda_l2)
    params = lightgbm.Booster(model_str=booster.model_to_string()).params
    objective = str(params.get("objective", "")).split()[0]
    if objective not in _OBJECTIVES:
        raise InputError(f"LightGBM objective {objective!r}: only binary and multiclass log loss")
    for name, neutral in _UNSUPPORTED.items():
        if float(params.get(name, neutral) or neutral) != neutral:
            raise InputError(f"LightGBM {name}={params[name]} changes leaf values; not supported")
    if params.get("linear_tree"):
        raise InputError("LightGBM linear trees are not supported")
    dump = booster.dump_model()
    n_outputs = int(dump["num_tree_per_iteration"])
    tables = [_leaf_table(t["tree_structure"], int(t["num_leaves"])) for t in dump["tree_info"]]
    from_average = bool(params.get("boost_from_average", True))

    def apply(features: np.ndarray) -> np.ndarray:
        return booster.predict(features, pred_leaf=True).reshape(features.shape[0], -1)

    return TreeEnsemble(
        library="lightgbm",
        apply=apply,
        leaf_values=tables,
        n_outputs=n_outputs,
        init_score=None if from_average else np.zeros(n_outputs),
        learning_rate=float(params.get("learning_rate", 0.1)),
        l2=float(params.get("lambda_l2", 0.0) or 0.0),
        hessian_scale=n_outputs / (n_outputs - 1.0) if n_outputs > 1 else 1.0,
        classes=classes,
    )
