"""The query service: an index directory reopened with its estimator, health, and HTTP queries
answering with the same rankings as a search in-process; bad requests are one-line errors."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from infscope.attribution.registry import EstimatorSpec  # noqa: E402
from infscope.errors import InputError  # noqa: E402
from infscope.index import IndexConfig, InfluenceIndex  # noqa: E402
from infscope.index.service import make_server, open_index, write_estimator  # noqa: E402
from tests.index.test_ann import clustered, write_store  # noqa: E402


@contextmanager
def running_service(root: Path, n_train: int, n_query: int, nlist: int, identity=None):
    """A dot-product IVF index over clustered stores in ``root/index`` with a query service
    answering for it on a free port: ``(directory, url, index, query store)``."""
    train = write_store(root / "train", {"a": clustered(n_train, 16, 6, 0)}, "loss", "t")
    query = write_store(root / "query", {"a": clustered(n_query, 16, 6, 1)}, "measurement", "q")
    spec = EstimatorSpec("dot")
    index = InfluenceIndex.build(spec.build().fit(train), IndexConfig("ivf-flat", nlist=nlist))
    directory = root / "index"
    index.save(directory)
    write_estimator(directory, spec, train.root)
    identity = identity(directory) if callable(identity) else identity
    server = make_server(open_index(directory), port=0, identity=identity)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield directory, f"http://127.0.0.1:{server.server_address[1]}", index, query
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("service"), 400, 5, 8) as (_, url, index, query):
        yield url, index, query


def call(url: str, body: bytes | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_health_reports_the_index_and_its_measured_recall(served):
    url, index, _ = served
    status, body = call(f"{url}/health")
    assert status == 200 and body["status"] == "ok"
    assert body["index"] == "IVF8,Flat" and body["training_examples"] == 400
    assert body["recall"]["harmful"]["nprobe"] == index.nprobe_for("harmful")


def test_a_query_answers_as_the_search_in_process(served):
    url, index, query = served
    status, body = call(f"{url}/query", json.dumps({"query": str(query.root), "k": 7}).encode())
    assert status == 200, body
    expected = index.search(query, 7)
    assert body["query_ids"] == expected.query_ids
    assert body["note"].startswith("approximate search (IVF8,Flat): helpful nprobe")
    for direction in ("helpful", "harmful"):
        rows, scores = expected.top(harmful=direction == "harmful")
        got = body[direction]
        assert [[e["train_id"] for e in r] for r in got] == [
            [expected.train_ids[i] for i in r] for r in rows
        ]
        np.testing.assert_allclose([[e["score"] for e in r] for r in got], scores, rtol=1e-6)


@pytest.mark.parametrize(
    "path,body,message",
    [
        ("/query", b"not json", "Expecting value"),
        ("/query", b'{"k": 3}', '"query": a feature store path'),
        ("/query", b'{"query": "/no/such/store"}', "/no/such/store"),
        ("/query", b'{"query": "q", "limit": 3}', "unknown fields ['limit']"),
        ("/other", b"{}", "no such path /other"),
    ],
)
def test_bad_requests_are_one_line_errors(served, path, body, message):
    url, _, _ = served
    status, answer = call(f"{url}{path}", body)
    assert status in (400, 404) and message in answer["error"]
    assert "\n" not in answer["error"]


def test_a_folder_without_an_estimator_record_is_not_an_index(tmp_path):
    with pytest.raises(InputError, match="not an index from `infscope index`"):
        open_index(tmp_path)
