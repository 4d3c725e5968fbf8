"""Which library a fitted model comes from, and model files read in safe formats only.

A model object is recognised by its class's top-level module; files are LightGBM text models
(``.txt``) or XGBoost JSON / UBJSON models (``.json``, ``.ubj``). Pickles are never read: a
pickled model can run arbitrary code when it is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infscope.errors import InputError
from infscope.trees.ensemble import TreeEnsemble

#: model file suffix -> library
FILE_LIBRARIES = {".txt": "lightgbm", ".json": "xgboost", ".ubj": "xgboost"}


def _recorded(library: str, adapter: dict[str, Any]) -> None:
    """Refuse settings the library's model records itself (only XGBoost files lack them)."""
    given = sorted(k for k, v in adapter.items() if v is not None)
    if given:
        raise InputError(f"{library} models record their own settings; drop {', '.join(given)}")


def ensemble_of(model: Any, **adapter: Any) -> TreeEnsemble:
    """A :class:`TreeEnsemble` for a fitted scikit-learn, LightGBM or XGBoost classifier (or
    booster); ``adapter`` options go to the library's reader (XGBoost: ``learning_rate``,
    ``reg_lambda``)."""
    if isinstance(model, TreeEnsemble):
        return model
    library = type(model).__module__.split(".")[0]
    if library == "sklearn":
        from infscope.trees.from_sklearn import from_sklearn

        _recorded(library, adapter)
        return from_sklearn(model)
    if library == "lightgbm":
        from infscope.trees.from_lightgbm import from_lightgbm

        _recorded(library, adapter)
        return from_lightgbm(model)
    if library == "xgboost":
        from infscope.trees.from_xgboost import from_xgboost

        return from_xgboost(model, **adapter)
    raise InputError(
        f"{type(model).__name__} is not a scikit-learn, LightGBM or XGBoost boosted classifier"
    )


def load_model_file(path: str | Path, **adapter: Any) -> TreeEnsemble:
    """The ensemble saved in a LightGBM text or XGBoost JSON/UBJSON model file."""
    path = Path(path)
    library = FILE_LIBRARIES.get(path.suffix.lower())
    if library is None:
        raise InputError(
            f"{path}: expected a LightGBM text model (.txt) or an XGBoost model (.json, .ubj); "
            "pickled models are never loaded"
        )
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    if library == "lightgbm":
        from infscope.trees.from_lightgbm import from_lightgbm

        _recorded(library, adapter)
        return from_lightgbm(path)
    from infscope.trees.from_xgboost import from_xgboost

    return from_xgboost(path, **adapter)
