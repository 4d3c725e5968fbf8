"""Learned influence predictor (NN-CIFT / MATES): compute LESS influence for a probed 2-10% of the
pool, predict the rest from sentence embeddings, and select with the completed scores.

Set-up, data, caches and training are the targeted-selection benchmark's
(``bench/selection_common.py``, ``bench/selection_targeted.py``). For each of the 8 targets:

* **ground truth**: the ``less`` value of every pool row, its mean cosine gradient influence over
  the target's 64 rows (warm-up model gradient features);
* **probe**: ``--probes`` shares of the pool (one probe per share and seed, shared by every
  target, as one gradient per row serves all targets), sampled by
  :func:`infscope.selection.sample_probe` (``--probe-sampling``: k-means stratified or random);
* **predictors** on the mean-pooled MiniLM embeddings: ``mlp`` (:class:`InfluencePredictor`, one
  per target), ``pair`` (one :class:`InfluencePredictor` for all 8 targets on (row embedding,
  target mean embedding) pairs, NN-CIFT's input), ``ridge`` (scikit-learn ``RidgeCV`` on
  standardised embeddings, a cheap baseline), ``mlp-random`` (``mlp`` on a uniform probe) and
  ``mlp+label`` (``mlp`` on the embedding and a one-hot of the row's label: it reads the label
  tags that no selector of the targeted benchmark sees, so it is reported, never selected with);
* **prediction quality** on the unprobed rows: Spearman and the overlap of the top 5% / 15% by
  the completed scores (probed rows keep computed ones) with the top by computed scores;
* **cost**: seconds per example of this benchmark's gradient extraction (measured once, on the
  whole pool and the targets) and influence scoring, against probe + fit + predict;
* **selection**: top-k of the completed scores (``--select`` predictors at ``--select-probes``)
  against ``less`` (computed scores) and ``random``, trained and evaluated like the targeted
  benchmark (target-task test accuracy; runs cached and shared with it).

Run (from the repository root)::

    flock /tmp/infscope-heavy.lock env OMP_NUM_THREADS=1 .venv/bin/python bench/influence_predictor.py \\
        --pool-size 3000 --epochs 2 --batch-size 16 --warmup 0.5 --warmup-epochs 4 \\
        --markdown bench/results/influence_predictor.md
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
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
)
from selection_targeted import target_pool

PREDICTORS = ("mlp", "pair", "ridge", "mlp-random", "mlp+label")
#: Kronecker gradient extraction of the full MiniLM-L6 (128 tokens, 1 thread, this machine), from
#: docs/benchmarks/speed.md "Gradient-feature extraction throughput": 15.5 examples/s
REAL_MODEL_SECONDS_PER_EXAMPLE = 1 / 15.5


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--targets", type=csv_list(str), help="target tasks [every task]")
    add("--probes", type=csv_list(float), default=[0.02, 0.05, 0.1], help="probed pool shares")
    add("--probe-sampling", choices=("diverse", "random"), default="diverse")
    add("--budgets", type=csv_list(float), default=[0.05, 0.15], help="selected pool shares")
    add(
        "--select",
        type=csv_list(str, PREDICTORS[:4]),
        default=["mlp"],
        help="predictors to select with",
    )
    add("--select-probes", type=csv_list(float), help="probe shares to select with [--probes]")
    add("--seeds", type=csv_list(int), default=[0, 1, 2])
    add("--out", type=Path, help="results directory [bench/results/influence_predictor]")
    add("--markdown", type=Path, help="write the results section here")
    add_setup_arguments(parser)
    args = parser.parse_args(argv)
    finish_setup_arguments(args)
    args.out = args.out or RESULTS / ("influence_predictor" + ("_dev" if args.dev else ""))
    args.select_probes = args.select_probes or args.probes
    return args


def computed_scores(setup: Setup, feats: Features, task: str) -> np.ndarray:
    """LESS's value of every pool row for target ``task`` (mean influence over its rows)."""
    from infscope.selection.targeted import task_influence

    rows = np.flatnonzero([r["task"] == task for r in setup.targets])
    return task_influence(feats.influence[rows], [np.arange(len(rows))], "mean")[0]


def top_overlap(completed: np.ndarray, computed: np.ndarray, share: float) -> float:
    """Share of the top ``share`` by computed scores that is also in the top by ``completed``."""
    k = max(1, int(round(share * len(computed))))
    top = lambda s: set(np.argsort(-s, kind="stable")[:k].tolist())  # noqa: E731
    return len(top(completed) & top(computed)) / k


def ridge_predict(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """scikit-learn RidgeCV on standardised embeddings (alpha by leave-one-out)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    return model.fit(train_x, train_y).predict(x)


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its seconds."""
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - t0


def measure_extraction(setup: Setup) -> dict[str, float]:
    """Seconds per example of the benchmark's gradient extraction (pool and targets, a fresh top:
    the cost does not depend on the weights) and of scoring all pool rows against the targets."""
    from infscope.attribution import GradientSimilarity
    from infscope.store import FeatureStore

    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        model = setup.trainer.new_model(0)
        _, extract = timed(setup._gradients, model, Path(tmp))
        pool, targets = (
            FeatureStore.open(Path(tmp) / "pool"),
            FeatureStore.open(Path(tmp) / "targets"),
        )
        _, score = timed(lambda: GradientSimilarity(normalize="unit").fit(pool).score(targets))
    rows = len(setup.pool) + len(setup.targets)
    return {"per_example": extract / rows, "extract": extract, "score_all": score}


def predictions(
    setup: Setup, feats: Features, truth: dict[str, np.ndarray], share: float, seed: int, name: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Completed score vectors (probed rows computed, the rest predicted) of ``name`` for every
    target, and facts about the fit (probe size, seconds, self-reported validation Spearman)."""
    from infscope.selection import InfluencePredictor, PredictorConfig, sample_probe

    emb, n = feats.embeddings, len(setup.pool)
    if name == "mlp+label":  # the loss gradient depends on the label, the embedding does not
        emb = np.concatenate([emb, np.eye(setup.width)[setup.labels["pool"]]], axis=1)
    diverse = name != "mlp-random" and setup.args.probe_sampling == "diverse"
    probed = sample_probe(n, share, seed=seed, features=emb if diverse else None)
    config = PredictorConfig(seed=seed, device=setup.device.type)
    completed: dict[str, np.ndarray] = {}
    fit_s = predict_s = 0.0
    validation = []
    if name == "pair":
        tasks = list(truth)
        queries = np.stack(
            [
                feats.target_embeddings[[r["task"] == t for r in setup.targets]].mean(0)
                for t in tasks
            ]
        )
        x = np.tile(emb[probed], (len(tasks), 1))
        q = np.repeat(queries, len(probed), axis=0)
        y = np.concatenate([truth[t][probed] for t in tasks])
        groups = np.tile(probed, len(tasks))
        predictor, fit_s = timed(lambda: InfluencePredictor(config).fit(x, y, q, groups=groups))
        validation.append(predictor.summary.validation_spearman)
        for t, query in zip(tasks, queries):
            completed[t], s = timed(predictor.complete, emb, probed, truth[t][probed], query)
            predict_s += s
        return completed, _facts(probed, fit_s / len(tasks), predict_s / len(tasks), validation)
    for t, scores in truth.items():
        if name == "ridge":
            full, s = timed(ridge_predict, emb[probed], scores[probed], emb)
            full[probed] = scores[probed]
            completed[t], fit_s = full, fit_s + s
            continue
        predictor, s = timed(InfluencePredictor(config).fit, emb[probed], scores[probed])
        fit_s += s
        validation.append(predictor.summary.validation_spearman)
        completed[t], s = timed(predictor.complete, emb, probed, scores[probed])
        predict_s += s
    return completed, _facts(probed, fit_s / len(truth), predict_s / len(truth), validation)


def _facts(probed: np.ndarray, fit_s: float, predict_s: float, validation: list) -> dict[str, Any]:
    return {
        "probed": probed,
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
        "validation_spearman": float(np.mean(validation)) if validation else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup = Setup(args, args.out)
    feats = setup.features()
    log(setup.describe(feats))
    from scipy.stats import spearmanr

    from infscope.selection import Pool, build_selector

    targets = args.targets or setup.tasks
    truth = {t: computed_scores(setup, feats, t) for t in targets}
    cost = measure_extraction(setup)
    log(
        f"gradient extraction {1000 * cost['per_example']:.2f} ms/example; scoring all {cost['score_all']:.2f}s"
    )
    quality: list[dict[str, Any]] = []
    completed: dict[tuple[str, float, int], dict[str, np.ndarray]] = {}
    for share in args.probes:
        for seed in args.seeds:
            for name in PREDICTORS:
                scores, facts = predictions(setup, feats, truth, share, seed, name)
                completed[(name, share, seed)] = scores
                rest = np.setdiff1d(np.arange(len(setup.pool)), facts["probed"])
                for t in targets:
                    quality.append(
                        {
                            "predictor": name,
                            "probe": share,
                            "seed": seed,
                            "target": t,
                            "n_probed": int(len(facts["probed"])),
                            "spearman": float(spearmanr(scores[t][rest], truth[t][rest]).statistic),
                            **{
                                f"top{b:g}": top_overlap(scores[t], truth[t], b)
                                for b in args.budgets
                            },
                            "fit_seconds": facts["fit_seconds"],
                            "predict_seconds": facts["predict_seconds"],
                            "validation_spearman": facts["validation_spearman"],
                        }
                    )
            log(
                f"probe {share:.0%} seed {seed}: "
                + ", ".join(
                    f"{name} {np.mean([q['spearman'] for q in quality if (q['predictor'], q['probe'], q['seed']) == (name, share, seed)]):.3f}"
                    for name in PREDICTORS
                )
            )

    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    ids = setup.states["pool"].ids
    for task in targets:
        predicted = [(name, share) for name in args.select for share in args.select_probes]
        methods = ["random", "less", *(f"{name}@{share:g}" for name, share in predicted)]
        for method, source in zip(methods, [None, None, *predicted]):
            for budget in args.budgets:
                for seed in args.seeds:
                    if source is None:  # random, or less on the computed influence
                        pool = target_pool(setup, feats, task, method, None)
                        selector = build_selector(method, seed=seed)
                    else:
                        pool = Pool(ids=ids, scores=completed[(*source, seed)][task])
                        selector = build_selector("top-k", seed=seed)
                    selection = selector.select(pool, budget)
                    only = None if method == "random" else [task]
                    run = setup.train_run(selection.indices, seed, tasks=only)
                    runs.append(
                        {
                            "target": task,
                            "method": method,
                            "budget": budget,
                            "seed": seed,
                            "accuracy": run["per_task"][task],
                            "n": len(selection),
                            "target_task_share": float(
                                np.mean(setup.pool_task[selection.indices] == task)
                            ),
                        }
                    )
                log(
                    f"{task} {method} {budget:.0%}: "
                    + " ".join(f"{100 * r['accuracy']:.1f}" for r in runs[-len(args.seeds) :])
                    + f" (trained {setup.trained} runs, {time.perf_counter() - started:.0f}s)"
                )
    (args.out / "quality.json").write_text(json.dumps(quality, indent=1))
    (args.out / "runs.json").write_text(json.dumps(runs, indent=1))
    (args.out / "cost.json").write_text(json.dumps(cost, indent=1))
    text = report(args, setup, feats, quality, runs, cost, targets)
    publish(text, args.markdown)
    log(f"done; selection part {time.perf_counter() - started:.0f}s, {setup.trained} runs trained")
    return 0


def report(
    args: argparse.Namespace,
    setup: Setup,
    feats: Features,
    quality: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    cost: dict[str, float],
    targets: list[str],
) -> str:
    """The markdown section: prediction quality, cost, selection accuracy and comparisons."""
    from infscope.selection import compare_methods, seed_stats

    pick = lambda rows, **kw: [r for r in rows if all(r[k] == v for k, v in kw.items())]  # noqa: E731

    def over_seeds(rows: list[dict[str, Any]], key: str) -> str:
        """Mean over targets per seed, then mean ± std over seeds."""
        per_seed = [np.mean([r[key] for r in pick(rows, seed=s)]) for s in args.seeds]
        return seed_stats(per_seed).format(scale=1.0, digits=3)

    parts = [
        f"Command: `{setup.command}`",
        "Machine: " + setup.machine_line(),
        "Set-up: " + setup.describe(feats),
        f"Probes sampled {args.probe_sampling} (k-means stratified on the embeddings unless "
        "`mlp-random`); one probe per share and seed, shared by every target.",
    ]
    header = ["predictor", "probe", "n probed", "Spearman (unprobed)"]
    header += [f"top-{b:.0%} overlap" for b in args.budgets] + [
        "validation Spearman (self-reported)"
    ]
    rows = []
    for share in args.probes:
        for name in PREDICTORS:
            rs = pick(quality, predictor=name, probe=share)
            validation = (
                "—"
                if rs[0]["validation_spearman"] is None
                else over_seeds(rs, "validation_spearman")
            )
            rows.append(
                [name, f"{share:.0%}", str(rs[0]["n_probed"]), over_seeds(rs, "spearman")]
                + [over_seeds(rs, f"top{b:g}") for b in args.budgets]
                + [validation]
            )
    parts.append(
        "Prediction quality, mean over the targets, mean ± std over seeds "
        f"{args.seeds}: Spearman of predicted vs computed LESS scores on the unprobed rows; top-k "
        "overlap: share of the computed top-k that the completed scores (probed rows computed) "
        "also rank in their top-k:\n\n" + markdown_table(header, rows)
    )
    per_target = [
        [t]
        + [
            seed_stats(
                [r["spearman"] for r in pick(quality, predictor=name, probe=share, target=t)]
            ).format(1.0, 2)
            for name, share in [("mlp", s) for s in args.probes]
            + [("ridge", args.probes[-1]), ("pair", args.probes[-1])]
        ]
        for t in targets
    ]
    parts.append(
        "Spearman on the unprobed rows per target (mean ± std over seeds):\n\n"
        + markdown_table(
            [
                "target",
                *(f"mlp {s:.0%}" for s in args.probes),
                f"ridge {args.probes[-1]:.0%}",
                f"pair {args.probes[-1]:.0%}",
            ],
            per_target,
        )
    )
    n, m = len(setup.pool), len(setup.targets)
    cost_rows = []
    for label, per_example in (
        ("this benchmark's model (top layer, 64 tokens, measured)", cost["per_example"]),
        (
            "full MiniLM-L6, 128 tokens (15.5 ex/s, docs/benchmarks.md)",
            REAL_MODEL_SECONDS_PER_EXAMPLE,
        ),
    ):
        everything = per_example * (n + m) + cost["score_all"]
        cost_rows.append([label, "all (computed)", "—", f"{everything:.1f}", "—"])
        for share in args.probes:
            rs = pick(quality, predictor="mlp", probe=share)
            fit = np.mean([r["fit_seconds"] + r["predict_seconds"] for r in rs]) * len(targets)
            k = rs[0]["n_probed"]
            probed = per_example * (k + m) + cost["score_all"] * k / n + fit
            cost_rows.append(
                [
                    label,
                    f"probe {share:.0%} + mlp",
                    f"{fit:.1f}",
                    f"{probed:.1f}",
                    f"{1 - probed / everything:.0%}",
                ]
            )
    parts.append(
        f"Cost of scores for all {n} pool rows and {len(targets)} targets (seconds): gradients of "
        f"the probed pool rows and the {m} target rows, influence scoring, and for the predictor "
        "its fits and predictions (per-target mlp, all targets):\n\n"
        + markdown_table(["gradient cost", "scores", "predictor s", "total s", "saving"], cost_rows)
    )
    methods = list(dict.fromkeys(r["method"] for r in runs))
    for budget in args.budgets:
        results = {
            t: {
                mth: [r["accuracy"] for r in pick(runs, target=t, method=mth, budget=budget)]
                for mth in methods
            }
            for t in targets
        }
        table = [[t, *(seed_stats(results[t][mth]).format() for mth in methods)] for t in targets]
        per_seed = {mth: np.mean([results[t][mth] for t in targets], axis=0) for mth in methods}
        table.append(
            ["**mean over targets**", *(seed_stats(per_seed[mth]).format() for mth in methods)]
        )
        share = [
            f"{np.mean([r['target_task_share'] for r in pick(runs, method=mth, budget=budget)]):.2f}"
            for mth in methods
        ]
        table.append(["target-task share of picks", *share])
        lines = [
            "- " + compare_methods(results, mth, base).text()
            for mth in methods
            if mth not in ("random", "less")
            for base in ("less", "random")
        ]
        parts.append(
            f"Selection at {budget:.0%} ({pick(runs, budget=budget)[0]['n']} of {n} rows): target-task "
            f"test accuracy (%), mean ± std over seeds {args.seeds}; `NAME@p` = top-k of the scores "
            "completed by predictor NAME from a probe of share p:\n\n"
            + markdown_table(["target", *methods], table)
            + "\n\n"
            + "\n".join(lines)
        )
    return "\n\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
