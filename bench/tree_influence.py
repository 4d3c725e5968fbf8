"""Tree-ensemble influence against leave-one-out retraining, and flipped-label detection.

What: scikit-learn ``HistGradientBoostingClassifier``, LightGBM and XGBoost, each fitted by
:func:`infscope.trees.fit_classifier` with the same deterministic settings (no subsampling, one
thread, fixed seed) on scikit-learn's bundled tables (no downloads): breast_cancer (binary), wine
(3 classes), digits (10 classes). A stratified 70/30 split; features as given.

1. **Leave-one-out.** ``--removed`` training examples (random, fixed seed) are each left out and the
   model refitted (:func:`infscope.evaluation.leave_one_out`); the ground truth is the change of
   each of ``--queries`` test examples' log loss, from the library's own decision function. Scores
   from :class:`infscope.trees.TreeInfluence`: BoostIn with the final query gradient (the
   derivative of the final loss, infscope's default), BoostIn with staged query gradients (the
   paper's), and TracIn over the boosting iterations. Reported: Pearson and Spearman over all
   (query, removed) pairs and the mean per query (:func:`infscope.evaluation.loo_correlation`).
2. **Flipped labels.** ``--flip`` (10%) of the training labels flipped to a random other class,
   the model fitted on them; self-influence of each method and the training loss (the simple
   baseline) rank the examples; ROC AUC and average precision
   (:func:`infscope.evaluation.mislabel_detection`), mean ± std over ``--seeds``.

Run (from the repository root; about 2-4 minutes on one thread)::

    OMP_NUM_THREADS=1 flock /tmp/infscope-heavy.lock .venv/bin/python bench/tree_influence.py \\
        --markdown bench/results/tree_influence.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np
from benchutil import cpu_model, csv_list, git_commit, markdown_table
from sklearn import datasets
from sklearn.model_selection import train_test_split

from infscope.evaluation import leave_one_out, loo_correlation, mislabel_detection
from infscope.io import write_atomic
from infscope.trees import LIBRARIES, TreeInfluence, TreeParams, fit_classifier
from infscope.trees.losses import example_loss

DATASETS = {
    "breast_cancer": datasets.load_breast_cancer,
    "wine": datasets.load_wine,
    "digits": datasets.load_digits,
}
#: (name, method, query gradient) of each scored method
METHODS = (
    ("BoostIn (final gradient)", "boostin", "final"),
    ("BoostIn (staged, paper)", "boostin", "staged"),
    ("TracIn", "tracin", "staged"),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--libraries", type=csv_list(str, LIBRARIES), default=list(LIBRARIES))
    parser.add_argument(
        "--loo-datasets", type=csv_list(str, list(DATASETS)), default=["breast_cancer", "wine"]
    )
    parser.add_argument(
        "--noise-datasets", type=csv_list(str, list(DATASETS)), default=list(DATASETS)
    )
    parser.add_argument("--removed", type=int, default=80, help="training examples left out")
    parser.add_argument("--queries", type=int, default=50, help="test examples explained")
    parser.add_argument("--flip", type=float, default=0.1, help="share of labels flipped")
    parser.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    parser.add_argument("--n-estimators", type=int, default=50)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--max-leaves", type=int, default=8)
    parser.add_argument("--min-leaf", type=int, default=5)
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    return parser.parse_args()


def split(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = DATASETS[name](return_X_y=True)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)


def query_losses(model, library: str, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's log loss from the library's own raw scores (not infscope's leaf tables)."""
    if library == "sklearn":
        raw = model.decision_function(X)
    elif library == "lightgbm":
        raw = model.predict(X, raw_score=True)
    else:
        raw = model.predict(X, output_margin=True)
    return example_loss(np.asarray(raw, dtype=np.float64).reshape(len(X), -1), y)


def refit_losses(
    library: str,
    X: np.ndarray,
    y: np.ndarray,
    Xq: np.ndarray,
    yq: np.ndarray,
    params: TreeParams,
    keep: np.ndarray,
    seed: int,
) -> np.ndarray:
    """The queries' losses after a refit on the training rows ``keep`` (a LOO train_fn)."""
    model = fit_classifier(library, X[keep], y[keep], params, seed=seed)
    return query_losses(model, library, Xq, yq)


def loo_rows(args: argparse.Namespace, params: TreeParams) -> list[dict]:
    rows = []
    for name in args.loo_datasets:
        X, Xq, y, yq = split(name, 0)
        Xq, yq = Xq[: args.queries], yq[: args.queries]
        removed = np.sort(
            np.random.default_rng(0).choice(len(y), min(args.removed, len(y)), replace=False)
        )
        for library in args.libraries:
            train_fn = partial(refit_losses, library, X, y, Xq, yq, params)
            start = time.perf_counter()
            loo = leave_one_out(train_fn, len(y), removed, progress=False)
            loo_seconds = time.perf_counter() - start
            model = fit_classifier(library, X, y, params)
            for label, method, gradient in METHODS:
                start = time.perf_counter()
                influence = TreeInfluence(model, method=method, query_gradient=gradient)
                scores = influence.fit(X, y).score(Xq, yq)
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "dataset": name,
                        "library": library,
                        "method": label,
                        **loo_correlation(scores, loo),
                        "seconds": seconds,
                        "loo_seconds": loo_seconds,
                        "leaf_residual": influence.leaf_residual,
                        "n_train": len(y),
                        "zero_deltas": float(np.mean(loo.deltas == 0)),
                    }
                )
            print(f"LOO {name} {library}: {loo_seconds:.1f} s for {len(removed) + 1} fits")
    return rows


def flip(y: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``share`` of them moved to a uniformly drawn other class, and the flags."""
    n_classes = int(y.max()) + 1
    chosen = rng.choice(len(y), int(round(share * len(y))), replace=False)
    noisy = y.copy()
    noisy[chosen] = (y[chosen] + rng.integers(1, n_classes, chosen.size)) % n_classes
    flags = np.zeros(len(y), dtype=bool)
    flags[chosen] = True
    return noisy, flags


def noise_rows(args: argparse.Namespace, params: TreeParams) -> list[dict]:
    rows = []
    for name in args.noise_datasets:
        for library in args.libraries:
            results: dict[str, list[tuple[float, float]]] = {}
            for seed in args.seeds:
                X, _, y, _ = split(name, seed)
                noisy, flags = flip(y, args.flip, np.random.default_rng(seed))
                model = fit_classifier(library, X, noisy, params, seed=seed)
                for label, method, gradient in METHODS:
                    influence = TreeInfluence(model, method=method, query_gradient=gradient)
                    influence.fit(X, noisy)
                    report = mislabel_detection(influence.self_influence(), flags)
                    results.setdefault(label, []).append((report.auc, report.average_precision))
                report = mislabel_detection(influence.training_loss(), flags)
                results.setdefault("training loss", []).append(
                    (report.auc, report.average_precision)
                )
            for label, values in results.items():
                a = np.asarray(values)
                rows.append(
                    {
                        "dataset": name,
                        "library": library,
                        "method": label,
                        "auc_mean": float(a[:, 0].mean()),
                        "auc_std": float(a[:, 0].std()),
                        "ap_mean": float(a[:, 1].mean()),
                        "ap_std": float(a[:, 1].std()),
                        "seeds": len(values),
                        "flipped_share": args.flip,
                    }
                )
            print(f"noise {name} {library} done")
    return rows


def render(args: argparse.Namespace, params: TreeParams, loo: list[dict], noise: list[dict]) -> str:
    versions = ", ".join(
        f"{p} {metadata.version(p)}" for p in ("scikit-learn", "lightgbm", "xgboost")
    )
    lines = [
        f"Machine: {os.cpu_count()} CPUs ({cpu_model()}), {platform.python_version()}, "
        f"{args.threads} thread(s) per fit (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}),"
        f" commit {git_commit()}, {versions}.",
        f"Models: {params.n_estimators} iterations, learning rate {params.learning_rate}, at most "
        f"{params.max_leaves} leaves, at least {params.min_leaf} examples per leaf (XGBoost: "
        f"hessian sum), lambda {params.l2}.",
        "",
        f"Leave-one-out: {args.removed} removed training examples x {args.queries} test queries "
        "(test log loss change); correlation of scores with the change (higher is better).",
        "",
    ]
    header = ["dataset", "library", "method", "Pearson", "Spearman", "Pearson/query",
              "Spearman/query", "score s", "LOO fits s"]  # fmt: skip
    lines.append(
        markdown_table(
            header,
            [
                [
                    r["dataset"],
                    r["library"],
                    r["method"],
                    f"{r['pearson']:.3f}",
                    f"{r['spearman']:.3f}",
                    f"{r['pearson_per_query_mean']:.3f}",
                    f"{r['spearman_per_query_mean']:.3f}",
                    f"{r['seconds']:.2f}",
                    f"{r['loo_seconds']:.1f}",
                ]
                for r in loo
            ],
        )
    )
    lines += [
        "",
        f"Flipped labels: {args.flip:.0%} of the training labels moved to a random other class; "
        f"mean ± std over seeds {args.seeds} (random AUC = 0.5, random AP = {args.flip}).",
        "",
        markdown_table(
            ["dataset", "library", "ranking", "AUC", "AP"],
            [
                [
                    r["dataset"],
                    r["library"],
                    r["method"],
                    f"{r['auc_mean']:.3f} ± {r['auc_std']:.3f}",
                    f"{r['ap_mean']:.3f} ± {r['ap_std']:.3f}",
                ]
                for r in noise
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    params = TreeParams(
        n_estimators=args.n_estimators,
        learning_rate=args.learning_rate,
        max_leaves=args.max_leaves,
        min_leaf=args.min_leaf,
        l2=args.l2,
        threads=args.threads,
    )
    start = time.perf_counter()
    loo = loo_rows(args, params)
    noise = noise_rows(args, params)
    text = render(args, params, loo, noise)
    text += f"\nTotal wall time {time.perf_counter() - start:.0f} s.\n"
    print(text)
    for path, body in (
        (args.markdown, text),
        (args.json, json.dumps({"loo": loo, "noise": noise})),
    ):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda h, body=body: h.write(body.encode()))


if __name__ == "__main__":
    main()
