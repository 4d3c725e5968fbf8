"""`infscope score --top`, `infscope index` and `infscope query`: streaming and indexed top-k
from the command line equal the library's exact top-k; bad combinations are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.attribution import TracIn
from infscope.attribution.top_k import TopScores
from tests.cli.conftest import invoke
from tests.index.test_ann import clustered, write_store

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-index")
    train = write_store(root / "train", {"a": clustered(300, 16, 6, 0)}, "loss", "t")
    query = write_store(root / "query", {"a": clustered(7, 16, 6, 1)}, "measurement", "q")
    return train, query, TracIn().fit(train).score_top(query, 5)


def test_score_top_streams_the_exact_top_k(runner, stores, tmp_path):
    train, query, exact = stores
    result = invoke(
        runner,
        "score",
        "--train",
        train.root,
        "--query",
        query.root,
        "--top",
        5,
        "--out",
        tmp_path / "top",
    )
    assert result.exit_code == 0, result.output
    found = TopScores.load(tmp_path / "top")
    np.testing.assert_array_equal(found.arrays["helpful"], exact.arrays["helpful"])
    assert (tmp_path / "top" / "top.csv").read_text().startswith("query_id,direction,rank")
    assert not (tmp_path / "top" / "values.npy").exists()


def test_index_then_query_equals_exact_search(runner, stores, tmp_path):
    train, query, exact = stores
    result = invoke(
        runner, "index", "--train", train.root, "--kind", "flat", "--out", tmp_path / "index"
    )
    assert result.exit_code == 0, result.output
    result = invoke(
        runner,
        "query",
        tmp_path / "index",
        "--query",
        query.root,
        "--k",
        5,
        "--out",
        tmp_path / "found",
    )
    assert result.exit_code == 0, result.output
    assert "exact search" in result.output
    found = TopScores.load(tmp_path / "found")
    assert len(found.train_ids) < len(exact.train_ids)  # only those returned
    for direction in ("helpful", "harmful"):
        ids = np.asarray(found.train_ids)[found.arrays[direction]]
        np.testing.assert_array_equal(ids, np.asarray(exact.train_ids)[exact.arrays[direction]])


def test_an_approximate_query_says_so_with_the_recall_measured_at_build(runner, stores, tmp_path):
    """Before: `query` returned both directions through an inverted file and said nothing of
    their being approximate (harmful recall 0.42 at the default settings, 10⁶ rows)."""
    train, query, _ = stores
    args = ("--train", train.root, "--kind", "ivf-flat", "--nlist", 8, "--nprobe", 1)
    result = invoke(runner, "index", *args, "--out", tmp_path / "index")
    assert result.exit_code == 0, result.output
    assert "measured recall@100 on 128 training rows: helpful" in result.output
    result = invoke(
        runner, "query", tmp_path / "index", "--query", query.root, "--out", tmp_path / "found"
    )
    assert result.exit_code == 0, result.output
    line = " ".join(result.output.split())
    assert "approximate search (IVF8,Flat): helpful nprobe" in line
    assert "harmful nprobe" in line and "measured at build" in line


@pytest.mark.parametrize(
    "args,message",
    [
        (("score", "--method", "tracin", "--query-rank", 4), "takes no query rank"),
        (("score", "--top", 3), "--top needs --query"),
        (("query", "missing-index", "--query", "q", "--out", "o"), "not an index"),
        (("index", "--kind", "lsh"), "unknown index kind"),
    ],
)
def test_bad_combinations_are_one_line_errors(runner, stores, tmp_path, args, message):
    train, query, _ = stores
    if args[0] in ("score", "index"):
        args = (*args, "--train", train.root, "--out", tmp_path / "out")
        if "--top" not in args and args[0] == "score":
            args = (*args, "--query", query.root)
    result = invoke(runner, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_index_help_states_the_library_defaults(runner):
    from infscope.index import IndexConfig

    result = invoke(runner, "index", "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    defaults = IndexConfig()
    for value in (defaults.kind, defaults.metric, defaults.nprobe, defaults.rerank):
        assert f"IndexConfig's, {value}" in text


def test_serve_starts_a_service_that_answers_health_and_queries(runner, stores, tmp_path):
    """The documented start command, its health check and one query over HTTP; while it runs
    `infscope query` asks it and writes what a one-shot query writes; stopped, it leaves no
    record."""
    import json
    import re
    import subprocess
    import sys
    import urllib.request

    train, query, exact = stores
    result = invoke(runner, "index", "--train", train.root, "--kind", "flat", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    command = [sys.executable, "-m", "infscope.cli.main", "serve", str(tmp_path), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = ""
        while (found := re.search(r"http://[\d.]+:\d+", seen)) is None:
            line = server.stdout.readline()
            assert line, seen
            seen += line
        url = found.group(0)
        with urllib.request.urlopen(f"{url}/health", timeout=30) as reply:
            assert json.loads(reply.read())["status"] == "ok"
        body = json.dumps({"query": str(query.root), "k": 5}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{url}/query", body), timeout=30) as r:
            answer = json.loads(r.read())
        assert answer["note"].startswith("exact search")
        first = [e["train_id"] for e in answer["helpful"][0]]
        assert first == [exact.train_ids[i] for i in exact.arrays["helpful"][0]]
        assert json.loads((tmp_path / "service.json").read_text())["url"] == url
        common = ["query", tmp_path, "--query", query.root, "--k", 5, "--out"]
        asked = invoke(runner, *common, tmp_path / "asked")
        assert asked.exit_code == 0 and f"answered by the service at {url}" in asked.output
        alone = invoke(runner, *common, tmp_path / "alone", "--no-service")
        assert alone.exit_code == 0 and "answered by the service" not in alone.output
        for name in ("top.csv", "top.json"):
            asked_text, alone_text = ((tmp_path / d / name).read_text() for d in ("asked", "alone"))
            assert asked_text == alone_text
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not (tmp_path / "service.json").exists()  # removed when the service stops
