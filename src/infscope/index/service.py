"""Index directories as `infscope index` writes them, and a long-running query service over one.

A one-shot `infscope query` call pays for starting Python and importing torch and FAISS (about
2–4 s on a busy 2-core machine) before it searches for milliseconds. The service pays that once:
:func:`make_server` fits the estimator, loads the index and answers HTTP requests —
``GET /health`` and ``POST /query`` with a JSON body ``{"query": "<query feature store>", "k":
10}`` (optional ``"directions"``, ``"nprobe"``, ``"rerank"``) — with the same rankings as
:meth:`InfluenceIndex.search`. It is built on the standard library's ``http.server`` (no further
dependency), listens on localhost by default, and answers one search at a time (FAISS's
``nprobe`` belongs to the index). :func:`serve_index` runs it for an index directory and records
there where it listens, so that `infscope query` asks it instead of starting up
(:mod:`infscope.index.client`).
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from infscope.attribution.registry import EstimatorSpec
from infscope.errors import InfscopeError, InputError
from infscope.index.ann import InfluenceIndex
from infscope.index.client import (
    encode_top,
    index_digest,
    remove_service_record,
    search_note,
    write_service_record,
)
from infscope.index.rescore import map_training_shards
from infscope.io import write_atomic
from infscope.store import FeatureStore

__all__ = [
    "QueryService",
    "make_server",
    "open_index",
    "serve_index",
    "write_estimator",
]

ESTIMATOR_FILE = "estimator.json"
#: request bodies above this are refused (a query names a store; it does not carry features)
MAX_BODY = 1 << 20


def write_estimator(directory: str | Path, spec: EstimatorSpec, train: str | Path) -> None:
    """Record beside a saved index the estimator and training store it was built for."""
    text = json.dumps({"spec": spec.to_json(), "train": str(Path(train).absolute())}).encode()
    write_atomic(Path(directory) / ESTIMATOR_FILE, lambda h: h.write(text))


def open_index(directory: str | Path) -> InfluenceIndex:
    """The index in ``directory`` beside its estimator, fitted on the recorded training store."""
    directory = Path(directory)
    try:
        recorded = json.loads((directory / ESTIMATOR_FILE).read_text())
        spec = EstimatorSpec.from_json(recorded["spec"])
        train = FeatureStore.open(recorded["train"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{directory} is not an index from `infscope index`: {err}") from None
    return InfluenceIndex.load(directory, spec.build().fit(train))


class QueryService:
    """What the HTTP handler calls: health and one search per request, serialised;
    ``identity`` (the token and index digest of :func:`serve_index`) is part of the health."""

    def __init__(self, index: InfluenceIndex, identity: dict[str, str] | None = None) -> None:
        self.index = index
        self.identity = dict(identity or {})
        self._lock = threading.Lock()

    def health(self) -> dict[str, Any]:
        """The index served and, per direction, its calibrated nprobe and measured recall."""
        calibration = self.index.calibration or {}
        return {
            "status": "ok",
            "index": self.index.info["factory"],
            "training_examples": self.index.info["n"],
            "method": self.index.estimator.name,
            "recall": {
                d: {k: calibration[d][k] for k in ("nprobe", "rerank", "recall")}
                for d in ("helpful", "harmful")
                if d in calibration
            },
            **self.identity,
        }

    def query(self, request: Any) -> dict[str, Any]:
        """Top-k of each query of the store ``request["query"]``: per query and direction the
        training ids and scores, best first, and the note on how approximate they are."""
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            raise InputError('the body must be a JSON object with "query": a feature store path')
        unknown = set(request) - {"query", "k", "directions", "nprobe", "rerank"}
        if unknown:
            raise InputError(f"unknown fields {sorted(unknown)}")
        query = FeatureStore.open(request["query"])
        directions = tuple(request.get("directions", ("helpful", "harmful")))
        with self._lock:
            found = self.index.search(
                query,
                request.get("k", 10),
                directions=directions,
                nprobe=request.get("nprobe"),
                rerank=request.get("rerank"),
            )
        answer: dict[str, Any] = {"query_ids": found.query_ids, "note": search_note(found.metadata)}
        for direction in found.directions:
            rows, scores = found.top(harmful=direction == "harmful")
            answer[direction] = [
                [{"train_id": found.train_ids[i], "score": float(s)} for i, s in zip(r, v)]
                for r, v in zip(rows, scores)
            ]
        answer["expected_recall"] = found.metadata["expected_recall"]
        answer["top"] = encode_top(found)
        return answer


def make_server(
    index: InfluenceIndex,
    host: str = "127.0.0.1",
    port: int = 8765,
    identity: dict[str, str] | None = None,
) -> Any:
    """An HTTP server (``serve_forever()`` to run it) answering ``GET /health`` and ``POST
    /query`` for ``index``; a bad request gets status 400 and ``{"error": "<one line>"}``."""
    service = QueryService(index, identity)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/health":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
            self._reply(HTTPStatus.OK, service.health())

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/query":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
            try:
                length = int(self.headers.get("Content-Length", 0))
                if not 0 < length <= MAX_BODY:
                    raise InputError(f"the body must hold 1 to {MAX_BODY} bytes, got {length}")
                answer = service.query(json.loads(self.rfile.read(length)))
            except (InfscopeError, ValueError, TypeError) as err:
                return self._reply(HTTPStatus.BAD_REQUEST, {"error": str(err).splitlines()[0]})
            self._reply(HTTPStatus.OK, answer)

        def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per request on stderr is noise for a local service

    return ThreadingHTTPServer((host, port), Handler)


def serve_index(
    directory: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the index in ``directory`` until interrupted (Ctrl-C or SIGTERM): load it, listen,
    record the URL in the directory (:func:`~infscope.index.client.write_service_record`) and
    call ``ready(url)``; the record is removed on the way out."""
    directory = Path(directory)
    identity = {"token": secrets.token_hex(16), "index_digest": index_digest(directory)}
    index = open_index(directory)
    map_training_shards(index)  # searches then open no files
    server = make_server(index, host, port, identity)
    address, bound = server.server_address[:2]
    url = f"http://{address}:{bound}"
    if threading.current_thread() is threading.main_thread():  # SIGTERM: clean up as Ctrl-C
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        write_service_record(directory, url, identity["token"], identity["index_digest"])
        if ready is not None:
            ready(url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        remove_service_record(directory, identity["token"])
        server.server_close()
