"""Targeted selection (the LESS / TAROT setting): for each task of the multi-task mix in turn,
select 5% and 15% of the pool toward that task, train, and measure that task's test accuracy.

The pool is ``../shared/data/multitask_mix`` less the held-out rows (see
``bench/selection_common.py``); the target of task ``t`` is its ``--targets-per-task`` held-out
rows (texts, sentence embeddings, gradient features of a warm-up model). What every method reads
of the pool — the information is part of the comparison:

* ``random``: nothing (one random subset per seed, shared by every target);
* ``similarity``: sentence embeddings (mean-pooled MiniLM), top-k by mean cosine to the targets;
* ``cluster-match``: the same embeddings, the targets' share of each k-means cluster of the pool,
  uniform inside a cluster (infscope's recommended targeted selector);
* ``dsir``: texts (hashed n-grams), importance resampling toward the target texts;
* ``less``: gradient features (cosine influence, mean over the target rows, top-k);
* ``tarot``: gradient features (whitened, round-robin nearest to each target, OT);
* ``task-oracle``: the pool's *task tags* (the target task's rows in random order, then random
  rows): not a method, the ceiling of knowing which rows belong to the target task.

No method but ``task-oracle`` sees a task or label tag (the tags go to the diagnostics only). A
method spec is ``NAME[@SPACE][:KEY=VALUE,...]``: SPACE (``embeddings`` or ``gradients``) overrides
the features a method reads, the options go to :func:`infscope.selection.build_selector`.

Run (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/selection_targeted.py --markdown bench/results/targeted.md
    .venv/bin/python bench/selection_targeted.py --dev --targets banking77,sst2 --budgets 0.05
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
    "similarity",
    "cluster-match",
    "dsir",
    "less",
    "tarot:curve=false",
    "task-oracle",
)
SPACES = {"similarity": "embeddings", "cluster-match": "embeddings", "tarot": "gradients"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--targets", type=csv_list(str), help="target tasks [every task]")
    add("--budgets", type=csv_list(float), default=[0.05, 0.15], help="pool shares [0.05,0.15]")
    add("--methods", type=csv_list(str), default=list(DEFAULT_METHODS))
    add("--seeds", type=csv_list(int), default=[0, 1, 2])
    add("--out", type=Path, help="results directory [bench/results/selection_targeted]")
    add("--markdown", type=Path, help="write the results section here")
    add_setup_arguments(parser)
    args = parser.parse_args(argv)
    finish_setup_arguments(args)
    args.out = args.out or RESULTS / ("selection_targeted" + ("_dev" if args.dev else ""))
    return args


def target_pool(setup: Setup, feats: Features, task: str, name: str, space: str | None) -> Any:
    """The pool as ``name`` sees it when the target is ``task``."""
    from infscope.selection import Pool

    rows = np.flatnonzero([r["task"] == task for r in setup.targets])
    ids = setup.states["pool"].ids
    if name == "task-oracle":  # the target task's rows first (ties broken at random)
        return Pool(ids=ids, scores=(setup.pool_task == task).astype(float))
    if name == "random":
        return Pool(ids=ids)
    if name == "dsir":
        return Pool(
            ids=ids,
            texts=[r["text"] for r in setup.pool],
            target_texts=[setup.targets[i]["text"] for i in rows],
        )
    space = space or SPACES.get(name, "gradients")
    if space == "embeddings":
        features, target = feats.embeddings, feats.target_embeddings[rows]
    else:
        features, target = feats.gradients, feats.target_gradients[rows]
    return Pool(
        ids=ids,
        features=features,
        target_features=target,
        influence=feats.influence[rows],
        query_tasks=[task] * len(rows),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup = Setup(args, args.out)
    feats = setup.features()
    log(setup.describe(feats))
    from infscope.selection import Pool, TopK, build_selector, label_skew

    targets = args.targets or setup.tasks
    tagged = Pool(
        ids=setup.states["pool"].ids,
        tags={
            "task": setup.pool_task.tolist(),
            "label": [f"{r['task']}:{r['label']}" for r in setup.pool],
        },
    )
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for task in targets:
        for spec in args.methods:
            name, space, options = parse_spec(spec)
            pool = target_pool(setup, feats, task, name, space)
            for budget in args.budgets:
                for seed in args.seeds:
                    t0 = time.perf_counter()
                    if name == "task-oracle":
                        selector = TopK(balance=None, seed=seed)
                    else:
                        selector = build_selector(name, seed=seed, **options)
                    selection = selector.select(pool, budget)
                    seconds = time.perf_counter() - t0
                    # random's subsets are shared by every target: evaluated on every task
                    only = None if name == "random" else [task]
                    run = setup.train_run(selection.indices, seed, tasks=only)
                    skew = label_skew(tagged, selection.indices).groups.get(task, (np.nan,) * 3)
                    runs.append(
                        {
                            "target": task,
                            "method": spec,
                            "budget": budget,
                            "seed": seed,
                            "accuracy": run["per_task"][task],
                            "mean_task_accuracy": run["mean_task_accuracy"],
                            "n": len(selection),
                            "target_task_share": float(
                                np.mean(setup.pool_task[selection.indices] == task)
                            ),
                            "majority_label_share": skew[1],
                            "pool_majority_label_share": skew[0],
                            "select_seconds": seconds,
                        }
                    )
                log(
                    f"{task} {spec} {budget:.0%}: "
                    + " ".join(
                        f"{100 * r['accuracy']:.1f}"
                        for r in runs
                        if (r["target"], r["method"], r["budget"]) == (task, spec, budget)
                    )
                    + f" (trained {setup.trained} runs, {time.perf_counter() - started:.0f}s)"
                )
    (args.out / "runs.json").write_text(json.dumps(runs, indent=1))
    text = report(args, setup, feats, runs, targets)
    publish(text, args.markdown)
    log(f"done in {time.perf_counter() - started:.0f}s, {setup.trained} runs trained")
    return 0


def report(
    args: argparse.Namespace,
    setup: Setup,
    feats: Features,
    runs: list[dict[str, Any]],
    targets: list[str],
) -> str:
    """The markdown section: accuracy tables per budget, comparisons, composition."""
    from infscope.selection import compare_methods, seed_stats

    methods = list(args.methods)
    parts = [
        f"Command: `{setup.command}`",
        "Machine: " + setup.machine_line(),
        "Set-up: " + setup.describe(feats),
    ]
    pick = lambda **kw: [r for r in runs if all(r[k] == v for k, v in kw.items())]  # noqa: E731
    for budget in args.budgets:
        results = {
            t: {
                m: [r["accuracy"] for r in pick(target=t, method=m, budget=budget)] for m in methods
            }
            for t in targets
        }
        n = pick(budget=budget)[0]["n"]
        rows = [[t, *(seed_stats(results[t][m]).format() for m in methods)] for t in targets]
        per_seed = {m: np.mean([results[t][m] for t in targets], axis=0) for m in methods}
        rows.append(["**mean over targets**", *(seed_stats(per_seed[m]).format() for m in methods)])
        parts.append(
            f"Budget {budget:.0%} ({n} of {len(setup.pool)} pool rows): target-task test accuracy "
            f"(%), mean ± std over seeds {args.seeds}:\n\n"
            + markdown_table(["target", *methods], rows)
        )
        lines = []
        for m in methods:
            for base in ("random", "similarity", "task-oracle"):
                if m != base and base in methods and m not in ("random", "task-oracle"):
                    lines.append("- " + compare_methods(results, m, base).text())
        parts.append("\n".join(lines))
        comp = []
        for m in methods:
            rs = pick(method=m, budget=budget)
            comp.append(
                [
                    m,
                    f"{np.mean([r['target_task_share'] for r in rs]):.2f}",
                    f"{np.nanmean([r['majority_label_share'] for r in rs]):.2f}",
                    f"{np.nanmean([r['pool_majority_label_share'] for r in rs]):.2f}",
                    f"{np.mean([r['select_seconds'] for r in rs]):.1f}",
                ]
            )
        parts.append(
            f"Composition at {budget:.0%}, mean over targets and seeds: share of the picks from the "
            "target task; the most frequent label's share of the target task's picks (pool: the "
            "same in the target task's pool rows); selection seconds:\n\n"
            + markdown_table(
                ["method", "target-task share", "majority-label share", "pool", "select s"], comp
            )
        )
    return "\n\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
