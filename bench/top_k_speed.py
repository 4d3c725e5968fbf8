"""Streaming top-k against the full score matrix: time and memory at the same thread count.

A synthetic fp16 store of ``--n`` training rows × ``--dim`` (the population of
``bench/scaling.py``) and ``--queries`` queries; the dot product's full matrix
(``Estimator.score``) and its streamed top-``--k`` in both directions (``Estimator.score_top``),
each ``--repeats`` times, alternating (streaming first), both over the same store pages (read
once beforehand). Time: per method the mean ± std, and the median over repeats of the paired
ratio (streaming / full, one right after the other: robust to load that changes between
repeats). Memory: the peak of the process's anonymous resident memory (``RssAnon``: all but the
store's memory-mapped pages, which the kernel can drop), sampled every 5 ms, above its level
after the stores were opened and before any scoring (freed heap is not returned to the system,
so this counts the largest allocation of any run so far: streaming runs first).

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


def timed(fn, base: float) -> tuple[float, float]:
    """Seconds ``fn()`` takes and the peak anonymous memory while it runs above ``base``, MB."""
    peak, done = [0.0], threading.Event()

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
        base = anonymous_mb()
        for store in (estimator.train, query):  # every shard read and checked, untimed
            store.verify()
        runs: dict[str, list[tuple[float, float]]] = {"streaming top-k": [], "full matrix": []}
        for _ in range(args.repeats):
            runs["streaming top-k"].append(timed(lambda: estimator.score_top(query, args.k), base))
            runs["full matrix"].append(timed(lambda: estimator.score(query), base))
            print({name: values[-1] for name, values in runs.items()}, flush=True)
    ratios = [s / f for (s, _), (f, _) in zip(runs["streaming top-k"], runs["full matrix"])]
    rows = [
        [
            name,
            f"{np.mean([s for s, _ in values]):.1f} ± {np.std([s for s, _ in values]):.1f}",
            f"{np.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})"
            if name == "streaming top-k"
            else "1",
            f"{max(m for _, m in values):.0f}",
        ]
        for name, values in runs.items()
    ]
    header = ["", "seconds", "× full matrix (median; each repeat)", "peak anonymous MB"]
    table = markdown_table(header, rows)
    text = (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {git_commit()}, {cpu_model()}, "
        f"{args.threads} thread(s); {args.n:,} training × {args.queries} queries × {args.dim} "
        f"dims (fp16 store), top-{args.k} both directions, {args.repeats} repeats\n\n{table}\n"
    )
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
