"""What low-rank preconditioned queries (``EKFAC(query_rank=r)``, "query batching" of the EK-FAC
study of LLM generalisation) cost in accuracy and buy in memory and time.

The tiny GPT-2 of ``attribution_quality.py`` (same model, same cached LDS ground truth), final
model, empirical Fisher, EK-FAC at its default damping on an eigen store of ``--dim`` features
(0 = full rank, 285,000 features: the setting where a query block holds only a few rows). For
each rank: relative Frobenius error and Spearman correlation of all query × train scores against
the exact ones, overlap of each query's top-10, the LDS, the share of the queries' squared norm
kept, and the seconds and peak memory (RSS above the stage's start) of scoring ``--queries`` queries (the LDS queries, then the
training examples' measurement gradients as extra queries). Run from the repository root, after
``attribution_quality.py --tasks gpt2-trec`` has cached the ground truth::

    OMP_NUM_THREADS=1 .venv/bin/python bench/query_low_rank.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attribution_quality as aq  # noqa: E402
from benchutil import csv_list, git_commit, markdown_table  # noqa: E402
from quality.ours import train_all  # noqa: E402

from infscope.attribution import EKFAC  # noqa: E402
from infscope.curvature import fit_kronecker_basis  # noqa: E402
from infscope.data import ExampleSet  # noqa: E402
from infscope.evaluation import ResourceMeter, current_rss_mb, linear_datamodeling_score  # noqa: E402
from infscope.gradients import GradientExtractor, ProjectionConfig  # noqa: E402
from infscope.gradients.featurize import featurize  # noqa: E402
from infscope.store import FeatureStore  # noqa: E402


def top_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each query's ``k`` highest-scored training examples that both agree on."""
    top_a = np.argsort(-a, axis=1)[:, :k]
    top_b = np.argsort(-b, axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=0, help="eigen features, 0 = full rank")
    parser.add_argument("--ranks", type=csv_list(int), default=[1, 4, 8, 16, 32])
    parser.add_argument("--queries", type=int, default=900, help="queries in the timing runs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = aq.build_task("gpt2-trec", 1.0)
    outcomes = aq.ground_truth(task, aq.SUBSETS["gpt2-trec"])[0]
    model = task.make_model(0)
    model.load_state_dict(train_all(task, task.train, 1).final.state)
    identity = ProjectionConfig("identity", None)
    basis = fit_kronecker_basis(
        GradientExtractor(model, task.infscope_task("loss"), identity),
        task.train.examples,
        batch_size=64,
        progress=False,
    )
    config = ProjectionConfig("eigen", args.dim or None, basis=basis)
    lds_queries = list(task.queries.examples)
    extra = list(task.train.examples)[: max(0, args.queries - len(lds_queries))]
    queries = ExampleSet(
        lds_queries + extra,
        tuple(f"q{i}" for i in range(len(lds_queries))) + tuple(f"t{i}" for i in range(len(extra))),
    )
    meter = ResourceMeter()
    print(
        f"torch threads {torch.get_num_threads()}; gpt2-trec final model; eigen k = "
        f"{args.dim or 'full'}; {len(queries)} queries ({len(lds_queries)} LDS); {git_commit()}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(dir=aq.RESULTS.parent) as scratch:
        root = Path(scratch)
        train = GradientExtractor(model, task.infscope_task("loss"), config)
        query = GradientExtractor(model, task.infscope_task("logprob"), config)
        featurize(train, task.train.examples, root / "train", batch_size=64, progress=False)
        featurize(
            query, queries, root / "query", gradient="measurement", batch_size=64, progress=False
        )
        train_store, query_store = (
            FeatureStore.open(root / "train"),
            FeatureStore.open(root / "query"),
        )
        print(f"  {train_store.feature_dim} features per example", flush=True)
        exact = None
        for rank in [None, *args.ranks]:
            estimator = EKFAC(basis, query_rank=rank).fit(train_store)
            stage = f"rank {rank}"
            start, base = time.perf_counter(), current_rss_mb()
            with meter.stage(stage):
                scores = estimator.score(query_store, out=root / "scores.npy")
                values = np.array(scores.values, dtype=np.float64)
            seconds = time.perf_counter() - start
            if exact is None:
                exact = values
            lds = linear_datamodeling_score(values[: len(lds_queries)], outcomes).mean
            error = np.linalg.norm(values - exact) / np.linalg.norm(exact)
            row = [
                "exact" if rank is None else str(rank),
                f"{scores.metadata.get('query_energy', 1.0):.4f}",
                f"{error:.4f}",
                f"{spearmanr(values.ravel(), exact.ravel())[0]:.4f}",
                f"{top_overlap(values, exact):.3f}",
                f"{lds:.3f}",
                f"{seconds:.1f}",
                f"{meter.report()[stage]['peak_mb'] - base:.0f}",
            ]
            rows.append(row)
            print("  " + " | ".join(row), flush=True)
    header = [
        "query rank",
        "norm² kept",
        "rel. error",
        "Spearman vs exact",
        "top-10 overlap",
        "LDS",
        "score s",
        "peak MB above start",
    ]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
