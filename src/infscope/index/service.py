"""Index directories as `infscope index` writes them, and a long-running query service over one.

A one-shot `infscope query` call pays for starting Python and importing torch and FAISS (about
2–4 s on a busy 2-core machine) before it searches for milliseconds. The service pays that once:
:func:`make_server` fits the estimator, loads the index and answers HTTP requests —
``GET /health`` and ``POST /query`` with a JSON body ``{"query": "<query feature store>", "k":
10}`` (optional ``"directions"``, ``"nprobe"``, ``"rerank"``) — with the same rankings as
:meth:`InfluenceIndex.search`. It is built on the standard library's ``http.server`` (no further
dependency), listens on localhost by default, and answers one search at a time (FAISS's
``nprobe`` belongs to the index).
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from infscope.attribution.registry import EstimatorSpec
from infscope.errors import InfscopeError, InputError
from infscope.index.ann import InfluenceIndex
from infscope.io import write_atomic
from infscope.store import FeatureStore

__all__ = ["QueryService", "make_server", "open_index", "search_note", "write_estimator"]

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


def search_note(metadata: dict[str, Any]) -> str:
    """One line: exact, or approximate with the cells searched and the recall the index
    measured at those settings when it was built (or that none was measured)."""
    if not metadata["approximate"]:
        return "exact search (flat index): every training example scored"
    recall = metadata["expected_recall"] or {}
    parts = []
    for direction, nprobe in metadata["nprobe"].items():
        measured = recall.get(direction)
        expected = f"recall {measured:.3f} measured at build" if measured else "recall not measured"
        rerank = metadata["rerank"][direction]
        parts.append(f"{direction} nprobe {nprobe} rerank {rerank}, {expected}")
    return f"approximate search ({metadata['index']}): " + "; ".join(parts)


class QueryService:
    """What the HTTP handler calls: health and one search per request, serialised."""

    def __init__(self, index: InfluenceIndex) -> None:
        self.index = index
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
        return answer


def make_server(index: InfluenceIndex, host: str = "127.0.0.1", port: int = 8765) -> Any:
    """An HTTP server (``serve_forever()`` to run it) answering ``GET /health`` and ``POST
    /query`` for ``index``; a bad request gets status 400 and ``{"error": "<one line>"}``."""
    service = QueryService(index)

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
