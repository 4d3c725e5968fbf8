"""``--config FILE`` on every command and the resolved configuration each run writes."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from infscope.attribution import load_scores
from infscope.cli.config import config_key
from infscope.cli.main import app
from tests.cli.conftest import assert_clean_error, features_args, invoke


def body(path):
    """A written configuration without its comment lines."""
    return yaml.safe_load(path.read_text())


@pytest.fixture
def store(runner, project, monkeypatch):
    monkeypatch.chdir(project)  # configs hold paths as given: relative to the working directory
    result = invoke(runner, *features_args("train.jsonl", "train-store"))
    assert result.exit_code == 0, result.output
    return project


def test_every_command_takes_a_config_file():
    import typer

    def leaves(command, path=()):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from leaves(sub, (*path, name))
        else:
            yield path, command

    found = dict(leaves(typer.main.get_command(app)))
    assert {("score",), ("features",), ("evaluate", "mislabel"), ("store", "info")} <= set(found)
    for path, command in found.items():
        assert [p.name for p in command.params].count("config") == 1, path


def test_round_trip_repeats_the_run(runner, store):
    config = store / "train-store" / "config.final.yaml"
    written = body(config)
    assert written["data"] == "train.jsonl" and written["learning-rate"] == 0.1
    assert written["dim"] == 16 and written["projection"] == "sjlt"

    assert invoke(runner, "score", "--train", "train-store", "--out", "self").exit_code == 0
    first = body(store / "self" / "config.yaml")
    assert first["method"] == "tracin" and first["train"] == "train-store"
    values = load_scores(store / "self").values

    # the same file, another output folder: the same scores, the same settings
    result = invoke(runner, "score", "--config", "self/config.yaml", "--out", "again")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(load_scores(store / "again").values, values)
    again = body(store / "again" / "config.yaml")
    assert {**again, "out": "self"} == first

    # features repeated from its file into a new store: the same features
    result = invoke(runner, "features", "--config", str(config), "--out", "copy")
    assert result.exit_code == 0, result.output
    from infscope.store import FeatureStore

    np.testing.assert_array_equal(
        FeatureStore.open(store / "copy").features(), FeatureStore.open(config.parent).features()
    )


def test_command_line_overrides_the_file(runner, store):
    assert invoke(runner, "score", "--train", "train-store", "--out", "self").exit_code == 0
    # positional SCORES, a multiple option as a scalar, dashes or underscores
    (store / "run.yaml").write_text("scores: self\nk: 4\nfield: text\nmax_queries: 2\nout: a.csv\n")
    result = invoke(runner, "top", "--config", "run.yaml")
    assert result.exit_code == 0, result.output
    assert len((store / "a.csv").read_text().splitlines()) == 1 + 4
    resolved = body(store / "a.config.yaml")
    assert resolved["k"] == 4 and resolved["field"] == ["text"] and resolved["max-queries"] == 2

    result = invoke(runner, "top", "--config", "run.yaml", "--k", "2", "--out", "b.csv")
    assert result.exit_code == 0, result.output
    assert len((store / "b.csv").read_text().splitlines()) == 1 + 2
    resolved = body(store / "b.config.yaml")
    assert resolved["k"] == 2 and resolved["max-queries"] == 2 and resolved["scores"] == "self"


def test_commands_without_outputs_write_no_configuration(runner, store):
    assert invoke(runner, "score", "--train", "train-store", "--out", "self").exit_code == 0
    before = sorted(p.name for p in store.rglob("*.yaml"))
    assert invoke(runner, "top", "self", "--k", "1").exit_code == 0
    assert invoke(runner, "store", "info", "train-store").exit_code == 0
    assert sorted(p.name for p in store.rglob("*.yaml")) == before


def test_report_writes_its_configuration_beside_the_page(runner, store):
    assert invoke(runner, "score", "--train", "train-store", "--out", "self").exit_code == 0
    result = invoke(runner, "report", ".", "--top", "2")
    assert result.exit_code == 0, result.output
    assert (store / "report.html").is_file()
    assert body(store / "report.config.yaml")["top"] == 2


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("scores: self\nkay: 3\n", ["'kay' is not an option of `infscope top`", "max-queries"]),
        ("scores: self\nk: many\n", ["--k", "integer"]),
        ("scores: self\nk: 0\n", ["--k", "greater than or equal to 1"]),
        ("scores: [self\n", ["run.yaml:2: invalid YAML"]),
        ("- scores\n", ["must hold a mapping"]),
        ("config: other.yaml\n", ["'config' is not an option"]),
        ("scores: self\nk: 3\nk: 5\n", ["run.yaml:3: invalid YAML", "duplicate key 'k'"]),
        ("scores: self\nmax-queries: 1\nmax_queries: 2\n", ["'max-queries' and 'max_queries'"]),
    ],
)
def test_bad_config_files_are_one_error_line(runner, store, text, fragments):
    (store / "run.yaml").write_text(text)
    result = invoke(runner, "top", "--config", "run.yaml")
    assert_clean_error(result, "run.yaml", *fragments)
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_a_missing_config_file_is_an_error(runner, store):
    assert_clean_error(invoke(runner, "score", "--config", "none.yaml"), "none.yaml")


def test_config_keys_are_the_option_names():
    import typer

    command = typer.main.get_command(app).commands["evaluate"].commands["mislabel"]
    keys = {config_key(p) for p in command.params if p.expose_value}
    assert {"scores", "json", "mislabeled-ids", "negate"} <= keys


def test_the_repeat_line_quotes_a_path_with_spaces(runner, store):
    assert invoke(runner, "score", "--train", "train-store", "--out", "my run").exit_code == 0
    written = (store / "my run" / "config.yaml").read_text()
    assert "--config 'my run/config.yaml'" in written


def test_the_repeat_line_names_the_command_when_run_as_a_module():
    """Before: under ``python -m infscope.cli.main`` (as torchrun runs it) the line read
    ``infscope -m infscope.cli.main features``, which fails."""
    import click

    from infscope.cli.config import command_name

    root = click.Context(click.Group("main"), info_name="python -m infscope.cli.main")
    group = click.Context(click.Group("evaluate"), info_name="evaluate", parent=root)
    leaf = click.Context(click.Command("mislabel"), info_name="mislabel", parent=group)
    assert command_name(leaf) == "infscope evaluate mislabel"
