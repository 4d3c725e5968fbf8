"""Finding and asking the query service that runs for an index directory — without torch.

A one-shot `infscope query` spends about two seconds importing torch (and then loads the index
and fits its estimator) before it searches for milliseconds. When `infscope serve` runs for the
index, it records where it listens in the index directory (:data:`SERVICE_FILE`: its URL, a
random token and the digest of the index metadata it loaded; removed when it stops), and
:func:`find_service` checks that record against the live service (``GET /health`` answers with
the same token and digest, within a second) so that a query can be sent there instead. This
module imports only the standard library, numpy and :mod:`infscope.attribution.top_k`, so a
command line that asks a service never loads torch or FAISS.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from infscope.attribution.top_k import TopScores
from infscope.errors import InputError
from infscope.io import write_atomic

__all__ = [
    "SERVICE_FILE",
    "decode_top",
    "encode_top",
    "find_service",
    "index_digest",
    "remove_service_record",
    "search_note",
    "search_service",
    "write_service_record",
]

#: beside ``index.json``: where the running service listens (present only while it runs)
SERVICE_FILE = "service.json"
#: seconds the health check may take before a query falls back to the one-shot search
HEALTH_TIMEOUT = 1.0


def index_digest(directory: str | Path) -> str:
    """SHA-256 of the index metadata (``index.json``): a rebuilt index has another."""
    return hashlib.sha256((Path(directory) / "index.json").read_bytes()).hexdigest()


def write_service_record(directory: str | Path, url: str, token: str, digest: str) -> Path:
    """Record (atomically) that the service at ``url`` answers for the index in ``directory``."""
    path = Path(directory) / SERVICE_FILE
    text = json.dumps({"url": url, "token": token, "index_digest": digest}).encode()
    write_atomic(path, lambda h: h.write(text))
    return path


def remove_service_record(directory: str | Path, token: str) -> None:
    """Remove the record if it is still this service's (another may have replaced it)."""
    path = Path(directory) / SERVICE_FILE
    try:
        if json.loads(path.read_text()).get("token") == token:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def find_service(directory: str | Path, timeout: float = HEALTH_TIMEOUT) -> str | None:
    """The URL of the live service recorded for the index in ``directory``, or ``None``: no
    record, nothing answering there, or a service that is not the recorded one or holds an
    older build of the index."""
    directory = Path(directory)
    try:
        record = json.loads((directory / SERVICE_FILE).read_text())
        url, token = str(record["url"]), record["token"]
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as reply:
            health = json.loads(reply.read())
        digest = index_digest(directory)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # OSError covers refused connections and timeouts (URLError)
    if health.get("token") != token or health.get("index_digest") != digest:
        return None
    return url


def search_service(
    url: str,
    query: str | Path,
    k: int,
    nprobe: int | None = None,
    rerank: int | None = None,
) -> TopScores | None:
    """The top-k of the query store ``query`` as the service at ``url`` finds it (training ids
    cut to those returned, :meth:`TopScores.compact`); ``None`` when the service stops
    answering. A request the service refuses raises its one-line error."""
    request: dict[str, Any] = {"query": str(Path(query).absolute()), "k": k}
    request.update({n: v for n, v in (("nprobe", nprobe), ("rerank", rerank)) if v is not None})
    body = json.dumps(request).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/query", body)) as reply:
            answer = json.loads(reply.read())
    except urllib.error.HTTPError as err:
        try:
            message = json.loads(err.read())["error"]
        except (ValueError, KeyError, TypeError):
            message = f"the query service answered {err.code}"
        raise InputError(message) from None
    except (OSError, ValueError):
        return None
    return decode_top(answer["top"])


def encode_top(found: TopScores) -> dict[str, Any]:
    """A top-k as JSON (training ids cut to those returned): what the service sends."""
    top = found.compact()
    return {
        "query_ids": top.query_ids,
        "train_ids": top.train_ids,
        "method": top.method,
        "arrays": {name: values.tolist() for name, values in top.arrays.items()},
        "metadata": top.metadata,
    }


def decode_top(data: dict[str, Any]) -> TopScores:
    """The :class:`TopScores` that :func:`encode_top` encoded (scores as float32 again)."""
    arrays = {
        name: np.asarray(values, np.float32 if name.endswith("_values") else np.int64)
        for name, values in data["arrays"].items()
    }
    return TopScores(
        list(data["query_ids"]), list(data["train_ids"]), data["method"], arrays, data["metadata"]
    )


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
