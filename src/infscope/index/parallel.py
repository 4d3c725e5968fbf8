"""One query's search split over threads: its probed cells, then its refine-copy scoring.

FAISS parallelises a batch over its queries, but one query's scan of its probed cells runs on one
thread however many there are (``parallel_mode``, the other fast-scan implementations and a
second OpenMP thread were measured: no gain). Where a single query probes many codes — the
harmful direction at 10⁷ rows scans 2,048 of 4,096 cells, ~5·10⁶ codes — :func:`split_search`
assigns the cells once, scans each thread's share with ``search_preassigned`` (FAISS releases the
GIL), merges the codes' candidates, and scores them in the SQ8 refine copy with torch (its
``index_select`` and product run on every torch thread) instead of FAISS's single-threaded refine
step. The candidates are the plain search's up to near-ties: the cells are the same, each
share's best ``fetch`` contain the best ``fetch`` of their union (save that the 4-bit scan
quantises its distances per call), and the copy's scores are its decoded inner products
(checked against FAISS's own refine, and the recall through an index against the plain search's,
in ``tests/index/test_parallel.py``).
Measured with a prototype of these steps on a bare FAISS index (3·10⁶ × 256 synthetic rows,
2,048 of 4,096 cells, 32,000 candidates, 2 threads): the scan 15.3 → 9.5 ms, one query's search
25.4 → 20.5 ms; at 10⁶ rows and 1,024 cells the threads' overhead made it slower (7 → 11 ms),
hence :data:`SPLIT_MIN_CODES`; at 10⁷ through ``bench/scaling.py`` (2 threads, 1,117 of 4,096
cells after the calibration's bisection): 35.5 ms a query for both directions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SPLIT_MIN_CODES", "split_search"]

#: probed codes per query from which one query's search is split over threads (10⁶ rows ×
#: 1,024 of 4,000 cells, ~2.6·10⁵ codes, ran slower split; 3·10⁶ × 2,048 of 4,096, ~1.5·10⁶,
#: ran 20% faster)
SPLIT_MIN_CODES = 1_000_000


def split_search(
    index: Any, ivf: Any, queries: np.ndarray, count: int, min_codes: int = SPLIT_MIN_CODES
) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``count`` best of ``index`` (an inner-product IVF with an SQ8 refine copy) for one
    query, its cells scanned on ``torch.get_num_threads()`` threads in parallel, its candidates
    scored in the copy with torch; ``None`` where the plain search is the one to run (a batch,
    one thread, another metric or copy, or fewer than ``min_codes`` codes probed)."""
    import faiss
    import torch

    threads = torch.get_num_threads()  # FAISS's OpenMP count is not reliable beside torch's
    refine = getattr(index, "refine_index", None)
    if len(queries) != 1 or threads < 2 or ivf is None or refine is None:
        return None
    refine = faiss.downcast_index(refine)
    sq8 = isinstance(refine, faiss.IndexScalarQuantizer) and (
        refine.sq.qtype == faiss.ScalarQuantizer.QT_8bit
    )
    probed = ivf.nprobe * ivf.ntotal / max(ivf.nlist, 1)
    if not sq8 or index.metric_type != faiss.METRIC_INNER_PRODUCT or probed < min_codes:
        return None
    query = np.ascontiguousarray(queries, dtype=np.float32)
    fetch = max(count, int(index.k_factor * count))
    ids = _scan(ivf, query, fetch, threads)
    return _refined(refine, query[0], ids, count)


def _scan(ivf: Any, query: np.ndarray, fetch: int, threads: int) -> np.ndarray:
    """The codes' ``fetch`` best training rows of the query's ``ivf.nprobe`` cells, each
    thread scanning its share of the cells (padded with -1: no cell)."""
    from concurrent.futures import ThreadPoolExecutor

    nprobe = ivf.nprobe
    distances, cells = ivf.quantizer.search(query, nprobe)
    width = -(-nprobe // threads)
    padded = np.full((threads * width,), -1, dtype=np.int64)
    padded[:nprobe] = cells[0]
    gaps = np.full((threads * width,), -np.inf, dtype=np.float32)
    gaps[:nprobe] = distances[0]

    def scan(part: int) -> tuple[np.ndarray, np.ndarray]:
        share = slice(part * width, (part + 1) * width)
        return ivf.search_preassigned(
            query, fetch, padded[None, share].copy(), gaps[None, share].copy()
        )

    ivf.nprobe = width  # what search_preassigned checks the assignment's width against
    try:
        with ThreadPoolExecutor(threads) as pool:
            shares = list(pool.map(scan, range(threads)))
    finally:
        ivf.nprobe = nprobe
    scores = np.concatenate([s for s, _ in shares], axis=1)[0]
    rows = np.concatenate([r for _, r in shares], axis=1)[0]
    kept = rows >= 0
    scores, rows = scores[kept], rows[kept]
    if len(rows) > fetch:
        rows = rows[np.argpartition(-scores, fetch - 1)[:fetch]]
    return rows


def _refined(refine: Any, query: np.ndarray, rows: np.ndarray, count: int):
    """The copy's ``count`` best of ``rows`` for ``query`` (best first; -1 / -inf past the
    candidates): an SQ8 code ``c`` decodes to ``vmin + (c + ½)/255 · vdiff`` per dimension, so
    its inner product is ``c · (q ∘ vdiff / 255) + q · (vmin + vdiff / 510)``."""
    import faiss
    import torch

    dim = refine.d
    trained = faiss.vector_to_array(refine.sq.trained)
    vmin, vdiff = trained[:dim].astype(np.float64), trained[dim:].astype(np.float64)
    q = query.astype(np.float64)
    weights = torch.from_numpy((q * vdiff / 255).astype(np.float32))
    offset = float(q @ (vmin + vdiff / 510))
    codes = faiss.rev_swig_ptr(refine.codes.data(), refine.ntotal * refine.code_size)
    table = torch.from_numpy(codes.reshape(refine.ntotal, refine.code_size))
    scores = (table.index_select(0, torch.from_numpy(rows)).float() @ weights).numpy() + offset
    if len(scores) > count:  # the best `count` and their ties; sorting all takes longer
        kept = np.flatnonzero(scores >= np.partition(scores, len(scores) - count)[-count])
        rows, scores = rows[kept], scores[kept]
    order = np.lexsort((rows, -scores))[:count]
    found = np.full((1, count), -np.inf, dtype=np.float32)
    labels = np.full((1, count), -1, dtype=np.int64)
    found[0, : len(order)], labels[0, : len(order)] = scores[order], rows[order]
    return found, labels
