"""Permissive label propagation: ``infscope.propagation.InfluencePropagation`` against
scikit-learn's LabelPropagation / LabelSpreading, k-NN and logistic regression on the labelled set.

What: for each task — scikit-learn's bundled digits (rows scaled to unit norm) and text tasks from
``../shared/data`` on frozen, cached MiniLM-L6 sentence embeddings (``labelnoise.tasks.load_task``,
the same embeddings as ``audit_cleanlab.py``) — and for each number of labels per class in
``--labels``, ``--seeds`` random labelled sets (the rest of the training pool is unlabelled);
every method sees the same features and labels. Reported: accuracy of the propagated labels on the
unlabelled pool (mean ± std over seeds), accuracy among the 50% most confident propagations
(whether the confidence is useful) and seconds per fit. infscope runs with K-FAC curvature,
``l2=1e-3`` and no self-training at ``top_m=10`` and ``top_m=100`` (the default, chosen on this
benchmark), and as ablations at ``top_m=10``: the exact Hessian, no curvature (representer
values) and two self-training rounds.

Baseline settings: LabelPropagation (capped at 50 iterations: 1000 took 66 s per fit on TREC)
and LabelSpreading (``alpha=0.2``) with an rbf kernel whose ``gamma`` is 1 / the median squared
distance to the 10th nearest neighbour (a scale-free choice), LabelSpreading with a 10-NN kernel;
k-NN (cosine, distance-weighted, ``k = min(10, labels per class)``); multinomial logistic
regression (``C=10``, unit-norm features).

Run (from the repository root; about 10 minutes on one thread with cached embeddings)::

    flock /tmp/infscope-heavy.lock env OMP_NUM_THREADS=1 .venv/bin/python bench/label_propagation.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from benchutil import cpu_model, csv_list, git_commit, markdown_table
from labelnoise.tasks import TASKS, load_task

from infscope.propagation import InfluencePropagation, PropagationConfig
from infscope.selection.comparison import seed_stats

ROOT = Path(__file__).resolve().parent.parent
#: method -> fit(features, labels with -1) -> (propagated labels, confidence) for every row
Method = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks", type=csv_list(str), default=["digits", "trec", "sst2", "ag_news"]
    )
    parser.add_argument("--labels", type=csv_list(int), default=[1, 2, 5, 10, 20])
    parser.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--cache", type=Path, default=ROOT / "bench" / "results" / "audit_cleanlab" / "embeddings"
    )
    parser.add_argument(
        "--markdown", type=Path, default=ROOT / "bench" / "results" / "label_propagation.md"
    )
    return parser.parse_args()


def load(name: str, data: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm features and labels of a task's training pool."""
    if name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        return x / np.linalg.norm(x, axis=1, keepdims=True), y
    if name not in TASKS:
        raise SystemExit(f"unknown task {name!r}; choose digits or one of {list(TASKS)}")
    task = load_task(name, 1.0, data, cache)
    return task.embeddings.astype(np.float64), task.labels


def rbf_gamma(x: np.ndarray) -> float:
    from sklearn.neighbors import NearestNeighbors

    distance, _ = NearestNeighbors(n_neighbors=11).fit(x).kneighbors(x)
    return 1.0 / float(np.median(distance[:, 10] ** 2))


def influence(**settings) -> Method:
    def fit(x, labels, per_class):
        result = InfluencePropagation(PropagationConfig(**settings)).fit(x, labels)
        return result.transduction_, result.confidence_

    return fit


def graph(kind: str) -> Method:
    def fit(x, labels, per_class):
        from sklearn.semi_supervised import LabelPropagation, LabelSpreading

        if kind == "propagation_rbf":
            model = LabelPropagation(kernel="rbf", gamma=rbf_gamma(x), max_iter=50)
        elif kind == "spreading_rbf":
            model = LabelSpreading(kernel="rbf", gamma=rbf_gamma(x), alpha=0.2)
        else:
            model = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.2)
        model.fit(x, labels)
        dist = np.nan_to_num(model.label_distributions_)
        return model.transduction_, dist.max(1)

    return fit


def supervised(kind: str) -> Method:
    def fit(x, labels, per_class):
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import KNeighborsClassifier

        known = labels >= 0
        if kind == "knn":
            model = KNeighborsClassifier(min(10, per_class), weights="distance", metric="cosine")
        else:
            model = LogisticRegression(C=10.0, max_iter=2000)
        probs = model.fit(x[known], labels[known]).predict_proba(x)
        out = model.classes_[probs.argmax(1)]
        out[known] = labels[known]
        return out, probs.max(1)

    return fit


METHODS: dict[str, Method] = {
    "infscope influence (top_m=10)": influence(top_m=10),
    "infscope influence (top_m=100)": influence(top_m=100),
    "infscope, exact curvature": influence(curvature="exact", top_m=10),
    "infscope, representer (no curvature)": influence(curvature="identity", top_m=10),
    "infscope + 2 self-training rounds": influence(rounds=2, top_m=10),
    "LabelPropagation rbf": graph("propagation_rbf"),
    "LabelSpreading rbf": graph("spreading_rbf"),
    "LabelSpreading knn": graph("spreading_knn"),
    "k-NN": supervised("knn"),
    "logistic regression": supervised("logreg"),
}


def draw_labels(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.full(len(y), -1)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        labels[rng.choice(members, min(per_class, members.size), replace=False)] = c
    return labels


def evaluate(method: Method, x, y, labels, per_class) -> dict[str, float]:
    start = time.perf_counter()
    propagated, confidence = method(x, labels, per_class)
    seconds = time.perf_counter() - start
    pool = labels < 0
    correct = propagated[pool] == y[pool]
    conf = confidence[pool]
    top = np.argsort(-conf, kind="stable")[: max(1, pool.sum() // 2)]
    return {
        "accuracy": float(correct.mean()),
        "top50": float(correct[top].mean()),
        "seconds": seconds,
    }


def fmt(values: list[float]) -> str:
    stats = seed_stats(values)
    return f"{stats.mean:.3f} ± {stats.std:.3f}"


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    sections = []
    for name in args.tasks:
        x, y = load(name, args.data, args.cache)
        results = {m: {k: [] for k in args.labels} for m in METHODS}
        for per_class in args.labels:
            for seed in args.seeds:
                labels = draw_labels(y, per_class, seed)
                for method, fit in METHODS.items():
                    results[method][per_class].append(evaluate(fit, x, y, labels, per_class))
            print(
                f"{name}: {per_class} labels/class done ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        header = ["method", *[f"{k}/class" for k in args.labels]]
        tables = []
        for metric, title in (
            ("accuracy", "accuracy of propagated labels"),
            ("top50", "accuracy of the 50% most confident"),
        ):
            rows = [
                [m, *[fmt([r[metric] for r in results[m][k]]) for k in args.labels]]
                for m in METHODS
            ]
            tables.append(f"{title}:\n\n" + markdown_table(header, rows))
        rows = [
            [m, *[f"{np.mean([r['seconds'] for r in results[m][k]]):.2f}" for k in args.labels]]
            for m in METHODS
        ]
        tables.append("seconds per fit:\n\n" + markdown_table(header, rows))
        n_classes = len(np.unique(y))
        sections.append(
            f"### {name} ({len(y)} examples, {n_classes} classes, {x.shape[1]} dims)\n\n"
            + "\n\n".join(tables)
        )
    stats_line = (
        f"Machine: {cpu_model()}, {args.threads} thread(s) (OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); commit {git_commit()}; "
        f"{datetime.date.today().isoformat()}; seeds {args.seeds}; total {time.perf_counter() - started:.0f} s."
    )
    text = "\n\n".join([stats_line, *sections]) + "\n"
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
