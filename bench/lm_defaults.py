"""The language-model defaults against kronfluence, on dev tasks (where the defaults were chosen)
and held-out test tasks (only reported).

Per task: the LDS ground truth (models retrained on random halves, cached), then

* infscope's **default recipe**: EK-FAC on the eigen projection with ``dim="auto"`` (the budget
  chosen from the fitted spectrum) and ``damping="auto"`` (the damping chosen from it), final
  model and averaged over the training trajectory;
* kronfluence EK-FAC and K-FAC (empirical Fisher, its defaults);
* a sweep: the eigen projection at fixed budgets × relative dampings (final model; the damping
  scan reuses one fit per budget), the best of which the default is compared to.

LDS per task (mean over queries), wall seconds and peak MB (RSS above the baseline, sampled).
Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python bench/lm_defaults.py --stage truth
    OMP_NUM_THREADS=1 .venv/bin/python bench/lm_defaults.py --stage eval --tasks gpt2-trec
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attribution_quality as aq  # noqa: E402
from quality import anchors, lm_tasks  # noqa: E402
from quality.ours import Method, Workspace, _ekfac, run_method, train_all  # noqa: E402

from infscope.attribution import EKFAC  # noqa: E402
from infscope.curvature import fit_kronecker_basis  # noqa: E402
from infscope.curvature.spectrum import effective_dimension, spectrum_damping  # noqa: E402
from infscope.evaluation import ResourceMeter, current_rss_mb, linear_datamodeling_score  # noqa: E402
from infscope.gradients import GradientExtractor, ProjectionConfig  # noqa: E402
from infscope.gradients.featurize import featurize  # noqa: E402
from infscope.store import FeatureStore  # noqa: E402

DEV = ("gpt2-trec", "lm-banking")
TEST = ("lm-agnews", "lm-lora-trec", "lm-snli-wide", "lm-qnli-deep")
#: retrained models per task (α = 0.5 subsets): dev tasks, test tasks (sized to a 2-core CPU)
SUBSETS = {"dev": 32, "test": 16}
OUT = aq.RESULTS.parent / "lm_defaults"
#: the sweep: fixed budgets (capped at the full basis) × relative dampings (one fit per budget)
SWEEP_DIMS = (4096, 16384, 65536)
SWEEP_DAMPINGS = tuple(float(f"{10.0 ** (k / 2):.3g}") for k in range(-8, 3))
#: candidate rule shares scored on the dev tasks (the library's defaults were chosen from them)
DEV_BUDGET_SHARES = (0.9, 0.98)
DEV_DAMPING_SHARES = (0.3, 0.7)
#: damping shares scored on the default recipe's own fit (cheap: one rescaling each)
CANDIDATE_DAMPING_SHARES = (0.5, 0.7, 0.8, 0.9)


def build_task(name: str):
    if name in DEV:
        return aq.build_task(name, 1.0)
    if name == "lm-agnews":
        return lm_tasks.lm_agnews(aq.DATA_ROOT)
    if name == "lm-lora-trec":
        return lm_tasks.lm_lora_trec(aq.DATA_ROOT, aq.RESULTS / "cache")
    if name == "lm-snli-wide":
        return lm_tasks.lm_snli_wide(aq.DATA_ROOT)
    if name == "lm-qnli-deep":
        return lm_tasks.lm_qnli_deep(aq.DATA_ROOT)
    raise SystemExit(f"unknown task {name!r}; choose from {DEV + TEST}")


def subsets(name: str) -> int:
    return SUBSETS["dev" if name in DEV else "test"]


def truth(name: str) -> None:
    start = time.perf_counter()
    task = build_task(name)
    outcomes, _, cache = aq.ground_truth(task, subsets(name))
    print(
        f"{name}: {subsets(name)} retrained models in {time.perf_counter() - start:.0f} s "
        f"(cache {cache.name})",
        flush=True,
    )


class Recipe:
    """infscope's eigen EK-FAC on one task: bases fit once (final model and trajectory), stores
    per budget; every row's seconds and peak add up the bases and features it reads."""

    def __init__(
        self, task, trained, root: Path, meter: ResourceMeter, basis_options: dict | None = None
    ) -> None:
        self.task, self.trained, self.root, self.meter = task, trained, root, meter
        self.basis_options = basis_options or {}  # fit_kronecker_basis's sketch settings
        self.model = task.make_model(0)
        self.cost: dict[str, tuple[float, float]] = {}
        self.bases: dict[str, list] = {}
        self.stores: dict[str, tuple[FeatureStore, FeatureStore]] = {}

    def _measured(self, name: str, work):
        base, start = current_rss_mb(), time.perf_counter()
        with self.meter.stage(name):
            out = work()
        peak = self.meter.report()[name]["peak_mb"] - base
        self.cost[name] = (time.perf_counter() - start, peak)
        return out

    def checkpoints(self, trajectory: bool):
        return self.trained.trajectory if trajectory else [self.trained.final]

    def basis(self, trajectory: bool) -> list:
        key = "trajectory" if trajectory else "final"
        if key not in self.bases:
            extractor = GradientExtractor(
                self.model, self.task.infscope_task("loss"), ProjectionConfig("identity", None)
            )

            def fit():
                bases = []
                for checkpoint in self.checkpoints(trajectory):
                    self.model.load_state_dict(checkpoint.state)
                    bases.append(
                        fit_kronecker_basis(
                            extractor,
                            self.task.train.examples,
                            batch_size=64,
                            progress=False,
                            **self.basis_options,
                        )
                    )
                return bases

            self.bases[key] = self._measured(f"basis {key}", fit)
        return self.bases[key]

    def store(self, dim, trajectory: bool, tag: str = "") -> tuple[FeatureStore, FeatureStore]:
        key = f"{dim}{tag}-{'trajectory' if trajectory else 'final'}"
        if key not in self.stores:
            bases = self.basis(trajectory)
            config = ProjectionConfig("eigen", dim, basis=bases if trajectory else bases[0])

            def extract():
                train = GradientExtractor(self.model, self.task.infscope_task("loss"), config)
                query = GradientExtractor(self.model, self.task.infscope_task("logprob"), config)
                for checkpoint in self.checkpoints(trajectory):
                    self.model.load_state_dict(checkpoint.state)
                    for extractor, data, gradient, part in (
                        (train, self.task.train, "loss", "train"),
                        (query, self.task.queries, "measurement", "query"),
                    ):
                        featurize(
                            extractor,
                            data.examples,
                            self.root / key / part,
                            checkpoint.name,
                            gradient=gradient,
                            learning_rate=checkpoint.learning_rate,
                            batch_size=64,
                            progress=False,
                        )
                return tuple(FeatureStore.open(self.root / key / p) for p in ("train", "query"))

            self.stores[key] = self._measured(f"features {key}", extract)
        return self.stores[key]

    def row(
        self, dim, damping, trajectory: bool, outcomes, label: str, tag: str = ""
    ) -> tuple[dict, EKFAC]:
        """EK-FAC on the ``dim`` store at ``damping``: LDS, seconds and peak of everything it
        read (basis, features, fit and score)."""
        train, query = self.store(dim, trajectory, tag)
        bases = self.basis(trajectory)
        name = f"ekfac {label}"
        estimator = self._measured(
            name,
            lambda: EKFAC(bases if trajectory else bases[0], damping=damping).fit(train),
        )
        scores = self._measured(name + " score", lambda: estimator.score(query).values)
        parts = [
            f"basis {'trajectory' if trajectory else 'final'}",
            f"features {dim}{tag}-{'trajectory' if trajectory else 'final'}",
            name,
            name + " score",
        ]
        described = estimator.describe()
        rule = described.get("damping_rule", {})
        budget = train.spec.projection.get("budget")
        return {
            "method": label,
            "lds": linear_datamodeling_score(scores.astype(np.float64), outcomes).mean,
            "seconds": sum(self.cost[p][0] for p in parts),
            "peak_mb": max(self.cost[p][1] for p in parts),
            "k": train.feature_dim,
            "damping": estimator.damping,
            "kept_share": [b["kept_share"] for b in budget]
            if isinstance(budget, list)
            else (budget or {}).get("kept_share"),
            "effective_dimension": rule.get("effective_dimension"),
            "refit": bases[0].settings.get("refit"),
        }, estimator


def _lds_at(estimator: EKFAC, query: FeatureStore, damping: float, outcomes) -> float:
    scores = estimator.with_damping(damping).score(query).values.astype(np.float64)
    return float(linear_datamodeling_score(scores, outcomes).mean)


def _shares(estimator: EKFAC) -> dict[str, float]:
    """The damping rule's share ``d(λ) / D`` at each swept relative damping: which share the
    sweep's best damping corresponds to."""
    blocks = [block for spectrum in estimator._spectra() for block in spectrum]
    scale = sum(b.directions for b in blocks)
    return {str(d): effective_dimension(blocks, d) / scale for d in SWEEP_DAMPINGS}


def _damping_shares(estimator: EKFAC, recipe: Recipe, outcomes) -> dict[str, dict]:
    """The default recipe's LDS if the damping rule's share were another candidate (same store and
    fit, the damping the rule would pick at that share): how the share is chosen on dev tasks."""
    blocks = [block for spectrum in estimator._spectra() for block in spectrum]
    query = recipe.store("auto", False)[1]
    out = {}
    for share in CANDIDATE_DAMPING_SHARES:
        damping = spectrum_damping(blocks, share).relative
        out[str(share)] = {"damping": damping, "lds": _lds_at(estimator, query, damping, outcomes)}
    print(f"  damping shares: {out}", flush=True)
    return out


def evaluate(
    name: str,
    dev_choices: bool,
    with_trajectory: bool = True,
    kronfluence: tuple[str, ...] = ("ekfac", "kfac"),
) -> dict:
    """Every row of one task (module docstring)."""
    task = build_task(name)
    trained = train_all(task, task.train, 1)
    outcomes = aq.ground_truth(task, subsets(name))[0]
    meter = ResourceMeter()
    work = Path(tempfile.mkdtemp(prefix=f"lmdefaults-{name}-", dir=OUT))
    rows: list[dict] = []
    report = {"task": name, "split": "dev" if name in DEV else "test", "subsets": subsets(name)}
    report["description"] = task.description
    try:
        recipe = Recipe(task, trained, work, meter)
        for trajectory in (False, True) if with_trajectory else (False,):
            label = f"default: eigen auto, damping auto{', trajectory' if trajectory else ''}"
            row, fitted = recipe.row("auto", "auto", trajectory, outcomes, label)
            if not trajectory:
                row["damping_shares"] = _damping_shares(fitted, recipe, outcomes)
            rows.append(row)
            print(f"  {row}", flush=True)
        sweep = {}
        full = recipe.basis(False)[0].feature_dim
        dims = sorted({min(d, full) for d in SWEEP_DIMS})
        for dim in dims:
            row, fitted = recipe.row(dim, 0.1, False, outcomes, f"sweep k={dim}")
            query = recipe.store(dim, False)[1]
            sweep[dim] = {d: _lds_at(fitted, query, d, outcomes) for d in SWEEP_DAMPINGS}
            report.setdefault("sweep_share", {})[str(dim)] = _shares(fitted)
            best = max(sweep[dim], key=sweep[dim].get)
            rows.append(
                {**row, "method": f"sweep k={dim}, best λ={best:g}", "lds": sweep[dim][best]}
            )
            print(f"  k={dim}: {sweep[dim]}", flush=True)
        report["sweep"] = {str(k): v for k, v in sweep.items()}
        if dev_choices:
            report["dev_choices"] = dev_rule_choices(recipe, outcomes)
        ws = Workspace(task, work / "ws", meter, {"clean": trained})
        cli = Method("cli default: kronecker k=4096, ekfac λ=0.1", "traj", _ekfac(True))
        result = run_method(ws, cli, mislabel=False)
        rows.append(
            {
                "method": cli.name,
                "lds": linear_datamodeling_score(result.scores, outcomes).mean,
                "seconds": result.seconds,
                "peak_mb": result.peak_mb,
            }
        )
        for strategy in kronfluence:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = anchors.kronfluence_ekfac(
                        ws, {"clean": trained}, work, True, False, strategy=strategy
                    )
            except Exception as err:  # an anchor failing must not lose the task's other rows
                print(f"  kronfluence {strategy} FAILED: {type(err).__name__}: {err}", flush=True)
                continue
            rows.append(
                {
                    "method": f"kronfluence {strategy}",
                    "lds": linear_datamodeling_score(result.scores, outcomes).mean,
                    "seconds": result.seconds,
                    "peak_mb": result.peak_mb,
                }
            )
            print(f"  {rows[-1]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["rows"] = rows
    return report


def dev_rule_choices(recipe: Recipe, outcomes) -> dict:
    """On a dev task: the LDS of the final-model recipe at every candidate budget share × damping
    share (how the library's shares were chosen); the library's constants are restored."""
    from infscope.curvature import spectrum

    choices = {}
    defaults = spectrum.BUDGET_SHARE, spectrum.DAMPING_SHARE
    try:
        for share in DEV_BUDGET_SHARES:
            spectrum.BUDGET_SHARE = share
            lds = {}
            for damping_share in DEV_DAMPING_SHARES:
                spectrum.DAMPING_SHARE = damping_share
                row, _ = recipe.row(
                    "auto",
                    "auto",
                    False,
                    outcomes,
                    f"shares {share}/{damping_share}",
                    f"{share}-{damping_share}",
                )
                lds[str(damping_share)] = {"lds": row["lds"], "damping": row["damping"]}
            choices[str(share)] = {"k": row["k"], "kept_share": row["kept_share"], "lds": lds}
            print(f"  budget share {share}: {choices[str(share)]}", flush=True)
    finally:
        spectrum.BUDGET_SHARE, spectrum.DAMPING_SHARE = defaults
    return choices


def _target(rows: list[dict]) -> dict:
    """The default recipe (final model) against the targets: kronfluence's better row + 0.02,
    ≤ 1.5× its seconds and peak MB, within 0.02 of the sweep's best."""
    by = {r["method"]: r for r in rows}
    default = by["default: eigen auto, damping auto"]
    kron = max((r for r in rows if r["method"].startswith("kronfluence")), key=lambda r: r["lds"])
    sweep = max((r for r in rows if r["method"].startswith("sweep")), key=lambda r: r["lds"])
    return {
        "default": default,
        "kronfluence": kron,
        "sweep": sweep,
        "lds_met": default["lds"] >= kron["lds"] + 0.02,
        "time_met": default["seconds"] <= 1.5 * kron["seconds"],
        "memory_met": default["peak_mb"] <= 1.5 * kron["peak_mb"],
        "sweep_met": default["lds"] >= sweep["lds"] - 0.02,
    }


def table(reports: list[dict]) -> str:
    """One markdown row per task: the default recipe against kronfluence and the sweep."""
    lines = [
        "| split | task | default LDS (k, λ rel) | kronfluence better row | sweep best | "
        "LDS ≥ kf + 0.02 | time ≤ 1.5× | memory ≤ 1.5× | within 0.02 of sweep |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    mark = {True: "met", False: "**missed**"}
    for report in reports:
        t = _target(report["rows"])
        d, k, s = t["default"], t["kronfluence"], t["sweep"]
        lines.append(
            f"| {report['split']} | {report['task']} | {d['lds']:.3f} (k = {d['k']:,}, "
            f"λ = {d['damping']:.3g}; {d['seconds']:.0f} s, {d['peak_mb']:.0f} MB) | "
            f"{k['method'].split()[1]} {k['lds']:.3f} ({k['seconds']:.0f} s, {k['peak_mb']:.0f} MB) "
            f"| {s['lds']:.3f} ({s['method'].removeprefix('sweep ')}) | {mark[t['lds_met']]} | "
            f"{mark[t['time_met']]} ({d['seconds'] / k['seconds']:.2f}×) | "
            f"{mark[t['memory_met']]} ({d['peak_mb'] / k['peak_mb']:.2f}×) | {mark[t['sweep_met']]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=("truth", "eval", "table"), default="eval")
    parser.add_argument("--tasks", default=",".join(DEV + TEST))
    parser.add_argument(
        "--no-trajectory", action="store_true", help="only the final-model default recipe"
    )
    parser.add_argument(
        "--kronfluence", default="ekfac,kfac", help="kronfluence strategies to run (comma list)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.tasks.split(",")
    if args.stage == "truth":
        for name in names:
            truth(name)
        return
    if args.stage == "table":
        print(table([json.loads((OUT / f"{n}.json").read_text()) for n in names]))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"=== {name}", flush=True)
        report = evaluate(
            name, name in DEV, not args.no_trajectory, tuple(args.kronfluence.split(","))
        )
        (OUT / f"{name}.json").write_text(json.dumps(report, indent=1, default=float))
        for row in report["rows"]:
            print(
                f"  {row['method']:55s} LDS {row['lds']:.3f}  {row['seconds']:7.1f} s  "
                f"{row['peak_mb']:7.0f} MB  k={row.get('k')}  λ={row.get('damping')}",
                flush=True,
            )


if __name__ == "__main__":
    main()
