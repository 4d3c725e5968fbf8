"""Selective annotation of an unlabeled pool: which examples to label under a small budget.

The vote-k / IDEAL setting (Su et al. 2023; Zhang et al. 2024): a pool of unlabeled texts, an
annotation budget of 18–100 examples, and a model that later uses only the annotated examples.
For each text task of ``../shared/data`` and each seed, the pool is a seeded 3,000-row subset of
the task's training rows (the pool size of the vote-k paper); each method picks ``budget`` of
them from their frozen MiniLM sentence embeddings alone (no labels); the picks get their gold
labels; and two models that see only the annotated examples are scored on the task's test set:

* ``knn`` — each test input takes the majority label of its most similar annotated examples
  (cosine, ``k = min(5, budget)``, ties to the nearest): the retrieval step of in-context
  learning, where demonstrations are retrieved from the annotated set;
* ``logreg`` — multinomial logistic regression on the annotated embeddings.

It also reports how many of the task's classes the annotated set covers. Methods: ``random``,
``vote-k`` (library defaults: k = 150, rho = 10, one stage — the two-stage variant needs an
LM's confidence), ``ideal`` (library defaults: k = 10, 100 simulations) and ``kmeans-centres`` (the
strong simple baseline of cold-start active learning: k-means with ``budget`` clusters, the
example nearest each centre; :class:`infscope.selection.KMeansCentres`). A seed fixes the pool subset and each selector's randomness.

    OMP_NUM_THREADS=1 .venv/bin/python bench/selection_annotation.py --markdown bench/results/annotation.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import cpu_model, csv_list, git_commit, markdown_table, publish  # noqa: E402
from labelnoise.tasks import DEV_TASKS, TASKS, TextTask, load_task  # noqa: E402

from infscope.selection import Pool, build_selector, compare_methods  # noqa: E402
from infscope.selection.comparison import seed_stats  # noqa: E402

METHODS = ("random", "vote-k", "ideal", "kmeans-centres")
EVALUATORS = ("knn", "logreg")


def parse_args() -> argparse.Namespace:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=csv_list(str, list(TASKS)), default=DEV_TASKS)
    parser.add_argument("--budgets", type=csv_list(int), default=[18, 50, 100])
    parser.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", type=csv_list(str, list(METHODS)), default=list(METHODS))
    parser.add_argument("--pool-size", type=int, default=3000)
    parser.add_argument("--data", type=Path, default=here.parent.parent / "shared" / "data")
    parser.add_argument("--cache", type=Path, default=here / "results" / "audit_cleanlab" / "embeddings")
    parser.add_argument("--markdown", type=Path, default=None)
    return parser.parse_args()


def pick(method: str, features: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Pool positions of the ``budget`` examples ``method`` sends for annotation."""
    pool = Pool(ids=[str(i) for i in range(len(features))], features=features)
    return build_selector(method, seed=seed).select(pool, budget).indices


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    k = min(5, len(train_y))
    similarity = test_x @ train_x.T
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(test_x), int(max(train_y.max(), test_y.max())) + 1))
    for rank in range(k):
        # nearer neighbours break ties: each rank adds a little more than the next one
        np.add.at(votes, (np.arange(len(test_x)), train_y[nearest[:, rank]]), 1.0 + 1e-3 * (k - rank))
    return float((votes.argmax(axis=1) == test_y).mean())


def logreg_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(train_y)) < 2:
        return float((test_y == train_y[0]).mean())
    model = LogisticRegression(C=10.0, max_iter=2000).fit(train_x, train_y)
    return float((model.predict(test_x) == test_y).mean())


def run_task(task: TextTask, args: argparse.Namespace) -> dict:
    """``results[evaluator][budget][method]`` -> per-seed accuracies, plus coverage and seconds."""
    acc = {e: {b: {m: [] for m in args.methods} for b in args.budgets} for e in EVALUATORS}
    coverage = {b: {m: [] for m in args.methods} for b in args.budgets}
    seconds = {m: [] for m in args.methods}
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        size = min(args.pool_size, len(task))
        rows = np.sort(rng.choice(len(task), size, replace=False))
        features, labels = task.embeddings[rows], task.labels[rows]
        for budget in args.budgets:
            for method in args.methods:
                start = time.perf_counter()
                picks = pick(method, features, budget, seed)
                seconds[method].append(time.perf_counter() - start)
                assert len(np.unique(picks)) == budget
                x, y = features[picks], labels[picks]
                acc["knn"][budget][method].append(knn_accuracy(x, y, task.test_embeddings, task.test_labels))
                acc["logreg"][budget][method].append(logreg_accuracy(x, y, task.test_embeddings, task.test_labels))
                coverage[budget][method].append(len(np.unique(y)) / task.n_classes)
        print(f"[annotation] {task.name} seed {seed} done", flush=True)
    return {"accuracy": acc, "coverage": coverage, "seconds": seconds}


def render(results: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [
        f"Pool {args.pool_size} rows per seed, seeds {args.seeds}, budgets {args.budgets}; "
        f"commit {git_commit()}, {cpu_model()}, 1 thread.",
        "",
    ]
    for evaluator in EVALUATORS:
        for budget in args.budgets:
            lines.append(f"**{evaluator}, budget {budget}**: test accuracy (%), mean ± std over seeds")
            lines.append("")
            rows = []
            for name, result in results.items():
                per = result["accuracy"][evaluator][budget]
                rows.append([name] + [seed_stats(per[m]).format() for m in args.methods])
            settings = {name: r["accuracy"][evaluator][budget] for name, r in results.items()}
            means = [seed_stats(np.mean([settings[t][m] for t in settings], axis=0)).format() for m in args.methods]
            rows.append(["**mean over tasks**"] + means)
            lines.append(markdown_table(["task"] + list(args.methods), rows))
            lines.append("")
            for method in args.methods:
                for baseline in ("random", "kmeans-centres"):
                    if method != baseline and baseline in args.methods and method not in ("random", "kmeans-centres"):
                        lines.append(f"- {compare_methods(settings, method, baseline).text()}")
            lines.append("")
    lines.append("Class coverage (share of the task's classes among the annotated examples), mean over seeds:")
    lines.append("")
    rows = []
    for name, result in results.items():
        for budget in args.budgets:
            rows.append([name, str(budget)] + [f"{np.mean(result['coverage'][budget][m]):.2f}" for m in args.methods])
    lines.append(markdown_table(["task", "budget"] + list(args.methods), rows))
    lines.append("")
    seconds = {m: np.median([s for r in results.values() for s in r["seconds"][m]]) for m in args.methods}
    lines.append("Median selection seconds: " + ", ".join(f"{m} {s:.2f}" for m, s in seconds.items()))
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    results = {}
    for name in args.tasks:
        task = load_task(name, 1.0, args.data, args.cache)
        results[name] = run_task(task, args)
    text = render(results, args)
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
