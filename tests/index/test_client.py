"""The service client: a running service is found only through a live record of its own token
and the index it loaded; its answers decode to the in-process top-k; the client imports no
torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("faiss")

from infscope.attribution.top_k import TopScores  # noqa: E402
from infscope.errors import InputError  # noqa: E402
from infscope.index.client import (  # noqa: E402
    SERVICE_FILE,
    decode_top,
    encode_top,
    find_service,
    index_digest,
    remove_service_record,
    search_service,
    write_service_record,
)
from tests.index.test_service import running_service  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """An index directory with a service answering for it and the record that says so."""
    root = tmp_path_factory.mktemp("client")

    def identity(directory):
        return {"token": "secret", "index_digest": index_digest(directory)}

    with running_service(root, 300, 4, 6, identity) as (directory, url, index, query):
        write_service_record(directory, url, "secret", index_digest(directory))
        yield directory, url, index, query


def test_the_recorded_live_service_is_found(live):
    directory, url, _, _ = live
    assert find_service(directory) == url


def test_no_record_a_dead_address_or_a_foreign_service_is_not_found(live, tmp_path):
    directory, url, _, _ = live
    assert find_service(tmp_path) is None
    for name in ("index.json", "index.faiss", "estimator.json"):
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    write_service_record(tmp_path, "http://127.0.0.1:9", "secret", index_digest(directory))
    assert find_service(tmp_path) is None  # nothing listens there
    write_service_record(tmp_path, url, "another token", index_digest(directory))
    assert find_service(tmp_path) is None
    write_service_record(tmp_path, url, "secret", index_digest(directory))
    assert find_service(tmp_path) == url
    (tmp_path / "index.json").write_text((directory / "index.json").read_text() + " ")
    assert find_service(tmp_path) is None  # the index was rebuilt since the service loaded it


def test_a_record_is_removed_only_by_its_own_service(tmp_path):
    write_service_record(tmp_path, "http://127.0.0.1:9", "mine", "d")
    remove_service_record(tmp_path, "someone else's")
    assert (tmp_path / SERVICE_FILE).exists()
    remove_service_record(tmp_path, "mine")
    assert not (tmp_path / SERVICE_FILE).exists()


def test_the_service_answers_as_the_search_in_process(live):
    directory, url, index, query = live
    found = search_service(url, query.root, 7, nprobe=2)
    expected = index.search(query, 7, nprobe=2)
    for direction in ("helpful", "harmful"):
        rows, scores = found.top(harmful=direction == "harmful")
        exact_rows, exact_scores = expected.top(harmful=direction == "harmful")
        assert [[found.train_ids[i] for i in r] for r in rows] == [
            [expected.train_ids[i] for i in r] for r in exact_rows
        ]
        np.testing.assert_array_equal(scores, exact_scores)
    assert found.metadata["nprobe"] == {"helpful": 2, "harmful": 2}
    assert found.metadata["training_examples"] == 300


def test_a_refused_request_raises_the_service_error_and_a_dead_one_gives_none(live):
    _, url, _, _ = live
    with pytest.raises(InputError, match="/no/such/store"):
        search_service(url, "/no/such/store", 5)
    assert search_service("http://127.0.0.1:9", "/no/such/store", 5) is None


def test_a_compact_top_k_names_only_the_returned_examples():
    arrays = {
        "helpful": np.array([[5, 2], [2, 9]]),
        "helpful_values": np.array([[3.0, 2.0], [4.0, 1.0]], np.float32),
        "harmful": np.array([[0, 5], [9, 7]]),
        "harmful_values": np.array([[-3.0, -2.0], [-4.0, -1.0]], np.float32),
    }
    top = TopScores(["q0", "q1"], [f"t{i}" for i in range(10)], "dot", arrays, {"a": 1})
    compact = top.compact()
    assert compact.train_ids == ["t0", "t2", "t5", "t7", "t9"]
    assert compact.top_rows() == top.top_rows()
    decoded = decode_top(json.loads(json.dumps(encode_top(top))))
    assert decoded.train_ids == compact.train_ids and decoded.metadata == {"a": 1}
    for name, values in compact.arrays.items():
        np.testing.assert_array_equal(decoded.arrays[name], values)
        assert decoded.arrays[name].dtype == values.dtype


def test_the_client_and_the_query_command_import_no_torch():
    code = (
        "import sys, infscope.index.client, infscope.cli.index, infscope.cli.main; "
        "sys.exit('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
