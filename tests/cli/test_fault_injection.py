"""Fault injection: every long command killed with SIGKILL at seeded random points of its file
writes, then re-run, ends with outputs byte-identical to an uninterrupted run; two concurrent
writers on one store lose nothing.

A command runs in a forked child (cheap: torch is already imported) that kills itself with
SIGKILL at its n-th commit point — an ``fsync``, ``rename`` or ``link``, where a crash is most
likely to leave a half-finished state — for ``n`` drawn at random from the points an
uninterrupted run goes through.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from infscope.cli.main import app
from infscope.store import FeatureStore
from tests.cli.conftest import FACTORY_MODULE, N_TRAIN, features_args, write_jsonl

POINTS = ("fsync", "replace", "link")
KILLS_PER_COMMAND = 3
CHILD_TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@contextlib.contextmanager
def commit_points(on_point) -> Iterator[None]:
    """Call ``on_point()`` before every fsync, rename and link of this process."""
    saved = {name: getattr(os, name) for name in POINTS}

    def wrap(name):
        def wrapped(*args, **kwargs):
            on_point()
            return saved[name](*args, **kwargs)

        return wrapped

    for name in POINTS:
        setattr(os, name, wrap(name))
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(os, name, function)


def invoke(*args) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)


def count_points(*args) -> int:
    """Commit points of one uninterrupted run of the command."""
    seen = [0]

    def tick():
        seen[0] += 1

    with commit_points(tick):
        invoke(*args)
    return seen[0]


def run_killed_at(point: int, *args, before=None) -> None:
    """Run the command in a child that SIGKILLs itself at its ``point``-th commit point."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            if before is not None:
                before()
            seen = [0]

            def tick():
                seen[0] += 1
                if seen[0] == point:
                    os.kill(os.getpid(), signal.SIGKILL)

            with commit_points(tick):
                CliRunner().invoke(app, [str(a) for a in args])
        finally:
            os._exit(0)
    status = wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def wait(pid: int) -> int:
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"child {pid} hung")


def files(root: Path, names: list[str] | None = None) -> dict[str, bytes]:
    """The bytes of every file under ``root`` (hidden temporary files and the resolved
    configuration, which names ``root`` itself, aside), or of ``names``."""
    if names is not None:
        return {name: (root / name).read_bytes() for name in names}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".yaml")
    }


def kill_and_resume(project: Path, name: str, make_args, collect, seed: int) -> None:
    """Reference run, then for random commit points: kill there, re-run, and compare what
    ``collect(out)`` reads (file name -> bytes) with the reference's."""
    reference = project / f"{name}-reference"
    total = count_points(*make_args(reference))
    assert total > 3, total
    expected = collect(reference)
    rng = np.random.default_rng(seed)
    for point in sorted(rng.choice(np.arange(1, total + 1), KILLS_PER_COMMAND, replace=False)):
        out = project / f"{name}-killed-{point}"
        run_killed_at(int(point), *make_args(out))
        invoke(*make_args(out))  # resume: the same command again
        assert collect(out) == expected, f"{name} killed at point {point} of {total}"


def named(*names: str):
    """A collector of the given files of an output folder."""
    return lambda out: files(out, list(names))


@pytest.fixture
def self_scores(project):
    train = project / "train-store"
    invoke(*features_args(project / "train.jsonl", train))
    invoke("score", "--train", train, "--out", project / "self")
    return project / "self"


def test_features_killed_anywhere_resumes_to_identical_store(project):
    args = lambda out: features_args(project / "train.jsonl", out)  # noqa: E731
    kill_and_resume(project, "features", args, files, 0)


def test_factor_fitting_killed_anywhere_resumes_to_identical_factors(project):
    def factors(out: Path) -> Path:
        return out.with_name(f"{out.name}.safetensors")

    def args(out):
        return [
            *features_args(project / "train.jsonl", out),
            "--projection", "kronecker", "--fit-factors", factors(out),
        ]  # fmt: skip

    def collect(out):
        return {**files(out), "factors": factors(out).read_bytes()}

    kill_and_resume(project, "factors", args, collect, 1)


@pytest.mark.parametrize("query", [False, True])
def test_score_killed_anywhere_rewrites_identical_scores(project, query):
    train, queries = project / "train-store", project / "query-store"
    invoke(*features_args(project / "train.jsonl", train))
    invoke(*features_args(project / "query.jsonl", queries, "--gradient", "measurement"))
    extra = ["--query", queries] if query else []

    def args(out):
        return ["score", "--train", train, "--method", "influence", "--out", out, *extra]

    collect = named("values.npy", "scores.json", "scores.csv")
    kill_and_resume(project, f"score-{query}", args, collect, 2)


def test_select_killed_anywhere_rewrites_identical_outputs(project, self_scores):
    labels = write_jsonl(
        project / "tagged.jsonl", [{"id": f"t{i}", "label": i % 3} for i in range(N_TRAIN)]
    )

    def args(out):
        return [
            "select", "--method", "top-k", "--scores", self_scores, "--data", labels,
            "--tag", "label", "--budget", "0.5", "--out", out,
        ]  # fmt: skip

    collect = named("selection.json", "subset.jsonl", "summary.txt")
    kill_and_resume(project, "select", args, collect, 3)


def test_prune_killed_anywhere_resumes_to_identical_runs(project, self_scores):
    def args(out):
        return [
            "prune", "--score", f"tracin={self_scores}", "--train-fn",
            f"{FACTORY_MODULE}:train_fn", "--keep", "0.3,0.6", "--seeds", "0,1", "--out", out,
        ]  # fmt: skip

    def runs_without_timings(out):
        """runs.csv without its wall-time column (a measurement, different on every run) and
        summary.txt, byte for byte."""
        found = named("runs.csv", "summary.txt")(out)
        rows = [line.split(b",") for line in found["runs.csv"].split(b"\r\n")]
        timed = rows[0].index(b"seconds")
        found["runs.csv"] = [row[:timed] + row[timed + 1 :] for row in rows if row != [b""]]
        return found

    kill_and_resume(project, "prune", args, runs_without_timings, 4)


def test_two_concurrent_writers_on_one_store_lose_nothing(project):
    """Two processes extract into one store at the same time: one checkpoint each (their
    store.json updates would race: the window is widened so that, unlocked, one checkpoint is
    lost), and both the same checkpoint (same shards, same bytes)."""
    shared = project / "shared"
    original = FeatureStore._refresh

    def slow_refresh(self):
        original(self)
        time.sleep(0.3)  # between reading store.json and writing it back

    def writer(checkpoint, model):
        FeatureStore._refresh = slow_refresh
        args = features_args(project / "train.jsonl", shared, "--checkpoint", checkpoint)
        CliRunner().invoke(app, [str(a) for a in [*args, "--model", f"{FACTORY_MODULE}:{model}"]])

    children = []
    for checkpoint, model in (("a", "build"), ("b", "build_other"), ("a", "build")):
        pid = os.fork()
        if pid == 0:
            try:
                writer(checkpoint, model)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.WEXITSTATUS(wait(pid)) == 0
    store = FeatureStore.open(shared)
    assert sorted(c.id for c in store.checkpoints) == ["a", "b"]
    store.verify()
    assert store.is_complete()
    for checkpoint, model in (("a", "build"), ("b", "build_other")):
        alone = project / f"alone-{checkpoint}"
        args = features_args(project / "train.jsonl", alone, "--checkpoint", checkpoint)
        invoke(*args, "--model", f"{FACTORY_MODULE}:{model}")
        ours = files(shared / "checkpoints" / checkpoint)
        assert ours == files(alone / "checkpoints" / checkpoint), checkpoint
