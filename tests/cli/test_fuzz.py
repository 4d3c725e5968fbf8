"""Property-based tests of the CLI's options: whatever the values, a command either succeeds with
finite results or exits 2 with a one-line error — never a traceback, never NaN with rc 0.

Derandomized (the same examples every run) and bounded, so the suite stays fast and repeatable.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from infscope.attribution import load_scores
from infscope.cli import output
from infscope.cli.main import app
from infscope.store import FeatureStore
from tests.cli.conftest import FACTORY, FACTORY_MODULE, N_QUERY, N_TRAIN, features_args, write_jsonl

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: numbers a user might type, including the ones that break naive code
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, -1.0, 1.0, 0.5]),
)
#: integer options as typed: out of range, or not integers
bad_ints = st.one_of(st.integers(-(10**6), 0).map(str), st.sampled_from(["x", "1.5", "1e3", ""]))


def cases(valid: dict, bad: dict) -> st.SearchStrategy[dict]:
    """Option values: all valid (half the examples), or all valid but one drawn from ``bad``.
    Valid values still reach extremes (tiny damping, odd shard sizes) that must not give NaN."""
    chosen = st.fixed_dictionaries(valid)
    broken = st.sampled_from(sorted(bad)).flatmap(
        lambda key: st.tuples(chosen, st.just(key), bad[key]).map(lambda t: {**t[0], t[1]: t[2]})
    )
    return st.one_of(chosen, broken)


def flags(options: dict) -> list[str]:
    """``{"block_size": 3, "negate": True, "damping": None}`` -> ``--block-size 3 --negate``."""
    args = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        name = "--" + key.replace("_", "-")
        args += [name] if value is True else [name, str(value)]
    return args


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The factory module, data files and finished train/query stores, built once."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / f"{FACTORY_MODULE}.py").write_text(FACTORY)
    rng = np.random.default_rng(0)
    for name, n in (("train", N_TRAIN), ("query", N_QUERY)):
        records = [
            {
                "id": f"{name[0]}{i}",
                "x": rng.standard_normal(4).round(3).tolist(),
                "label": i % 3,
                "is_mislabeled": i % 4 == 0,
                "text": f"example {i}",
            }
            for i in range(n)
        ]
        write_jsonl(root / f"{name}.jsonl", records)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        patch.setattr(output.console, "_width", 300)
        patch.setattr(output.err_console, "_width", 300)
        runner = CliRunner()
        for name, kind in (("train", "loss"), ("query", "measurement")):
            args = features_args(root / f"{name}.jsonl", root / f"{name}-store", "--gradient", kind)
            assert runner.invoke(app, [str(a) for a in args]).exit_code == 0
        for out, extra in (("self", []), ("matrix", ["--query", root / "query-store"])):
            args = ["score", "--train", root / "train-store", "--out", root / out, *extra]
            assert runner.invoke(app, [str(a) for a in args]).exit_code == 0
        yield root, runner


def fresh(root: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=root)) / "out"


def check(result) -> bool:
    """rc 0, or rc 2 with an error line; never a traceback. True when the command succeeded."""
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code == 2:
        assert "error:" in result.output or "Error:" in result.output, result.output
        event("usage error" if "Error:" in result.output else "error line")
    else:
        event("success")
    return result.exit_code == 0


def run(runner, *args):
    return runner.invoke(app, [str(a) for a in args])


def assert_finite_store(path: Path) -> None:
    store = FeatureStore.open(path)
    for checkpoint in store.checkpoints:
        assert np.isfinite(store.features(checkpoint.id)).all()


FEATURES = cases(
    valid={
        "projection": st.sampled_from(["sjlt", "kronecker", "gaussian", "rademacher"]),
        "dim": st.sampled_from([2, 8, 16, 32, 67]),
        "batch_size": st.integers(1, 13),
        "shard_size": st.integers(1, 13),
        "dtype": st.sampled_from(["float32", "float16"]),
        "learning_rate": st.floats(1e-8, 1e3),
        "checkpoint": st.from_regex(r"[A-Za-z0-9._-]{1,8}", fullmatch=True).filter(
            lambda c: c not in (".", "..")
        ),
        "gradient": st.sampled_from(["loss", "measurement", "fisher"]),
        "seed": st.integers(0, 2**31),
    },
    bad={
        "projection": st.sampled_from(["eigen", "nope", ""]),
        "dim": st.one_of(bad_ints, st.sampled_from(["68", "100000000"])),
        "batch_size": bad_ints,
        "shard_size": bad_ints,
        "dtype": st.sampled_from(["float64", "int8", ""]),
        "learning_rate": numbers.map(repr),
        "checkpoint": st.sampled_from(["a/b", "..", "", "é", " x"]),
        "gradient": st.sampled_from(["grad", ""]),
        "seed": st.sampled_from(["-1", "x", str(2**70)]),
    },
)


@settings(FUZZ, max_examples=40)
@given(options=FEATURES)
def test_features_options(workspace, options):
    root, runner = workspace
    out = fresh(root)
    args = ["features", root / "train.jsonl", "--task", "factory", "--model"]
    args += [f"{FACTORY_MODULE}:build", "--out", out, *flags(options)]
    if check(run(runner, *args)):
        assert_finite_store(out)


SCORE = cases(
    valid={
        "method": st.sampled_from(["dot", "cosine", "tracin", "influence", "trak", "datainf"]),
        "damping": st.one_of(st.none(), st.floats(1e-12, 1e12)),
        "damping_mode": st.sampled_from(["relative", "absolute"]),
        "solver": st.sampled_from(["auto", "exact", "cg", "lissa", "arnoldi"]),
        "normalize": st.sampled_from(["none", "unit"]),
        "checkpoint": st.sampled_from([None, "final", "all"]),
        "block_size": st.integers(1, 20),
        "query": st.booleans(),
        "table": st.sampled_from(["csv", "parquet", "none"]),
    },
    bad={
        "method": st.sampled_from(["representer", "ekfac", "kfac", "x"]),
        "damping": numbers,
        "damping_mode": st.just("other"),
        "solver": st.just("magic"),
        "normalize": st.sampled_from(["relatif", "l2"]),
        "checkpoint": st.sampled_from(["missing", "a/b"]),
        "block_size": bad_ints,
        "table": st.just("xlsx"),
    },
)


@settings(FUZZ, max_examples=50)
@given(options=SCORE)
def test_score_options(workspace, options):
    root, runner = workspace
    out = fresh(root)
    query = options.pop("query", False)
    args = ["score", "--train", root / "train-store", "--out", out, *flags(options)]
    if query:
        args += ["--query", root / "query-store"]
    if check(run(runner, *args)):
        assert np.isfinite(load_scores(out).values).all()


TOP = cases(
    valid={
        "which": st.sampled_from(["self", "matrix"]),
        "k": st.integers(1, 20),
        "max_queries": st.integers(1, 5),
        "field": st.sampled_from(["text", "label", "nope"]),
        "out": st.sampled_from([None, ".csv", ".parquet"]),
    },
    bad={"k": bad_ints, "max_queries": bad_ints, "out": st.sampled_from([".txt", ".npy"])},
)


@FUZZ
@given(options=TOP)
def test_top_options(workspace, options):
    root, runner = workspace
    which, suffix = options.pop("which"), options.pop("out")
    args = ["top", root / which, "--train-data", root / "train.jsonl"]
    args += ["--query-data", root / "query.jsonl", *flags(options)]
    if suffix is not None:
        args += ["--out", fresh(root).with_suffix(suffix)]
    check(run(runner, *args))


SELECT = cases(
    valid={
        "method": st.sampled_from(
            ["top-k", "bottom-k", "random", "softmax", "cluster-bandit", "stratified"]
        ),
        "budget": st.one_of(st.integers(1, N_TRAIN), st.floats(0.05, 1.0)),
        "option": st.none(),
        "negate": st.booleans(),
        "features": st.booleans(),
        "seed": st.integers(0, 100),
    },
    bad={
        "method": st.sampled_from(["less", "bids", "tarot", "dsir", "bogus"]),
        "budget": st.one_of(numbers, st.sampled_from(["0", "-3", "x", "1e9", "100"])),
        "option": st.sampled_from(
            [
                "n_clusters=abc",
                "n_clusters=0",
                "n_clusters=-2",
                "temperature=0",
                "temperature=nan",
                "take=2",
                "probe_size=1e9",
                "x=1",
                "=",
                "novalue",
                "by=nope",
            ]
        ),  # fmt: skip
    },
)


@FUZZ
@given(options=SELECT)
def test_select_options(workspace, options):
    root, runner = workspace
    features = options.pop("features")
    args = ["select", "--scores", root / "self", "--data", root / "train.jsonl", "--tag", "label"]
    args += ["--out", fresh(root), *flags(options)]
    if features:
        args += ["--features", root / "train-store"]
    check(run(runner, *args))


PRUNE = cases(
    valid={
        "keep": st.lists(st.floats(0.05, 1.0), min_size=1, max_size=3).map(
            lambda fs: ",".join(f"{f:.3f}" for f in fs)
        ),
        "seeds": st.lists(st.integers(0, 9), min_size=1, max_size=2).map(
            lambda ss: ",".join(map(str, ss))
        ),
        "strategy": st.sampled_from(["keep-hard", "keep-easy", "drop-both-tails"]),
        "labels": st.booleans(),
    },
    bad={
        "keep": st.one_of(numbers.map(repr), st.sampled_from(["1.5", "0", "", "a,b", "-0.1,0.5"])),
        "seeds": st.sampled_from(["", "1.5", "nan", "x", "inf"]),
        "strategy": st.sampled_from(["class-stratified", "other"]),
    },
)


@settings(FUZZ, max_examples=20)
@given(options=PRUNE)
def test_prune_options(workspace, options):
    root, runner = workspace
    out = fresh(root)
    labels = options.pop("labels")
    args = ["prune", "--score", f"tracin={root / 'self'}", "--train-fn"]
    args += [f"{FACTORY_MODULE}:train_fn", "--out", out, *flags(options)]
    if labels:
        args += ["--labels", root / "train.jsonl"]
    if check(run(runner, *args)):
        assert (out / "runs.csv").is_file()


MISLABEL = cases(
    valid={
        "fractions": st.lists(st.floats(0.01, 1.0), max_size=3),
        "field": st.just("is_mislabeled"),
    },
    bad={
        "fractions": st.lists(numbers, min_size=1, max_size=3),
        "field": st.sampled_from(["label", "text", "nope"]),
        "negate": st.just(True),
    },
)


@settings(FUZZ, max_examples=20)
@given(options=MISLABEL)
def test_evaluate_mislabel_options(workspace, options):
    root, runner = workspace
    args = ["evaluate", "mislabel", root / "self", "--data", root / "train.jsonl"]
    args += ["--field", options["field"]] + (["--negate"] if options.get("negate") else [])
    for fraction in options["fractions"]:
        args += ["--fraction", repr(fraction)]
    if check(run(runner, *args)):
        assert all(0 < f <= 1 for f in options["fractions"])
