"""Streaming top-k against the full score matrix: time and memory at the same thread count.

A synthetic fp16 store of ``--n`` training rows × ``--dim`` (the population of
``bench/scaling.py``) and ``--queries`` queries; the dot product's full matrix
(``Estimator.score``) and its streamed top-``--k`` in both directions (``Estimator.score_top``),
each ``--repeats`` times, alternating. Memory: the peak of the process's anonymous resident
memory (``RssAnon``: what is not the store's memory-mapped pages, which the kernel can drop)
above its level before each call, sampled every 5 ms.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python bench/top_k_speed.py --markdown bench/results/top_k_speed.md
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from benchutil import cpu_model, git_commit, markdown_table, publish
from scaling import write_store

from infscope.attribution import GradientSimilarity
from infscope.store import FeatureStore

RESULTS = Path(__file__).resolve().parent / "results"


def anonymous_mb() -> float:
    """The process's anonymous resident memory (``RssAnon``), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def timed(fn) -> tuple[float, float]:
    """Seconds ``fn()`` takes and its peak anonymous memory above the start, MB."""
    base, peak, done = anonymous_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], anonymous_mb() - base)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    del value
    return seconds, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", type=Path, default=RESULTS / "top_k_speed.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
        train_root, query_root = Path(scratch) / "train", Path(scratch) / "query"
        write_store(train_root, args.n, args.dim, 0, False, "loss")
        write_store(query_root, args.queries, args.dim, 1, False, "measurement")
        estimator = GradientSimilarity().fit(FeatureStore.open(train_root))
        query = FeatureStore.open(query_root)
        estimator.score_top(query, 1)  # every shard checked once, outside the timings
        runs: dict[str, list[tuple[float, float]]] = {"full matrix": [], "streaming top-k": []}
        for _ in range(args.repeats):
            runs["full matrix"].append(timed(lambda: estimator.score(query)))
            runs["streaming top-k"].append(timed(lambda: estimator.score_top(query, args.k)))
            print({name: values[-1] for name, values in runs.items()}, flush=True)
    full = np.mean([s for s, _ in runs["full matrix"]])
    rows = [
        [
            name,
            f"{np.mean([s for s, _ in values]):.1f} ± {np.std([s for s, _ in values]):.1f}",
            f"{np.mean([s for s, _ in values]) / full:.2f}",
            f"{max(m for _, m in values):.0f}",
        ]
        for name, values in runs.items()
    ]
    table = markdown_table(["", "seconds", "× full matrix", "peak anonymous MB"], rows)
    text = (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {git_commit()}, {cpu_model()}, "
        f"{args.threads} thread(s); {args.n:,} training × {args.queries} queries × {args.dim} "
        f"dims (fp16 store), top-{args.k} both directions, {args.repeats} repeats\n\n{table}\n"
    )
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
