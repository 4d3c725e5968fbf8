"""`infscope score --method ...` covers every estimator and matches the Python API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from infscope.attribution import build_estimator, load_scores
from infscope.cli.main import app
from infscope.data import ExampleSet
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask

runner = CliRunner()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(36, 4), torch.randint(0, 3, (36,))
    pairs = [(x[i], y[i]) for i in range(36)]
    train = ExampleSet(pairs[:30], tuple(map(str, range(30))))
    query = ExampleSet(pairs[30:], tuple(f"q{i}" for i in range(6)))
    identity = ProjectionConfig(kind="identity", dim=None)
    for measurement, gradient in (("loss", "loss"), ("margin", "measurement")):
        extractor = GradientExtractor(model, ClassificationTask(measurement), identity)
        featurize(
            extractor,
            train,
            root / f"train-{measurement}",
            learning_rate=0.1,
            gradient=gradient,
            progress=False,
        )
        featurize(
            extractor,
            query,
            root / f"query-{measurement}",
            learning_rate=0.1,
            gradient="measurement",
            progress=False,
        )
    return root


@pytest.mark.parametrize(
    "method,options,kind",
    [
        ("influence", {"solver": "cg", "damping": 0.2}, "loss"),
        ("influence", {"normalize": "relatif"}, "loss"),
        ("datainf", {}, "loss"),
        ("trak", {"damping": 0.01}, "margin"),
        ("tracin", {}, "loss"),
    ],
)
def test_cli_scores_equal_the_python_api(stores, tmp_path, method, options, kind):
    args = [
        "score",
        "--train",
        str(stores / f"train-{kind}"),
        "--query",
        str(stores / f"query-{kind}"),
        "--out",
        str(tmp_path / "s"),
        "--method",
        method,
    ]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = (
        build_estimator(method, **options)
        .fit(FeatureStore.open(stores / f"train-{kind}"))
        .score(FeatureStore.open(stores / f"query-{kind}"))
    )
    saved = load_scores(tmp_path / "s")
    np.testing.assert_allclose(saved.values, expected.values, rtol=1e-6)
    assert saved.metadata["method"] == expected.method


def test_cli_refuses_unknown_methods_and_missing_arguments(stores, tmp_path):
    base = ["score", "--train", str(stores / "train-loss"), "--out", str(tmp_path / "s")]
    result = runner.invoke(app, base + ["--method", "shapley"])
    assert result.exit_code == 2 and "unknown method" in result.output
    result = runner.invoke(app, base + ["--method", "representer"])
    assert result.exit_code == 2 and "l2_regularization" in result.output
    result = runner.invoke(app, base + ["--method", "trak"])
    assert result.exit_code == 2 and "measurement" in result.output


def _flags(command: str) -> set[str]:
    import typer

    from infscope.cli.main import app as application

    group = typer.main.get_command(application)
    return {o for p in group.commands[command].params for o in getattr(p, "opts", ())}


def test_every_command_that_builds_an_estimator_has_every_declared_option():
    """score and index read the same declarations (index lacked --query-rank before)."""
    from infscope.attribution.registry import OPTIONS

    declared = {"--method"} | {"--" + name.replace("_", "-") for name in OPTIONS}
    for command in ("score", "index"):
        assert declared <= _flags(command), command


def test_former_flags_print_a_warning_and_still_work(stores, tmp_path):
    args = ["score", "--train", str(stores / "train-loss"), "--method", "dot"]
    result = runner.invoke(app, [*args, "--checkpoint", "final", "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "warning: --checkpoint is deprecated; use --checkpoints" in result.output
    current = runner.invoke(app, [*args, "--checkpoints", "final", "--out", str(tmp_path / "b")])
    assert current.exit_code == 0 and "deprecated" not in current.output
    np.testing.assert_array_equal(
        load_scores(tmp_path / "a").values, load_scores(tmp_path / "b").values
    )


def test_options_a_method_does_not_take_are_one_line_errors(stores, tmp_path):
    base = ["score", "--train", str(stores / "train-loss"), "--out", str(tmp_path / "s")]
    result = runner.invoke(app, [*base, "--method", "tracin", "--damping", "0.5"])
    assert result.exit_code == 2 and "tracin takes no damping" in result.output

