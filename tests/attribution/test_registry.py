"""The estimator registry: options declared once, one checkpoint choice for every estimator,
specs that rebuild (also from the JSON written before), and the former spellings of options
still accepted with a deprecation warning."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from infscope.attribution import (
    EKFAC,
    TRAK,
    DataInf,
    GradientSimilarity,
    InfluenceFunction,
    RepresenterPoints,
    TracIn,
)
from infscope.attribution.registry import (
    ESTIMATORS,
    OPTIONS,
    EstimatorSpec,
    build_estimator,
    estimator_options,
)
from infscope.errors import InputError
from infscope.store import FeatureStore, StoreSpec


def _store(root, checkpoints=("a", "b", "c"), gradient="loss", rows=6, dim=4):
    spec = StoreSpec(feature_dim=dim, gradient=gradient, projection={"kind": "gaussian"})
    store = FeatureStore.create(root, [f"{root.name}{i}" for i in range(rows)], spec)
    rng = np.random.default_rng(0)
    for index, checkpoint in enumerate(checkpoints):
        store.add_checkpoint(checkpoint, learning_rate=0.1, fingerprint=f"w{index}")
        store.write_shard(checkpoint, 0, rng.standard_normal((rows, dim)))
    return store


def test_every_method_declares_only_declared_options_in_keyword_form():
    """Each registered estimator takes exactly its declared options by keyword, and every class
    orders its keyword-only options the same way."""
    canonical = ["normalize", "checkpoints", "damping", "damping_mode", "block_size"]
    for cls in (
        GradientSimilarity,
        TracIn,
        InfluenceFunction,
        TRAK,
        DataInf,
        EKFAC,
        RepresenterPoints,
    ):
        params = inspect.signature(inspect.unwrap(cls.__init__)).parameters.values()
        keyword = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
        shared = [name for name in keyword if name in canonical]
        assert shared == [name for name in canonical if name in shared], cls.__name__
        assert keyword[-1] == "block_size", cls.__name__
    for method in ESTIMATORS.values():
        assert set(method.options) <= set(OPTIONS)
    assert OPTIONS["query_rank"].methods == ("ekfac", "kfac")
    assert "checkpoints" in estimator_options("ekfac")


def test_one_checkpoint_choice_for_every_estimator(tmp_path):
    train = _store(tmp_path / "t")
    cases = [
        (TracIn(), ["a", "b", "c"]),
        (TracIn(checkpoints="last"), ["c"]),
        (TracIn(checkpoints=["a", "c"]), ["a", "c"]),
        (GradientSimilarity(), ["c"]),
        (GradientSimilarity(checkpoints="b"), ["b"]),
        (InfluenceFunction(), ["c"]),
        (InfluenceFunction(checkpoints="all"), ["a", "b", "c"]),
        (InfluenceFunction(checkpoints=("b",)), ["b"]),
        (DataInf(checkpoints="a"), ["a"]),
    ]
    for estimator, expected in cases:
        assert estimator.checkpoint_ids(train) == expected, type(estimator).__name__
    for single in (GradientSimilarity, DataInf):
        with pytest.raises(InputError, match="one checkpoint"):
            single(checkpoints="all")
    with pytest.raises(InputError, match="checkpoints must be"):
        TracIn(checkpoints=3)


def test_build_refuses_options_a_method_does_not_take(tmp_path):
    with pytest.raises(InputError, match="tracin takes no damping"):
        build_estimator("tracin", damping=0.5)
    with pytest.raises(InputError, match="takes no query rank"):
        build_estimator("influence", query_rank=4)
    with pytest.raises(InputError, match="representer needs l2_regularization"):
        build_estimator("representer")
    with pytest.raises(InputError, match="must be one of"):
        build_estimator("influence", solver="magic")
    with pytest.raises(InputError, match="unknown method"):
        build_estimator("shapley")
    # options at their default pass for every method (the CLI gives every option)
    assert build_estimator("tracin", damping=None, solver="auto", block_size=4096).name == "tracin"
    assert build_estimator("cosine").normalize == "unit"


def test_specs_round_trip_and_read_the_json_written_before(tmp_path):
    spec = EstimatorSpec("influence", damping=0.5, checkpoints=["b"], block_size=7)
    again = EstimatorSpec.from_json(spec.to_json())
    assert again == spec and again.options == {
        "damping": 0.5,
        "checkpoints": ["b"],
        "block_size": 7,
    }
    estimator = again.build()
    assert isinstance(estimator, InfluenceFunction) and estimator.checkpoints == ("b",)
    # an index's estimator.json as infscope wrote it before the registry (every field)
    written_before = {
        "method": "tracin",
        "normalize": "none",
        "checkpoint": "all",
        "damping": None,
        "damping_mode": "relative",
        "solver": "auto",
        "l2_regularization": None,
        "factors": [],
        "block_size": 4096,
        "fisher": None,
        "query_rank": None,
    }
    old = EstimatorSpec.from_json(written_before)
    assert old.method == "tracin" and old.options == {"checkpoints": ["all"]}
    assert old.build().checkpoint_ids(_store(tmp_path / "t")) == ["a", "b", "c"]
    with pytest.raises(InputError, match="unknown options"):
        EstimatorSpec.from_json({"method": "tracin", "dampening": 1})


def test_former_keywords_and_positional_options_warn_and_still_work(tmp_path):
    train = _store(tmp_path / "t")
    with pytest.warns(DeprecationWarning, match="checkpoints"):
        assert GradientSimilarity(checkpoint="a").checkpoint_ids(train) == ["a"]
    with pytest.warns(DeprecationWarning, match="checkpoints"):
        assert RepresenterPoints(0.1, checkpoint="b").checkpoint_ids(train) == ["b"]
    with pytest.warns(DeprecationWarning, match="by keyword"):
        estimator = InfluenceFunction("cg", 0.3)
    assert estimator.solver.name == "cg" and estimator.damping == 0.3
    with pytest.warns(DeprecationWarning, match="by keyword"):
        assert TRAK(0.2, "absolute").damping_mode == "absolute"
    with pytest.warns(DeprecationWarning, match="'checkpoint' is deprecated"):
        assert build_estimator("dot", checkpoint="b").checkpoint_ids(train) == ["b"]
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError):
        GradientSimilarity(checkpoint="a", checkpoints="b")
