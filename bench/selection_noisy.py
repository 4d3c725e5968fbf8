"""Selection from a noisy pool: do influence-aware selectors beat label-blind ones (and label-blind
ones followed by the label audit) when the pool's labels are wrong?

The pool is ``../shared/data/multitask_mix`` (see ``bench/selection_common.py``), extended by
``--duplicates`` near-duplicate rows (a random word dropped) of random pool rows. Each condition
gives the pool labels:

* ``clean`` — every label true, each near-duplicate with its source's label;
* ``uniform:R`` / ``confusable:R`` — a share R of the original rows flipped within their task
  (:func:`infscope.evaluation.noise.flip_labels`), and every near-duplicate given a label that
  conflicts with its source's true label
  (:func:`infscope.evaluation.noise.conflicting_duplicates`), drawn by the same noise model.

The targets (``--targets-per-task`` held-out rows of every task) and the test set stay clean; every
method selects toward all eight tasks' targets at once, and the eight per-task test accuracies of
each run are the eight targets. ``--tasks ag_news`` makes a single-task pool (and targets and
test set) of one task instead. The warm-up model and its gradient features are trained on the
noisy pool (a practitioner has no clean copy), as is the audit. Methods:

* ``random``, ``similarity`` (sentence embeddings), ``cluster-match`` (embeddings),
  ``tarot@embeddings`` (TAROT on the embeddings): label-blind;
* ``X+audit``: the same after removing the rows :func:`infscope.audit.audit` flags (K-fold MLP
  probe on the embeddings plus neighbour votes — what ``infscope audit`` runs on features);
* ``less`` (cosine of warm-up gradients, LESS-style; twin ``similarity``), ``tarot`` (gradient
  features; twin ``tarot@embeddings``): influence-aware;
* ``aligned-match``: :class:`infscope.selection.TargetAligned` — reject rows whose gradient pulls
  against their nearest targets, then ``cluster-match`` on the embeddings (its label-blind twin).

Run (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/selection_noisy.py --markdown bench/results/noisy.md
    OMP_NUM_THREADS=1 .venv/bin/python bench/selection_noisy.py --tasks ag_news \
        --conditions clean,uniform:0.2,confusable:0.2,uniform:0.4
    .venv/bin/python bench/selection_noisy.py --smoke   # a minute: tiny pool, one seed
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
    DATA_DIR,
    RESULTS,
    Features,
    Setup,
    add_setup_arguments,
    finish_setup_arguments,
    label_space,
    log,
    read_jsonl,
)

METHODS = (
    "random",
    "random+audit",
    "similarity",
    "similarity+audit",
    "cluster-match",
    "cluster-match+audit",
    "less",
    "tarot",
    "tarot@embeddings",
    "aligned-match",
)
CLEAN_METHODS = (
    "random",
    "random+audit",
    "similarity",
    "similarity+audit",
    "cluster-match",
    "cluster-match+audit",
    "aligned-match",
)
# the targets' levels first, the clean check next; what a time limit cuts comes last
CONDITIONS = (
    "uniform:0.2",
    "uniform:0.4",
    "clean",
    "confusable:0.2",
    "confusable:0.4",
    "uniform:0.1",
    "confusable:0.1",
)
INFLUENCE_AWARE = ("less", "tarot", "aligned-match")
TWINS = {"aligned-match": "cluster-match", "less": "similarity", "tarot": "tarot@embeddings"}
# the paired differences reported: the audited label-blind selector against the baselines, the
# influence-aware ones against their label-blind twins and against the audited selector
COMPARISONS = (
    ("cluster-match+audit", "similarity"),
    ("cluster-match+audit", "similarity+audit"),
    ("cluster-match+audit", "cluster-match"),
    ("cluster-match+audit", "random+audit"),
    ("aligned-match", "similarity"),
    ("aligned-match", "cluster-match"),
    ("aligned-match", "cluster-match+audit"),
    ("tarot", "cluster-match+audit"),
    ("tarot@embeddings", "cluster-match+audit"),
    ("tarot", "tarot@embeddings"),
    ("less", "similarity"),
)
NOISE_SEED = 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--conditions", type=csv_list(str), default=list(CONDITIONS))
    add("--budgets", type=csv_list(float), default=[0.05, 0.15])
    add("--methods", type=csv_list(str), default=list(METHODS))
    add("--clean-methods", type=csv_list(str), default=list(CLEAN_METHODS))
    add("--seeds", type=csv_list(int), default=[0, 1, 2])
    add("--full-seeds", type=csv_list(int), default=[0], help="seeds of the full-data runs [0]")
    add(
        "--full-conditions",
        type=csv_list(str),
        default=["clean", "uniform:0.4"],
        help="conditions with full-data runs [clean,uniform:0.4]",
    )
    add("--duplicates", type=float, default=0.05, help="near-duplicate rows, share of the pool")
    add("--smoke", action="store_true", help="a tiny run that checks the script end to end")
    add(
        "--detection-only",
        action="store_true",
        help="only add the noise-detection figures to finished conditions (no selection runs)",
    )
    add("--out", type=Path, help="results directory [bench/results/selection_noisy]")
    add("--markdown", type=Path, help="write the results section here")
    add_setup_arguments(parser)
    parser.set_defaults(pool_size=2400, test_size=800)
    args = parser.parse_args(argv)
    if args.smoke:
        args.pool_size, args.test_size, args.epochs, args.warmup_epochs = 400, 160, 1, 1
        args.dim, args.seeds, args.targets_per_task = 64, [0], 8
        args.conditions, args.budgets = ["clean", "uniform:0.4"], [0.15]
        args.full_conditions = args.conditions
    finish_setup_arguments(args)
    for condition in args.conditions:
        parse_condition(condition)
    name = "selection_noisy" + "".join(f"_{t}" for t in args.tasks or [])
    name += ("_smoke" if args.smoke else "") + ("_dev" if args.dev else "")
    args.out = args.out or RESULTS / name
    return args


def parse_condition(text: str) -> tuple[str, float]:
    """``clean`` or ``MODEL:RATE`` -> (model, rate)."""
    if text == "clean":
        return "clean", 0.0
    model, _, rate = text.partition(":")
    if model not in ("uniform", "confusable") or not 0 < float(rate or "nan") < 1:
        raise SystemExit(f"bad condition {text!r}: use clean, uniform:RATE or confusable:RATE")
    return model, float(rate)


def near_duplicates(rate: float):
    """The ``extend_pool`` of :class:`Setup`: copies of a seeded share of the pool's rows (drawn
    within each task, as :func:`conflicting_duplicates` draws them), one word dropped."""
    from infscope.evaluation.noise import conflicting_duplicates

    records = read_jsonl(DATA_DIR / "train.jsonl") + read_jsonl(DATA_DIR / "test.jsonl")
    tasks, offsets, width = label_space(records)
    ends = [*[offsets[t] for t in tasks[1:]], width]
    n_classes = {t: end - offsets[t] for t, end in zip(tasks, ends)}

    def extend(pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rng = np.random.default_rng(NOISE_SEED)
        copies = []
        for task, rows in per_task_rows([r["task"] for r in pool]).items():
            local = np.array([int(pool[i]["label"]) for i in rows])
            sources, _ = conflicting_duplicates(local, rate, NOISE_SEED, n_classes=n_classes[task])
            for i in rows[sources]:
                words = pool[i]["text"].split(" ")
                if len(words) > 3:
                    del words[int(rng.integers(1, len(words)))]
                copies.append(dict(pool[i], id=f"{pool[i]['id']}~dup", text=" ".join(words)))
        return copies

    return extend


def per_task_rows(tasks: Sequence[str]) -> dict[str, np.ndarray]:
    values = np.asarray(tasks)
    return {t: np.flatnonzero(values == t) for t in sorted(set(tasks))}


def noisy_labels(setup: Setup, condition: str, emb: np.ndarray) -> np.ndarray:
    """The pool's global labels under ``condition`` (the original rows flipped within their
    task, the near-duplicates conflicting with their sources)."""
    from infscope.evaluation.noise import conflicting_duplicates, flip_labels

    model, rate = parse_condition(condition)
    clean = setup.global_labels(setup.pool)
    if model == "clean":
        return clean
    is_dup = np.array([str(r["id"]).endswith("~dup") for r in setup.pool])
    original = np.flatnonzero(~is_dup)
    position = {str(setup.pool[i]["id"]): i for i in original}
    labels = clean.copy()
    ends = sorted([*setup.offsets.values(), setup.width])
    for task, rows in per_task_rows(setup.pool_task[original].tolist()).items():
        rows = original[rows]
        offset = setup.offsets[task]
        n_classes = ends[ends.index(offset) + 1] - offset
        local = clean[rows] - offset
        flipped, _ = flip_labels(
            local, rate, NOISE_SEED, noise=model, n_classes=n_classes, features=emb[rows]
        )
        labels[rows] = flipped + offset
        dup_rows = [i for i in np.flatnonzero(is_dup) if setup.pool_task[i] == task]
        if not dup_rows:
            continue
        share = len(dup_rows) / len(rows)
        sources, conflicting = conflicting_duplicates(
            local, share, NOISE_SEED, noise=model, n_classes=n_classes, features=emb[rows]
        )
        by_source = {int(rows[s]): int(c) + offset for s, c in zip(sources, conflicting)}
        for i in dup_rows:
            labels[i] = by_source[position[str(setup.pool[i]["id"])[: -len("~dup")]]]
    return labels


def run_audit(
    setup: Setup, labels: np.ndarray, emb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """The audit's flags and suspicion on the noisy pool (K-fold probe + neighbour votes on the
    embeddings) and its seconds."""
    import warnings

    from infscope.audit import AuditConfig, audit, probe_fit_predict
    from infscope.audit.probe import ProbeConfig

    t0 = time.perf_counter()
    ids = list(setup.states["pool"].ids)
    fit_predict = probe_fit_predict(emb, labels, setup.width, ids, ProbeConfig(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = audit(
            labels,
            ids=ids,
            n_classes=setup.width,
            fit_predict=fit_predict,
            features=emb,
            texts=[r["text"] for r in setup.pool],
            config=AuditConfig(seed=0),
        )
    return np.asarray(result.flagged), result.suspicion, time.perf_counter() - t0


def detection(
    setup: Setup, feats: Features, wrong: np.ndarray, suspicion: np.ndarray
) -> dict[str, Any]:
    """How well each signal ranks the wrong labels first (AUROC): negative target alignment at
    several neighbourhood sizes, and the audit's suspicion; per task, next to the warm-up
    model's accuracy on it (the gradients know a label is wrong only where the model is right)."""
    from sklearn.metrics import roc_auc_score

    from infscope.selection import target_alignment

    if wrong.all() or not wrong.any():
        return {}
    m = len(setup.targets)
    align = {
        k: target_alignment(feats.influence, feats.embeddings, feats.target_embeddings, k)
        for k in (1, 10, 64, m)
    }
    auc = lambda score, rows=slice(None): float(roc_auc_score(wrong[rows], score[rows]))  # noqa: E731
    per_task = {}
    for task, rows in per_task_rows(setup.pool_task.tolist()).items():
        if wrong[rows].any() and not wrong[rows].all():
            per_task[task] = {
                "warmup_accuracy": feats.warmup["per_task"][task],
                "alignment": auc(-align[10], rows),
                "audit": auc(suspicion, rows),
            }
    return {
        "alignment": {str(k): auc(-a) for k, a in align.items()},
        "audit": auc(suspicion),
        "per_task": per_task,
    }


def build_pool(setup: Setup, feats: Features, labels: np.ndarray, space: str) -> Any:
    from infscope.selection import Pool

    emb = space == "embeddings"
    return Pool(
        ids=setup.states["pool"].ids,
        influence=feats.influence,
        query_tasks=[r["task"] for r in setup.targets],
        features=feats.embeddings if emb else feats.gradients,
        target_features=feats.target_embeddings if emb else feats.target_gradients,
        tags={"task": setup.pool_task.tolist(), "label": labels.tolist()},
    )


def select(method: str, pools: dict[str, Any], flagged: np.ndarray, budget: float, seed: int):
    """Indices of ``method``'s picks (budget = share of the whole pool)."""
    from infscope.selection import build_selector, select_excluding

    spec, _, audited = method.partition("+")
    name, _, space = spec.partition("@")
    space = space or ("gradients" if name == "tarot" else "embeddings")
    pool = pools[space]
    options = {"curve": False} if name == "tarot" else {}
    selector = build_selector(name, seed=seed, **options)
    k = int(round(budget * len(pool)))
    if not audited:
        return selector.select(pool, k).indices
    excluded = [pool.ids[i] for i in np.flatnonzero(flagged)]
    return select_excluding(selector, pool, k, excluded).indices


def run_condition(
    args: argparse.Namespace, setup: Setup, condition: str, emb: np.ndarray
) -> dict[str, Any]:
    from infscope.selection import estimate_noise

    labels = noisy_labels(setup, condition, emb)
    wrong = labels != setup.global_labels(setup.pool)
    setup.set_pool_labels(labels)
    feats = setup.features()
    flagged, suspicion, audit_seconds = run_audit(setup, labels, emb)
    pools = {
        space: build_pool(setup, feats, labels, space) for space in ("embeddings", "gradients")
    }
    log(
        f"{condition}: {wrong.mean():.1%} of the pool's labels wrong; audit flagged "
        f"{flagged.sum()} ({audit_seconds:.0f}s), precision "
        f"{wrong[flagged].mean() if flagged.any() else float('nan'):.2f}, recall "
        f"{flagged[wrong].mean() if wrong.any() else float('nan'):.2f}"
    )
    from infscope.selection import pool_alignment

    against = pool_alignment(pools["embeddings"]) < 0
    record: dict[str, Any] = {
        "condition": condition,
        "wrong_share": float(wrong.mean()),
        "audit": {
            "flagged": int(flagged.sum()),
            "precision": float(wrong[flagged].mean()) if flagged.any() else None,
            "recall": float(flagged[wrong].mean()) if wrong.any() else None,
            "seconds": audit_seconds,
        },
        "alignment": {
            "rejected": int(against.sum()),
            "precision": float(wrong[against].mean()) if against.any() else None,
            "recall": float(against[wrong].mean()) if wrong.any() else None,
        },
        "detection": detection(setup, feats, wrong, suspicion),
        "features_seconds": sum(feats.seconds.values()) - feats.seconds.get("embeddings", 0.0),
        "warmup_rows": feats.warmup["n_train"],
        "warmup_epochs": feats.warmup["epochs"],
        "cells": {},
    }
    methods = args.clean_methods if condition == "clean" else args.methods
    for budget in args.budgets:
        for method in methods:
            runs = []
            for seed in args.seeds:
                t0 = time.perf_counter()
                picks = select(method, pools, flagged, budget, seed)
                seconds = time.perf_counter() - t0
                run = setup.train_run(picks, seed)
                estimate = estimate_noise(pools["embeddings"], picks)
                runs.append(
                    {
                        **run,
                        "select_seconds": seconds,
                        "wrong_in_picks": float(wrong[picks].mean()),
                        "estimated_noise": estimate.selected if estimate else None,
                    }
                )
            record["cells"][f"{method} @ {budget:g}"] = runs
            log(
                f"{condition} {method} @ {budget:.0%}: mean task accuracy "
                + ", ".join(f"{100 * r['mean_task_accuracy']:.1f}" for r in runs)
                + f"; wrong labels in the picks {100 * np.mean([r['wrong_in_picks'] for r in runs]):.1f}%"
            )
    n = len(setup.pool)
    if condition in args.full_conditions:
        record["full"] = [setup.train_run(np.arange(n), seed) for seed in args.full_seeds]
    setup.set_pool_labels(setup.global_labels(setup.pool))
    return record


def detect_only(setup: Setup, condition: str, emb: np.ndarray) -> dict[str, Any]:
    """:func:`detection` of a finished condition (its warm-up and features are cached)."""
    labels = noisy_labels(setup, condition, emb)
    wrong = labels != setup.global_labels(setup.pool)
    setup.set_pool_labels(labels)
    feats = setup.features()
    _, suspicion, _ = run_audit(setup, labels, emb)
    setup.set_pool_labels(setup.global_labels(setup.pool))
    return detection(setup, feats, wrong, suspicion)


def main(argv: Sequence[str] | None = None) -> int:
    from infscope.io import write_atomic

    args = parse_args(argv)
    setup = Setup(args, args.out, extend_pool=near_duplicates(args.duplicates))
    emb = setup._embeddings("pool")
    started = time.perf_counter()
    path = args.out / "results.json"
    results: dict[str, Any] = {}
    if path.exists() and not args.smoke:
        results = json.loads(path.read_text())
    for condition in args.conditions:
        if args.detection_only:
            if condition in results and "detection" not in results[condition]:
                results[condition]["detection"] = detect_only(setup, condition, emb)
                text = json.dumps(results, indent=1)
                write_atomic(path, lambda h, t=text: h.write(t.encode()))
            continue
        if condition not in results:
            results[condition] = run_condition(args, setup, condition, emb)
            text = json.dumps(results, indent=1)
            write_atomic(path, lambda h, t=text: h.write(t.encode()))
        log(f"{condition} done ({time.perf_counter() - started:.0f}s, {setup.trained} runs)")
    publish(report(args, setup, results), args.markdown)
    return 0


def mean_std(values: Sequence[float], scale: float = 100.0) -> str:
    v = scale * np.asarray(values, dtype=float)
    return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"


def report(args: argparse.Namespace, setup: Setup, results: dict[str, Any]) -> str:
    """Accuracy tables, paired differences, twin wins per target, noise in the picks, cost."""
    parts = [
        f"Command: `{setup.command}`",
        "Machine: " + setup.machine_line(),
        f"Pool: {len(setup.pool)} rows ({args.pool_size} of multitask_mix"
        f"{' (' + ', '.join(setup.tasks) + ' only)' if args.tasks else ''} + "
        f"{args.duplicates:.0%} near-duplicates); {len(setup.targets)} clean target rows; "
        f"{len(setup.test)} clean {'dev' if args.dev else 'test'} rows; seeds {args.seeds}; "
        f"noise seed {NOISE_SEED}; full data seeds {args.full_seeds}.",
    ]
    for condition, record in results.items():
        cells = record["cells"]
        methods = list(dict.fromkeys(key.rsplit(" @ ", 1)[0] for key in cells))
        header = ["method", *[f"{b:.0%}" for b in args.budgets], "wrong labels in picks"]
        rows = []
        for method in methods:
            accs, wrong = [], []
            for budget in args.budgets:
                runs = cells.get(f"{method} @ {budget:g}", [])
                accs.append(mean_std([r["mean_task_accuracy"] for r in runs]) if runs else "–")
                wrong += [r["wrong_in_picks"] for r in runs]
            rows.append([method, *accs, f"{100 * np.mean(wrong):.1f}%"])
        if record.get("full"):
            full = mean_std([r["mean_task_accuracy"] for r in record["full"]])
            share = f"{100 * record['wrong_share']:.1f}%"
            rows.append(["full data", *[full] * len(args.budgets), share])
        a, al = record["audit"], record["alignment"]
        fmt = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
        parts.append(
            f"### {condition}\n\n{100 * record['wrong_share']:.1f}% of the pool's labels wrong. "
            f"Audit: {a['flagged']} flagged, precision {fmt(a['precision'])}, recall "
            f"{fmt(a['recall'])}, {a['seconds']:.0f} s. Negative target alignment: "
            f"{al['rejected']} rows, precision {fmt(al['precision'])}, recall {fmt(al['recall'])}. "
            f"Warm-up + gradient features: {record['features_seconds']:.0f} s.\n\n"
            "Mean task accuracy (%), mean ± std over seeds:\n\n" + markdown_table(header, rows)
        )
        parts.append(paired(args, record, setup.tasks))
    parts.append(detection_report(results))
    return "\n\n".join(parts)


def detection_report(results: dict[str, Any]) -> str:
    """AUROC of each noise signal per condition, per task next to the warm-up's accuracy, and
    how the estimated noise of the picks tracks the true share across methods."""
    found = {c: r["detection"] for c, r in results.items() if r.get("detection")}
    if not found:
        return ""
    sizes = list(next(iter(found.values()))["alignment"])
    rows = [
        [c, *[f"{d['alignment'][k]:.3f}" for k in sizes], f"{d['audit']:.3f}"]
        for c, d in found.items()
    ]
    header = ["condition", *[f"alignment, {k} nearest targets" for k in sizes], "audit"]
    text = "Noise detection, AUROC of ranking the wrong labels first:\n\n" + markdown_table(
        header, rows
    )
    tasks = sorted({t for d in found.values() for t in d["per_task"]})
    rows = []
    for c, d in found.items():
        cell = lambda t, key, d=d: (  # noqa: E731
            f"{d['per_task'][t][key]:.2f}" if t in d["per_task"] else "–"
        )
        rows.append([c, "warm-up accuracy", *[cell(t, "warmup_accuracy") for t in tasks]])
        rows.append(["", "alignment AUROC", *[cell(t, "alignment") for t in tasks]])
        rows.append(["", "audit AUROC", *[cell(t, "audit") for t in tasks]])
    text += "\n\nPer task (alignment over the 10 nearest targets):\n\n" + markdown_table(
        ["condition", "", *tasks], rows
    )
    lines = []
    for c, r in results.items():
        pairs = [
            (
                np.mean([x["estimated_noise"] for x in runs]),
                np.mean([x["wrong_in_picks"] for x in runs]),
            )
            for key, runs in r["cells"].items()
            if not key.startswith("aligned-match")  # its picks are non-negative by construction
        ]
        est, true = np.array(pairs).T
        if true.std() > 0 and est.std() > 0:
            lines.append(
                f"- {c}: Pearson r {np.corrcoef(est, true)[0, 1]:.2f} over {len(pairs)} "
                f"selections; estimated {100 * est.min():.0f}–{100 * est.max():.0f}%, true "
                f"{100 * true.min():.0f}–{100 * true.max():.0f}%"
            )
    return text + (
        "\n\nEstimated noise of the picks (share pulling against their targets) against the "
        "true share of wrong labels, across the selections of each condition:\n\n"
        + "\n".join(lines)
    )


def paired(args: argparse.Namespace, record: dict[str, Any], tasks: list[str]) -> str:
    """Paired differences of the recommended and influence-aware selectors against baselines,
    and per-target wins over the label-blind twin."""
    cells = record["cells"]
    lines = []
    for budget in args.budgets:

        def acc(method: str, budget: float = budget) -> np.ndarray | None:
            runs = cells.get(f"{method} @ {budget:g}")
            return None if runs is None else np.array([r["mean_task_accuracy"] for r in runs])

        for method, base in COMPARISONS:
            x, y = acc(method), acc(base)
            if x is not None and y is not None:
                lines.append(f"- @ {budget:.0%}: {method} − {base}: {mean_std(x - y)} points")
        for method, twin in TWINS.items():
            mine, theirs = cells.get(f"{method} @ {budget:g}"), cells.get(f"{twin} @ {budget:g}")
            if mine and theirs:
                gaps = {
                    t: 100
                    * (
                        np.mean([r["per_task"][t] for r in mine])
                        - np.mean([r["per_task"][t] for r in theirs])
                    )
                    for t in tasks
                }
                wins = sum(gap > 0 for gap in gaps.values())
                ties = sum(gap == 0 for gap in gaps.values())
                lines.append(
                    f"- @ {budget:.0%}: {method} beats {twin} on {wins}/{len(tasks)} targets, "
                    f"ties on {ties} ("
                    + ", ".join(f"{t} {gap:+.1f}" for t, gap in gaps.items())
                    + ")"
                )
        select = {
            m: np.mean([r["select_seconds"] for r in cells[f"{m} @ {budget:g}"]])
            for m in INFLUENCE_AWARE
            if f"{m} @ {budget:g}" in cells
        }
        if select:
            lines.append(
                f"- @ {budget:.0%}: selection seconds "
                + ", ".join(f"{m} {s:.1f}" for m, s in select.items())
                + f" (+ {record['features_seconds']:.0f} s warm-up and gradient features: "
                f"{record['warmup_rows']} rows x {record['warmup_epochs']} epochs of training, "
                "one per-example gradient pass over pool and targets)"
            )
    return "Paired differences over seeds (mean ± std):\n\n" + "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
