"""Attribution quality side by side: infscope's estimators and anchor libraries on the same
models, data and checkpoints, scored by the linear datamodeling score (LDS) and by how well
self-influence finds flipped labels.

For each task (in this order; ``--tasks`` picks some):

1. ``digits-logreg`` — scikit-learn digits, multinomial logistic regression (L-BFGS, L2);
2. ``digits-mlp`` — digits, MLP 64→32→10 (SGD);
3. ``minilm-sst2`` — SST-2 with the MiniLM-L6 encoder: lower layers frozen and cached, the top
   layer's [CLS] path + pooler + head fine-tuned on the cached states;
4. ``gpt2-trec`` — a 2-layer GPT-2 on TREC questions as prompt/completion pairs (LDS only);
5. ``lm-banking`` — a 2-layer GPT-2 pre-trained on the shared banking77/TREC/SMS texts, then
   fine-tuned on banking77 intents as prompt/completion pairs (LDS only),

the script (a) trains the model (a trajectory of checkpoints for TracIn; independently trained
models for TRAK ensembles), (b) computes the LDS ground truth once — M models retrained on random
α = 0.5 subsets via ``RetrainingRunner``, cached under ``bench/results/attribution_quality/`` so a
rerun retrains nothing — and a 10%-flipped-label variant for mislabel AUC, (c) runs every infscope
estimator and every installed anchor library (``bench/install_anchors.sh``) and (d) prints and
writes one table per task: method, LDS mean with its 95% bootstrap CI over queries, mislabel AUC,
seconds and peak memory (RSS above the stage's starting RSS, sampled by ``ResourceMeter``).

Ground truth: the LDS measurement is the query's negative margin (``logsumexp(other logits) −
logit[label]``); per query Spearman correlation is unchanged by any monotone transform of it, and
cross-entropy = softplus(negative margin), so the same LDS holds for the query loss. For the LM it is
``−log p(completion | prompt)``. Damping: every estimator runs with its default (stated in its
row); ``select_damping`` then picks λ on a *separate* set of held-out queries (same retrained
models) for each damped infscope estimator, and the one with the best held-out LDS is reported
as infscope's best.

Run from the repository root, one heavy process at a time, on one thread::

    .venv/bin/python bench/attribution_quality.py                  # everything, ~30 min on 1 CPU
    .venv/bin/python bench/attribution_quality.py --tasks digits-logreg --methods tracin,captum
    .venv/bin/python bench/attribution_quality.py --scale 4 --threads 16   # a bigger machine
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from infscope.evaluation import (
    LDSConfig,
    ResourceMeter,
    RetrainingOutcomes,
    lds_ground_truth,
    linear_datamodeling_score,
    mislabel_detection,
)
from infscope.evaluation.damping import DEFAULT_GRID

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import cpu_model
from quality import anchors, tasks  # noqa: E402
from quality.ours import (  # noqa: E402
    Result,
    Workspace,
    eigen_methods,
    methods,
    run_method,
    run_selection,
    train_all,
)

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = ROOT.parent / "shared" / "data"  # the shared data folder sits beside the checkout
RESULTS = ROOT / "bench" / "results" / "attribution_quality"
ALL_TASKS = (
    "digits-logreg",
    "digits-mlp",
    "digits-mlp-128",
    "minilm-sst2",
    "gpt2-trec",
    "lm-banking",
)
ANCHORS = ("kronfluence", "traker", "captum", "dattri", "cleanlab")
DAMPING_GRID = DEFAULT_GRID  # relative half decades 1e-3 … 10; select_damping widens it at an edge
# default retrained models per task (scaled by --scale)
SUBSETS = {
    "digits-logreg": 100,
    "digits-mlp": 100,
    "digits-mlp-128": 100,
    "minilm-sst2": 100,
    "gpt2-trec": 50,
    "lm-banking": 50,
}
# seconds per stage at --scale 1 on one 2026 AMD EPYC thread (measured; printed as estimates)
ESTIMATES = {
    "digits-logreg": {"setup": 2, "retrain": 5, "infscope": 80, "anchors": 50},
    "digits-mlp": {"setup": 2, "retrain": 5, "infscope": 15, "anchors": 155},
    "digits-mlp-128": {"setup": 3, "retrain": 8, "infscope": 60, "anchors": 300},
    "minilm-sst2": {"setup": 35, "retrain": 115, "infscope": 65, "anchors": 790},
    "gpt2-trec": {"setup": 6, "retrain": 150, "infscope": 35, "anchors": 65},
    "lm-banking": {"setup": 150, "retrain": 120, "infscope": 60, "anchors": 120},
}
# (anchor row prefix, infscope row prefix) pairs for the sign / agreement check
PAIRS = (  # (substrings of the anchor row, substrings of the infscope row)
    (("kronfluence ekfac",), ("ekfac (λ",)),
    (("kronfluence ekfac (empirical",), ("ekfac (eigen", "empirical")),
    (("kronfluence ekfac (true",), ("ekfac (eigen", "true")),
    (("traker (1 model",), ("trak (1 model",)),
    (("traker (", "models"), ("trak (", "models")),
    (("captum TracInCP",), ("tracin",)),
    (("dattri IF explicit",), ("influence (model Hessian, auto",)),
    (("dattri IF CG", "= our default"), ("influence (model Hessian, CG",)),
    (("dattri DataInf",), ("datainf",)),
)


def build_task(name: str, scale: float):
    if name == "digits-logreg":
        return tasks.digits_logistic(scale)
    if name == "digits-mlp":
        return tasks.digits_mlp(scale)
    if name == "digits-mlp-128":
        return tasks.digits_mlp(scale, hidden=128)
    if name == "minilm-sst2":
        return tasks.text_classifier(scale, DATA_ROOT, RESULTS / "cache")
    if name == "gpt2-trec":
        return tasks.tiny_gpt2(scale, DATA_ROOT)
    if name == "lm-banking":
        return tasks.pretrained_lm(scale, DATA_ROOT, RESULTS / "cache")
    raise SystemExit(f"unknown task {name!r}; choose from {ALL_TASKS}")


def estimate(task: str, stage: str, scale: float) -> str:
    seconds = ESTIMATES[task][stage] * (scale**2 if stage in ("retrain", "anchors") else scale)
    return f"~{seconds / 60:.1f} min" if seconds >= 90 else f"~{seconds:.0f} s"


def wanted(name: str, filters: list[str] | None) -> bool:
    return not filters or any(f.lower() in name.lower() for f in filters)


def ground_truth(task, subsets: int) -> tuple[RetrainingOutcomes, RetrainingOutcomes]:
    """Retrain on ``subsets`` random halves (cached); outcomes for the LDS and held-out queries."""
    n_query = len(task.queries)

    def train_fn(indices: np.ndarray, seed: int) -> np.ndarray:
        model, _ = task.train_model(task.train.subset(indices), seed=int(seed))
        return np.concatenate(
            [task.measure(model, task.queries), task.measure(model, task.heldout)]
        )

    key = hashlib.sha256(task.description.encode()).hexdigest()[:10]
    cache = RESULTS / f"lds-{task.name}-{key}-M{subsets}"
    outcomes = lds_ground_truth(
        train_fn, len(task.train), LDSConfig(subsets, 0.5, 0), cache, progress=sys.stderr.isatty()
    )
    part = lambda cols: RetrainingOutcomes(  # noqa: E731
        outcomes.masks, outcomes.outputs[:, cols], outcomes.seeds, outcomes.seconds
    )
    return part(slice(0, n_query)), part(slice(n_query, None)), cache


def evaluate(result: Result, outcomes: RetrainingOutcomes, flipped) -> dict:
    row = {
        "method": result.method,
        "library": result.family,
        "seconds": round(result.seconds, 2),
        "peak_mb": round(result.peak_mb, 1),
        "note": result.note,
    }
    if result.scores is not None:
        lds = linear_datamodeling_score(result.scores, outcomes)
        row.update(lds=lds.mean, ci_low=lds.ci_low, ci_high=lds.ci_high)
    if result.self_influence is not None and flipped is not None:
        report = mislabel_detection(result.self_influence, flipped)
        row.update(auc=report.auc, found_at_10=report.found_at.get(0.1))
    row.update(result.extra.get("row", {}))
    return row


def agreement(rows: list[Result], k: int = 10) -> list[dict]:
    """Does an anchor rank training examples like the matching infscope method? Spearman of all
    scores (sign check: > 0 means the same direction) and mean top-k helpful overlap per query."""
    out = []
    by_name = {r.method: r for r in rows if r.scores is not None}
    for needles, ours_needles in PAIRS:
        matching = [  # every untuned infscope row of the family (e.g. each eigen budget)
            r
            for n, r in by_name.items()
            if r.family == "infscope"
            and not n.startswith("**")
            and "tuned" not in n
            and all(x in n for x in ours_needles)
        ]
        for theirs, ours in (
            (t, o)
            for t in by_name.values()
            if t.family != "infscope" and all(n in t.method for n in needles)
            for o in matching
        ):
            rho = spearmanr(theirs.scores.ravel(), ours.scores.ravel()).statistic
            top_t = np.argsort(-theirs.scores, axis=1)[:, :k]
            top_o = np.argsort(-ours.scores, axis=1)[:, :k]
            overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_t, top_o)])
            out.append(
                {
                    "anchor": theirs.method,
                    "infscope": ours.method,
                    "spearman": float(rho),
                    f"top{k}_overlap": float(overlap),
                }
            )
    return out


def markdown_table(task_name: str, rows: list[dict]) -> str:
    lines = [
        "| method | library | LDS (95% CI) | mislabel AUC | seconds | peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lds = (
            f"{row['lds']:.3f} ({row['ci_low']:.3f}, {row['ci_high']:.3f})" if "lds" in row else "—"
        )
        auc = f"{row['auc']:.3f}" if "auc" in row else "—"
        method = row["method"] + (f" — {row['note']}" if row.get("note") else "")
        lines.append(
            f"| {method} | {row['library']} | {lds} | {auc} | {row['seconds']:.1f} | {row['peak_mb']:.0f} |"
        )
    return "\n".join(lines)


def family_name(method: str) -> str:
    """A method's row name without its damping: ``"trak (1 model, λ=1 rel)"`` → ``"trak (1
    model)"``."""
    return re.sub(r"\s*\(λ=[^)]*\)|,\s*λ=[^)]*", "", method)


def defaults_table(rows: list[dict], selections: dict[str, dict]) -> str:
    """Each damped estimator at its default against the same estimator tuned by select_damping
    (on held-out queries), next to the gradient dot product; and what the selection cost."""
    by_method = {row["method"]: row for row in rows}
    dot = by_method.get("dot", {}).get("lds")
    lines = [
        "| estimator | default LDS | tuned λ | tuned LDS | default − tuned | default − dot "
        "| select_damping ÷ one fit+score |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, selection in selections.items():
        default = by_method.get(name, {}).get("lds")
        prefix = f"{family_name(name)}, tuned"
        tuned = next(
            (r.get("lds") for r in rows if r["method"].removeprefix("**best: ").startswith(prefix)),
            None,
        )
        if default is None or tuned is None:
            continue
        ratio = selection.get("cost_ratio")
        lines.append(
            f"| {name} | {default:.3f} | {selection['chosen']:g} | {tuned:.3f} | "
            f"{default - tuned:+.3f} | {'—' if dot is None else f'{default - dot:+.3f}'} | "
            f"{'—' if ratio is None else f'{ratio:.1f}×'} |"
        )
    return "\n".join(lines)


def run_task(name: str, args, report: dict) -> None:
    scale = args.scale
    subsets = args.subsets or max(10, int(round(SUBSETS[name] * scale)))
    print(f"\n=== {name} (scale {scale}, M = {subsets} retrained models)", flush=True)
    t0 = time.perf_counter()
    print(
        f"[setup] data, model, training, 10% flipped-label copy: estimate {estimate(name, 'setup', scale)}",
        flush=True,
    )
    task = build_task(name, scale)
    if args.projection_dim and task.projection.kind == "kronecker":
        task.projection = dataclasses.replace(task.projection, dim=args.projection_dim)
        task.settings["features"] = f"kronecker k={args.projection_dim}"
    print(f"  infscope features: {task.settings.get('features')}", flush=True)
    print(f"  {task.description}", flush=True)
    trained = {"clean": train_all(task, task.train, task.ensemble)}
    if task.noisy_train is not None:
        trained["noisy"] = train_all(task, task.noisy_train, task.ensemble)
    setup = time.perf_counter() - t0
    print(f"  setup took {setup:.1f} s", flush=True)

    print(
        f"[retrain] LDS ground truth, {subsets} models on α=0.5 subsets (cached): estimate {estimate(name, 'retrain', scale)} when not cached",
        flush=True,
    )
    t0 = time.perf_counter()
    outcomes, heldout_outcomes, cache = ground_truth(task, subsets)
    retrain = time.perf_counter() - t0
    print(
        f"  took {retrain:.1f} s (training seconds in the cache: {outcomes.seconds.sum():.1f}); cache {cache.relative_to(ROOT)}",
        flush=True,
    )

    meter = ResourceMeter()
    work = Path(tempfile.mkdtemp(prefix=f"work-{name}-", dir=RESULTS))
    results: list[Result] = []
    selections: dict[str, dict] = {}
    try:
        basis_options = {
            key: value
            for key, value in (
                ("max_exact_dim", args.max_exact_dim),
                ("sketch_rank", args.sketch_rank),
            )
            if value is not None
        }
        if basis_options:
            print(f"  eigenbases fit with {basis_options}", flush=True)
        ws = Workspace(task, work, meter, trained, basis_options)
        print(f"[infscope] estimators: estimate {estimate(name, 'infscope', scale)}", flush=True)
        t0 = time.perf_counter()
        candidates = methods(task)
        if task.projection.kind == "kronecker":  # the eigen projection at the same budget(s)
            dims = args.eigen_dims or [task.projection.dim]
            candidates += eigen_methods(task, dims)
        chosen = [m for m in candidates if wanted(m.name, args.methods)]
        for method in chosen:
            start = time.perf_counter()
            try:
                results.append(run_method(ws, method, mislabel=True))
            except Exception as err:  # one failure must not lose the other rows
                traceback.print_exc()
                results.append(
                    Result(method.name, "infscope", note=f"FAILED: {type(err).__name__}: {err}")
                )
            print(f"  {method.name}: {time.perf_counter() - start:.1f} s", flush=True)
        # damping chosen by LDS on the held-out queries, for every damped estimator: one row
        # per estimator ("tuned"), and the best of them marked as infscope's best
        best = None
        for method in chosen:
            if not method.damped or args.no_tuning:
                continue
            start = time.perf_counter()
            try:
                result, selection = run_selection(ws, method, heldout_outcomes, DAMPING_GRID)
            except Exception as err:
                traceback.print_exc()
                print(f"  select_damping {method.name} FAILED: {err}")
                continue
            selections[method.name] = selection
            score = selection["lds"][str(selection["chosen"])]
            result.method = (
                f"{family_name(method.name)}, tuned: λ={selection['chosen']:g} rel "
                f"(held-out LDS {score:.3f})"
            )
            results.append(result)
            print(
                f"  select_damping {method.name}: λ={selection['chosen']:g} (held-out LDS "
                f"{score:.3f}, widened {selection['widened']}x): {selection['seconds']:.2f} s = "
                f"{selection['cost_ratio']:.1f}x one fit+score ({selection['one_fit_seconds']:.2f} "
                f"s); {time.perf_counter() - start:.1f} s in all",
                flush=True,
            )
            if best is None or score > best[0]:
                best = (score, result)
        if best is not None:
            best[1].method = f"**best: {best[1].method}**"
        infscope_seconds = time.perf_counter() - t0

        print(
            f"[anchors] {', '.join(a for a in ANCHORS if wanted(a, args.anchors))}: estimate {estimate(name, 'anchors', scale)}",
            flush=True,
        )
        t0 = time.perf_counter()
        anchor_runs = []
        if wanted("kronfluence", args.anchors):
            anchor_runs.append(
                ("kronfluence", lambda: [anchors.kronfluence_ekfac(ws, trained, work, True, True)])
            )
            anchor_runs.append(
                ("kronfluence", lambda: [anchors.kronfluence_ekfac(ws, trained, work, False, True)])
            )
        if task.kind == "classification":
            if wanted("traker", args.anchors):
                anchor_runs.append(("traker", lambda: anchors.traker_trak(ws, trained, work, True)))
            if wanted("captum", args.anchors):
                anchor_runs.append(
                    ("captum", lambda: [anchors.captum_tracin(ws, trained, work, True)])
                )
            if wanted("dattri", args.anchors) and task.projection.kind == "identity":
                anchor_runs.append(("dattri", lambda: anchors.dattri_methods(ws, trained, True)))
            if wanted("cleanlab", args.anchors):
                anchor_runs.append(("cleanlab", lambda: [anchors.cleanlab_scores(ws)]))
        for library, run in anchor_runs:
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    new = run()
                results.extend(new)
                print(
                    f"  {', '.join(r.method for r in new)}: {time.perf_counter() - start:.1f} s",
                    flush=True,
                )
            except Exception as err:
                traceback.print_exc()
                line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                results.append(Result(library, library, note=f"FAILED: {line}"))
                print(f"  {library} FAILED: {line}", flush=True)
        anchor_seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [evaluate(r, outcomes, task.flipped) for r in results]
    checks = agreement(results)
    table = markdown_table(name, rows)
    defaults = defaults_table(rows, selections)
    print(f"\n{name}: {task.description}\n")
    print(table)
    print(f"\n{defaults}")
    if checks:
        print(
            "\nagreement with the matching infscope estimator (Spearman of all scores; top-10 overlap):"
        )
        for c in checks:
            print(
                f"  {c['anchor']} vs {c['infscope']}: ρ = {c['spearman']:.3f}, top-10 overlap {c['top10_overlap']:.2f}"
            )
    report["tasks"][name] = {
        "description": task.description,
        "features": task.settings.get("features"),
        "n_train": len(task.train),
        "n_queries": len(task.queries),
        "n_heldout": len(task.heldout),
        "subsets": subsets,
        "retrain_seconds_cached": float(outcomes.seconds.sum()),
        "seconds": {
            "setup": setup,
            "retrain": retrain,
            "infscope": infscope_seconds,
            "anchors": anchor_seconds,
        },
        "rows": rows,
        "agreement": checks,
        "damping_selection": selections,
        "markdown": table,
        "defaults_markdown": defaults,
    }


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in (
        "torch",
        "transformers",
        "numpy",
        "scikit-learn",
        "infscope",
        "kronfluence",
        "traker",
        "captum",
        "dattri",
        "cleanlab",
        "bergson",
    ):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks", default=",".join(ALL_TASKS), help=f"comma-separated, from {ALL_TASKS}"
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated substrings of infscope method names (default: all)",
    )
    parser.add_argument(
        "--anchors",
        default=None,
        help=f"comma-separated anchor libraries, from {ANCHORS} (default: all; one that is not installed gets a FAILED row; 'none' for none)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply training-set sizes (digits: at most 1.5x), queries and retrained models",
    )
    parser.add_argument(
        "--subsets",
        type=int,
        default=None,
        help="retrained models per task (default: per task, scaled)",
    )
    parser.add_argument(
        "--projection-dim",
        type=int,
        default=None,
        help="k of the Kronecker projection of the MiniLM and GPT-2 tasks (default 4096)",
    )
    parser.add_argument(
        "--eigen-dims",
        default=None,
        help="comma-separated feature budgets of the eigen-projected EK-FAC rows of the MiniLM "
        "and GPT-2 tasks, 0 = full rank (default: the Kronecker k)",
    )
    parser.add_argument(
        "--max-exact-dim",
        type=int,
        default=None,
        help="eigen rows: factor sides up to this size are eigendecomposed exactly, wider ones "
        "sketched (default: the library's, 4096)",
    )
    parser.add_argument(
        "--sketch-rank",
        type=int,
        default=None,
        help="eigen rows: Nyström columns of a sketched factor side (default: the library's, 1024)",
    )
    parser.add_argument(
        "--no-tuning",
        action="store_true",
        help="skip the select_damping rows (defaults only: e.g. for a curve over --eigen-dims)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)"
    )
    parser.add_argument("--markdown", type=Path, default=RESULTS / "attribution_quality.md")
    parser.add_argument("--json", type=Path, default=RESULTS / "attribution_quality.json")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    args.anchors = [a.strip() for a in args.anchors.split(",")] if args.anchors else None
    args.eigen_dims = (
        [int(d) or None for d in args.eigen_dims.split(",")] if args.eigen_dims else None
    )

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"torch threads: {torch.get_num_threads()} (torch.set_num_threads({args.threads}))")
    report = {
        "command": " ".join([sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "threads": args.threads,
            "platform": platform.platform(),
        },
        "versions": versions(),
        "scale": args.scale,
        "tasks": {},
    }
    start = time.perf_counter()
    for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        run_task(name, args, report)
        report["wall_seconds"] = time.perf_counter() - start
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float))
    sections = [
        f"### {name}\n\n{entry['description']}; infscope features: {entry['features']}; "
        f"M = {entry['subsets']} retrained models.\n\n{entry['markdown']}\n\n"
        f"{entry['defaults_markdown']}"
        for name, entry in report["tasks"].items()
    ]
    args.markdown.write_text("\n\n".join(sections) + "\n")
    print(
        f"\nwall time {(time.perf_counter() - start) / 60:.1f} min; wrote {args.markdown} and {args.json}"
    )


if __name__ == "__main__":
    main()
