"""Balanced multi-target selection (the BIDS setting): select a share of the multi-task mix toward
all eight tasks at once, fine-tune on each subset and compare mean and worst-task accuracy.

Pool, targets (``--targets-per-task`` held-out rows of every task), test set, warm-up model and
features come from ``bench/selection_common.py``. Influence = cosine of the warm-up model's
Kronecker-projected gradients (the LESS recipe). Here the pool's ``task`` and ``label`` tags are
known (a practitioner balancing a tagged mixture has them), so the honest simple baseline that
uses the same information runs next to random: ``balanced-random`` (the budget split equally over
the tasks, random inside each). Ranking selectors (top-k, LESS, BIDS, similarity) keep every
label's share within each task near the pool's by default (:class:`infscope.selection.LabelBalance`);
``bids:balance=false`` and ``bids:normalize=false`` are the ablations of the label balance and of
BIDS's instance normalisation, and ``--ablation-budgets`` reruns random and BIDS at other budgets.
A method spec is ``NAME[@SPACE][:KEY=VALUE,...]`` as in ``bench/selection_targeted.py``.

Run (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/selection_multitask.py --markdown bench/results/multitask.md
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from benchutil import csv_list, markdown_table, publish
from selection_common import (
    RESULTS,
    Features,
    Setup,
    add_setup_arguments,
    finish_setup_arguments,
    log,
    parse_spec,
)

DEFAULT_METHODS = (
    "random",
    "balanced-random",
    "bids",
    "bids:balance=false",
    "bids:normalize=false",
    "less",
    "top-k",
    "tarot:curve=false",
    "similarity",
    "cluster-match",
)
SPACES = {"similarity": "embeddings", "cluster-match": "embeddings"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--budget", type=float, default=0.15, help="share of the pool to select [0.15]")
    add("--methods", type=csv_list(str), default=list(DEFAULT_METHODS))
    add("--seeds", type=csv_list(int), default=[0, 1, 2])
    add("--full-seeds", type=csv_list(int), help="seeds of the full-data runs [= --seeds]")
    add("--ablation-budgets", type=csv_list(float), default=[0.05, 0.3])
    add("--ablation-methods", type=csv_list(str), default=["random", "balanced-random", "bids"])
    add("--out", type=Path, help="results directory [bench/results/selection_multitask]")
    add("--markdown", type=Path, help="write the results section here")
    add_setup_arguments(parser)
    args = parser.parse_args(argv)
    finish_setup_arguments(args)
    args.full_seeds = args.full_seeds or args.seeds
    args.out = args.out or RESULTS / ("selection_multitask" + ("_dev" if args.dev else ""))
    return args


def build_pool(setup: Setup, feats: Features, name: str, space: str | None) -> Any:
    from infscope.selection import Pool

    tags = {
        "task": setup.pool_task.tolist(),
        "label": [f"{r['task']}:{r['label']}" for r in setup.pool],
    }
    space = space or SPACES.get(name, "gradients")
    emb = space == "embeddings"
    return Pool(
        ids=setup.states["pool"].ids,
        scores=feats.influence.mean(axis=0),
        influence=feats.influence,
        query_tasks=[r["task"] for r in setup.targets],
        features=feats.embeddings if emb else feats.gradients,
        target_features=feats.target_embeddings if emb else feats.target_gradients,
        texts=[r["text"] for r in setup.pool],
        target_texts=[r["text"] for r in setup.targets],
        tags=tags,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup = Setup(args, args.out)
    feats = setup.features()
    log(setup.describe(feats))
    from infscope.selection import build_selector, label_skew

    started = time.perf_counter()
    cells = [(m, args.budget) for m in args.methods]
    cells += [(m, b) for b in args.ablation_budgets for m in args.ablation_methods]
    results: dict[str, Any] = {}
    for spec, budget in cells:
        name, space, options = parse_spec(spec)
        pool = build_pool(setup, feats, name, space)
        runs, select_seconds = [], []
        for seed in args.seeds:
            t0 = time.perf_counter()
            if name == "balanced-random":
                selector = build_selector("random", seed, stratify_by="task", balanced_strata=True)
            else:
                selector = build_selector(name, seed=seed, **options)
            selection = selector.select(pool, budget)
            select_seconds.append(time.perf_counter() - t0)
            runs.append(setup.train_run(selection.indices, seed))
        skew = label_skew(pool, selection.indices)
        results[f"{spec} @ {budget:.0%}"] = {
            "method": spec,
            "budget": budget,
            "runs": runs,
            "counts": {
                t: int(np.sum(setup.pool_task[selection.indices] == t)) for t in setup.tasks
            },
            "majority_label_share": skew.selected_share,
            "select_seconds": float(np.mean(select_seconds)),
        }
        log(
            f"{spec} @ {budget:.0%}: mean task accuracy "
            + ", ".join(f"{100 * r['mean_task_accuracy']:.1f}" for r in runs)
            + f" (trained {setup.trained}, {time.perf_counter() - started:.0f}s)"
        )
    n = len(setup.pool)
    full = [setup.train_run(np.arange(n), seed) for seed in args.full_seeds]
    results["full data"] = {
        "method": "full data",
        "budget": 1.0,
        "runs": full,
        "counts": {t: int(np.sum(setup.pool_task == t)) for t in setup.tasks},
        "majority_label_share": label_skew(
            build_pool(setup, feats, "random", None), np.arange(n)
        ).selected_share,
        "select_seconds": 0.0,
    }
    log("full data: " + ", ".join(f"{100 * r['mean_task_accuracy']:.1f}" for r in full))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    text = report(args, setup, feats, results)
    publish(text, args.markdown)
    log(f"done in {time.perf_counter() - started:.0f}s, {setup.trained} runs trained")
    return 0


def report(args: argparse.Namespace, setup: Setup, feats: Features, results: dict[str, Any]) -> str:
    """Accuracy per task, mean and worst-task drop against full data; composition; checks."""
    from infscope.selection import seed_stats

    tasks = setup.tasks
    full = results["full data"]["runs"]
    full_task = {t: np.mean([r["per_task"][t] for r in full]) for t in tasks}

    def worst_drop(runs: list[dict[str, Any]]) -> list[float]:
        """Per seed: the largest drop of a task's accuracy below its full-data mean."""
        return [max(full_task[t] - r["per_task"][t] for t in tasks) for r in runs]

    header = ["method", "n", *tasks, "mean over tasks", "worst-task drop"]
    rows = []
    for key, res in results.items():
        runs = res["runs"]
        rows.append(
            [key, str(runs[0]["n_train"])]
            + [seed_stats([r["per_task"][t] for r in runs]).format() for t in tasks]
            + [
                seed_stats([r["mean_task_accuracy"] for r in runs]).format(),
                seed_stats(worst_drop(runs)).format(),
            ]
        )
    counts_rows = []
    for key, res in results.items():
        c = np.array([res["counts"][t] for t in tasks], dtype=float)
        counts_rows.append(
            [
                key,
                *[str(int(v)) for v in c],
                f"{c.min() / c.max():.2f}",
                f"{res['majority_label_share']:.2f}",
            ]
        )
    per_seed = {
        key: {
            "mean": [r["mean_task_accuracy"] for r in res["runs"]],
            "worst": worst_drop(res["runs"]),
        }
        for key, res in results.items()
        if key != "full data"
    }
    checks = []
    main_budget = f" @ {args.budget:.0%}"
    for key in per_seed:
        if not key.endswith(main_budget) or key.startswith("random "):
            continue
        for base in ("random", "balanced-random"):
            base_key = base + main_budget
            if base_key not in per_seed or base_key == key:
                continue
            mean = seed_stats(np.subtract(per_seed[key]["mean"], per_seed[base_key]["mean"]))
            worst = seed_stats(np.subtract(per_seed[key]["worst"], per_seed[base_key]["worst"]))
            checks.append(
                f"- {key} − {base_key}: mean task accuracy {mean.format()} points, "
                f"worst-task drop {worst.format()} points (negative = smaller drop)"
            )
    return "\n\n".join(
        [
            f"Command: `{setup.command}`",
            "Machine: " + setup.machine_line(),
            "Set-up: " + setup.describe(feats),
            f"Test accuracy (%), mean ± std over seeds {args.seeds} (full data: {args.full_seeds}); "
            "worst-task drop: per seed, the largest fall of a task's accuracy below its full-data "
            "mean:\n\n" + markdown_table(header, rows),
            "Selected rows per task; min/max: smallest task count over largest (1 = balanced); "
            "majority-label share: the most frequent label's share of a task's picks, mean over "
            "tasks weighted by picks:\n\n"
            + markdown_table(["selection", *tasks, "min/max", "majority-label share"], counts_rows),
            "Paired differences over seeds (mean ± std):\n\n" + "\n".join(checks),
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
