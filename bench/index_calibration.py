"""How many training rows the index's build-time calibration needs: the recall of new queries at
the setting calibrated on 32 or 128 seeded training rows, over several seeds.

The build calibrates each direction's ``(nprobe, rerank)`` to the smallest setting (doubled, then
bisected: :mod:`infscope.index.calibration`) at which its calibration rows find
``target_recall`` of their exact top-100. The recall measured on a few rows is itself a sample;
this benchmark shows how far new queries fall below it. Per seed (the seed of the calibration
rows and of the quantiser) and calibration-row count: the calibrated setting, the recall the build
measured, and the recall of ``--queries`` new queries (another draw of the same population) at
that setting, in both directions, on the synthetic store of ``bench/scaling.py``.

Run from the repository root (~1 minute at 10⁴)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/index_calibration.py --n 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from benchutil import cpu_model, git_commit, markdown_table, publish
from scaling import write_store

from infscope.attribution.registry import EstimatorSpec
from infscope.index import IndexConfig, InfluenceIndex, recall_at_k
from infscope.store import FeatureStore

DIRECTIONS = ("helpful", "harmful")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="training rows")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=100, help="new queries")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--rows", default="32,128", help="calibration-row counts to compare")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="index-calibration-") as scratch:
        train_root, query_root = Path(scratch) / "train", Path(scratch) / "query"
        write_store(train_root, args.n, args.dim, 0, False, "loss")
        write_store(query_root, args.queries, args.dim, 1, False, "measurement")
        estimator = EstimatorSpec("dot").build().fit(FeatureStore.open(train_root))
        query = FeatureStore.open(query_root)
        exact = estimator.score_top(query, 100)
        table = []
        for count in [int(c) for c in args.rows.split(",")]:
            for seed in range(args.seeds):
                config = IndexConfig(seed=seed, calibration_queries=count)
                index = InfluenceIndex.build(estimator, config)
                found = index.search(query, 100)
                calibration = index.calibration
                row = [str(count), str(seed)]
                for direction in DIRECTIONS:
                    measured = calibration[direction]
                    row += [
                        f"{measured['nprobe']} ({measured['rerank']})",
                        f"{measured['recall']:.4f}",
                        f"{recall_at_k(found, exact, direction):.4f}",
                    ]
                table.append(row)
                print("  " + " | ".join(row), flush=True)
    header = ["calibration rows", "seed"] + [
        f"{d} {what}" for d in DIRECTIONS for what in ("nprobe (rerank)", "at build", "new queries")
    ]
    text = (
        f"{started}, {git_commit()}, {cpu_model()}, {torch.get_num_threads()} thread(s); "
        f"n = {args.n:,} × {args.dim} synthetic, {args.queries} new queries, recall@100, "
        f"target {IndexConfig().target_recall}\n\n" + markdown_table(header, table)
    )
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
