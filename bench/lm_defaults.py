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
from benchutil import markdown_table  # noqa: E402
from quality import anchors, lm_tasks  # noqa: E402
from quality.ours import Method, Workspace, _ekfac, run_method, train_all  # noqa: E402

from infscope.attribution import EKFAC  # noqa: E402
from infscope.curvature import fit_kronecker_basis  # noqa: E402
from infscope.curvature.spectrum import (  # noqa: E402
    EIGEN_DAMPING_SHARE,
    effective_dimension,
    spectrum_damping,
)
from infscope.evaluation import (  # noqa: E402
    ResourceMeter,
    current_rss_mb,
    lds_difference,
    linear_datamodeling_score,
)
from infscope.gradients import GradientExtractor, ProjectionConfig  # noqa: E402
from infscope.gradients.featurize import featurize  # noqa: E402
from infscope.store import FeatureStore  # noqa: E402

DEV = ("gpt2-trec", "lm-banking", "lm-lora-banking", "lm-lora-sst2")
TEST = ("lm-agnews", "lm-lora-trec", "lm-snli-wide", "lm-qnli-deep")
#: retrained models per task (α = 0.5 subsets): dev tasks, test tasks (sized to a 2-core CPU)
SUBSETS = {"dev": 32, "test": 16}
#: classification tasks (``attribution_quality.py``'s, its ground truths): the LM rules
#: must not hurt an encoder classifier on the eigen projection (only reported)
CLASSIFICATION = ("minilm-sst2", "digits-logreg", "digits-mlp")
#: of those, the dev tasks of the classification damping shares (``bench/auto_damping.py``)
CLASSIFICATION_DEV = ("digits-logreg", "digits-mlp")
OUT = aq.RESULTS.parent / "lm_defaults"
#: the sweep: fixed budgets (capped at the full basis) × relative dampings (one fit per budget)
SWEEP_DIMS = (4096, 16384, 65536)
SWEEP_DAMPINGS = tuple(float(f"{10.0 ** (k / 2):.3g}") for k in range(-8, 3))
#: the dev grid (``--grid``): damping shares × budget rules (budget share, the share of
#: ``min(n, D)`` the budget's damping resolves — ``"same"``: the damping share the scorer uses)
GRID_DAMPING_SHARES = (0.5, 0.8, 0.9)
GRID_BUDGET_SHARES = (0.95, 0.98)
GRID_BUDGET_DAMPING_SHARES = ("0.25", "0.5", "same")
#: the damping profile (``--damping-profile``): relative dampings the default rows are rescored at
PROFILE_DAMPINGS = tuple(float(f"{10.0 ** (k / 2):.3g}") for k in range(-12, 5))
#: damping shares scored on the default recipe's own fit (cheap: one rescaling each)
CANDIDATE_DAMPING_SHARES = (0.5, 0.7, 0.8, 0.9)


def build_task(name: str):
    if name == "lm-lora-banking":
        return aq.tasks.pretrained_lm(1.0, aq.DATA_ROOT, aq.RESULTS / "cache", lora=True)
    if name == "lm-lora-sst2":
        return lm_tasks.lm_lora_sst2(aq.DATA_ROOT, aq.RESULTS / "cache")
    if name in DEV or name in CLASSIFICATION:
        return aq.build_task(name, 1.0)
    if name == "lm-agnews":
        return lm_tasks.lm_agnews(aq.DATA_ROOT)
    if name == "lm-lora-trec":
        return lm_tasks.lm_lora_trec(aq.DATA_ROOT, aq.RESULTS / "cache")
    if name == "lm-snli-wide":
        return lm_tasks.lm_snli_wide(aq.DATA_ROOT)
    if name == "lm-qnli-deep":
        return lm_tasks.lm_qnli_deep(aq.DATA_ROOT)
    raise SystemExit(f"unknown task {name!r}; choose from {DEV + TEST + CLASSIFICATION}")


def subsets(name: str) -> int:
    if name in CLASSIFICATION:
        return aq.SUBSETS[name]
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
        #: each row's scores (by its label), for the paired differences (:func:`paired`)
        self.scores: dict[str, np.ndarray] = {}

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

    def store(
        self, dim, trajectory: bool, tag: str = "", budget: dict | None = None
    ) -> tuple[FeatureStore, FeatureStore]:
        """Train and query stores at ``dim`` (``budget``: ``ProjectionConfig``'s budget-rule
        shares for ``dim="auto"``; ``tag`` names a store with non-default ones)."""
        key = f"{dim}{tag}-{'trajectory' if trajectory else 'final'}"
        if key not in self.stores:
            bases = self.basis(trajectory)
            config = ProjectionConfig(
                "eigen", dim, basis=bases if trajectory else bases[0], **(budget or {})
            )

            def extract():
                train = GradientExtractor(self.model, self.task.infscope_task("loss"), config)
                measurement = "margin" if self.task.kind == "classification" else "logprob"
                query = GradientExtractor(self.model, self.task.infscope_task(measurement), config)
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

    def forget(self, dim, trajectory: bool, tag: str = "") -> None:
        """Remove a store once scored (the grid's stores would fill the disk)."""
        key = f"{dim}{tag}-{'trajectory' if trajectory else 'final'}"
        if self.stores.pop(key, None) is not None:
            shutil.rmtree(self.root / key, ignore_errors=True)

    def row(
        self,
        dim,
        damping,
        trajectory: bool,
        outcomes,
        label: str,
        tag: str = "",
        budget: dict | None = None,
        damping_share: float | None = None,
    ) -> tuple[dict, EKFAC]:
        """EK-FAC on the ``dim`` store at ``damping`` (``damping_share``: the auto rule's
        share): LDS, seconds and peak of everything it read (basis, features, fit and score)."""
        train, query = self.store(dim, trajectory, tag, budget)
        bases = self.basis(trajectory)
        name = f"ekfac {label}"
        share = {} if damping_share is None else {"damping_share": damping_share}
        estimator = self._measured(
            name,
            lambda: EKFAC(bases if trajectory else bases[0], damping=damping, **share).fit(train),
        )
        scores = self._measured(name + " score", lambda: estimator.score(query).values)
        self.scores[label] = scores.astype(np.float64)
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
            **_lds(self.scores[label], outcomes),
            "seconds": sum(self.cost[p][0] for p in parts),
            "peak_mb": max(self.cost[p][1] for p in parts),
            "k": train.feature_dim,
            "damping": estimator.damping,
            "kept_share": [b["kept_share"] for b in budget]
            if isinstance(budget, list)
            else (budget or {}).get("kept_share"),
            "effective_dimension": rule.get("effective_dimension"),
            "refit": bases[0].settings.get("refit"),
            "budget": budget,
        }, estimator


def _lds(scores: np.ndarray, outcomes) -> dict:
    """A row's LDS and its 95% bootstrap CI over queries."""
    result = linear_datamodeling_score(np.asarray(scores, dtype=np.float64), outcomes)
    return {"lds": result.mean, "lds_ci": [result.ci_low, result.ci_high]}


#: the paired comparisons (:func:`paired`): the default recipe (final model, trajectory) against
#: the best row of each family it is judged against
PAIRS = (
    ("default: eigen auto, damping auto", "kronfluence"),
    ("default: eigen auto, damping auto, trajectory", "kronfluence"),
    ("default: eigen auto, damping auto", "sweep "),
    ("default: eigen auto, damping auto, trajectory", "trajectory sweep"),
)


def paired(recipe: Recipe, rows: list[dict], outcomes) -> dict[str, dict]:
    """LDS differences of the default rows against the best row of kronfluence, the sweep and the
    trajectory sweep (whichever ran), each with its paired bootstrap CI over queries and
    retrainings (:func:`infscope.evaluation.lds_difference`)."""
    out = {}
    for default, family in PAIRS:
        candidates = [r for r in rows if r["method"].startswith(family)]
        if default not in recipe.scores or not candidates:
            continue
        best = max(candidates, key=lambda r: r["lds"])
        difference = lds_difference(
            recipe.scores[default], recipe.scores[best["method"]], outcomes
        ).to_dict()
        out[f"{default} − {best['method']}"] = difference
        print(f"  {default} − {best['method']}: {difference}", flush=True)
    return out


def _lds_at(estimator: EKFAC, query: FeatureStore, damping: float, outcomes) -> float:
    scores = estimator.with_damping(damping).score(query).values.astype(np.float64)
    return float(linear_datamodeling_score(scores, outcomes).mean)


def _shares(estimator: EKFAC, dampings=SWEEP_DAMPINGS) -> dict[str, float]:
    """The damping rule's share ``d(λ) / D`` at each relative damping: which share a damping
    corresponds to."""
    blocks = [block for spectrum in estimator._spectra() for block in spectrum]
    scale = sum(b.directions for b in blocks)
    return {str(d): effective_dimension(blocks, d) / scale for d in dampings}


def spectrum_shape(estimator: EKFAC) -> list[dict]:
    """Per checkpoint, then of all checkpoints pooled (the last entry, what ``damping="auto"``
    reads when there are several), the shape of the fitted spectrum in the damping's units (each
    block's eigenvalues over its unit): directions, participation ratio ``(Σμ)² / Σμ²``, the
    median over the mean, and the share of the trace in the top 1% of directions."""
    spectra = estimator._spectra()
    if len(spectra) > 1:
        spectra = [*spectra, [block for blocks in spectra for block in blocks]]
    shapes = []
    for blocks in spectra:
        values = np.concatenate(
            [
                np.repeat(
                    np.clip(np.asarray(b.values, dtype=np.float64).ravel(), 0, None) / b.unit,
                    1 if b.counts is None else np.asarray(b.counts, dtype=np.int64).ravel(),
                )
                for b in blocks
                if b.unit > 0
            ]
        )
        values = np.sort(values[values > 0])[::-1]
        top = max(1, values.size // 100)
        shapes.append(
            {
                "directions": int(values.size),
                "participation_ratio": float(values.sum() ** 2 / (values**2).sum()),
                "median_over_mean": float(np.median(values) / values.mean()),
                "top_percent_mass": float(values[:top].sum() / values.sum()),
            }
        )
    return shapes


def _damping_profile(estimator: EKFAC, query: FeatureStore, outcomes) -> dict:
    """The default row's LDS at each relative damping of :data:`PROFILE_DAMPINGS` (same fit) and
    its spectrum's shape: what a damping rule would have to read off the spectrum."""
    profile = {
        "lds": {str(d): _lds_at(estimator, query, d, outcomes) for d in PROFILE_DAMPINGS},
        "spectrum": spectrum_shape(estimator),
        "resolved": _shares(estimator, PROFILE_DAMPINGS),
        "n_examples": estimator.train.n_examples,
    }
    print(f"  damping profile: {profile}", flush=True)
    return profile


def _damping_shares(estimator: EKFAC, query: FeatureStore, outcomes) -> dict[str, dict]:
    """The default recipe's LDS if the damping rule's share were another candidate (same store and
    fit, the damping the rule would pick at that share): how the share is chosen on dev tasks."""
    blocks = [block for spectrum in estimator._spectra() for block in spectrum]
    out = {}
    for share in CANDIDATE_DAMPING_SHARES:
        damping = spectrum_damping(blocks, share).relative
        out[str(share)] = {"damping": damping, "lds": _lds_at(estimator, query, damping, outcomes)}
    print(f"  damping shares: {out}", flush=True)
    return out


def evaluate(
    name: str,
    with_trajectory: bool = True,
    kronfluence: tuple[str, ...] = ("ekfac", "kfac"),
    rule: dict | None = None,
    grid: dict | None = None,
    baselines: bool = True,
    sweep_trajectory: bool = False,
    suffix: str = "",
    compare_to: str | None = None,
    damping_profile: bool = False,
) -> dict:
    """Every row of one task (module docstring). ``rule``: the default recipe's rule shares
    (``damping_share``, ``budget_share``, ``budget_damping_share``; absent: the library's);
    ``grid``: the dev grid's share lists (:func:`dev_grid`); ``baselines=False``: the default recipe only
    (no sweep, CLI default or kronfluence rows); ``sweep_trajectory``: the sweep on the recipe
    with checkpoints too (:func:`sweep`)."""
    rule = dict(rule or {})
    damping_share = rule.pop("damping_share", None)
    tag = "".join(f"-{key}{value}" for key, value in sorted(rule.items()))
    task = build_task(name)
    trained = train_all(task, task.train, 1)
    outcomes = aq.ground_truth(task, subsets(name))[0]
    meter = ResourceMeter()
    work = Path(tempfile.mkdtemp(prefix=f"lmdefaults-{name}-", dir=OUT))
    rows: list[dict] = []
    split = "dev" if name in DEV or name in CLASSIFICATION_DEV else "test"
    report = {"task": name, "split": split, "subsets": subsets(name)}
    report["description"] = task.description
    report["rule"] = {**rule, "damping_share": damping_share}
    try:
        recipe = Recipe(task, trained, work, meter)
        for trajectory in (False, True) if with_trajectory else (False,):
            label = f"default: eigen auto, damping auto{', trajectory' if trajectory else ''}"
            row, fitted = recipe.row(
                "auto", "auto", trajectory, outcomes, label, tag, rule, damping_share
            )
            query = recipe.store("auto", trajectory, tag, rule)[1]
            if not trajectory:
                row["damping_shares"] = _damping_shares(fitted, query, outcomes)
            if damping_profile:
                row["damping_profile"] = _damping_profile(fitted, query, outcomes)
            rows.append(row)
            print(f"  {row}", flush=True)
        if sweep_trajectory:
            recipe.forget("auto", True, tag)
            rows.extend(sweep(recipe, report, outcomes, trajectory=True))
        if grid:
            recipe.forget("auto", False, tag)
            report["grid"] = dev_grid(recipe, outcomes, grid)
        if baselines:
            rows.extend(_baselines(recipe, report, outcomes, kronfluence, work))
        if compare_to is not None:
            rows.extend(_earlier_rows(recipe, name, compare_to))
        report["paired"] = paired(recipe, rows, outcomes)
        _save_scores(recipe.scores, OUT / f"{name}{suffix}-scores.npz")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["rows"] = rows
    return report


def _save_scores(scores: dict[str, np.ndarray], path: Path) -> None:
    """Every row's scores (``labels`` names them), for a later run's paired differences."""
    labels = list(scores)
    arrays = {
        f"s{i}": np.asarray(scores[label], dtype=np.float32) for i, label in enumerate(labels)
    }
    np.savez_compressed(path, labels=np.array(labels), **arrays)


def _earlier_rows(recipe: Recipe, name: str, suffix: str) -> list[dict]:
    """kronfluence's and the sweeps' rows of the run saved under ``suffix``, their scores put in
    ``recipe.scores`` (marked ``"from"`` that run)."""
    report = json.loads((OUT / f"{name}{suffix}.json").read_text())
    with np.load(OUT / f"{name}{suffix}-scores.npz", allow_pickle=False) as saved:
        scores = {str(label): saved[f"s{i}"] for i, label in enumerate(saved["labels"])}
    rows = []
    for row in report["rows"]:
        method = row["method"]
        if method.startswith(("kronfluence", "sweep ", "trajectory sweep")) and method in scores:
            recipe.scores[method] = scores[method].astype(np.float64)
            rows.append({**row, "from": suffix})
    return rows


def _baselines(recipe: Recipe, report: dict, outcomes, kronfluence, work: Path) -> list[dict]:
    """The sweep (fixed budgets × dampings), the former CLI default and kronfluence's rows."""
    rows = sweep(recipe, report, outcomes, trajectory=False)
    task, trained = recipe.task, recipe.trained
    ws = Workspace(task, work / "ws", recipe.meter, {"clean": trained})
    cli = Method("cli default: kronecker k=4096, ekfac λ=0.1", "traj", _ekfac(True))
    result = run_method(ws, cli, mislabel=False)
    recipe.scores[cli.name] = result.scores
    rows.append(
        {
            "method": cli.name,
            **_lds(result.scores, outcomes),
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
        recipe.scores[f"kronfluence {strategy}"] = result.scores
        rows.append(
            {
                "method": f"kronfluence {strategy}",
                **_lds(result.scores, outcomes),
                "seconds": result.seconds,
                "peak_mb": result.peak_mb,
            }
        )
        print(f"  {rows[-1]}", flush=True)
    return rows


def sweep(recipe: Recipe, report: dict, outcomes, trajectory: bool) -> list[dict]:
    """Each fixed budget of :data:`SWEEP_DIMS` (capped at the full basis; with checkpoints every
    checkpoint cut to it, the same bases) × the relative dampings of :data:`SWEEP_DAMPINGS`, one
    fit per budget: the best row per budget, the whole grid in ``report["sweep"]`` (final model)
    or ``report["trajectory_sweep"]``; the trajectory's stores are removed once scored."""
    rows, grid = [], {}
    name = "trajectory sweep" if trajectory else "sweep"
    full = min(basis.feature_dim for basis in recipe.basis(trajectory))
    for dim in sorted({min(d, full) for d in SWEEP_DIMS}):
        row, fitted = recipe.row(dim, 0.1, trajectory, outcomes, f"{name} k={dim}")
        query = recipe.store(dim, trajectory)[1]
        grid[dim] = {d: _lds_at(fitted, query, d, outcomes) for d in SWEEP_DAMPINGS}
        best = max(grid[dim], key=grid[dim].get)
        label = f"{name} k={dim}, best λ={best:g}"
        recipe.scores[label] = fitted.with_damping(best).score(query).values.astype(np.float64)
        rows.append({**row, "method": label, **_lds(recipe.scores[label], outcomes)})
        if trajectory:  # scored: its stores can go
            recipe.forget(dim, True)
        else:
            report.setdefault("sweep_share", {})[str(dim)] = _shares(fitted)
        print(f"  {name} k={dim}: {grid[dim]}", flush=True)
    report[name.replace(" ", "_")] = {str(k): v for k, v in grid.items()}
    return rows


def dev_grid(recipe: Recipe, outcomes, grid: dict) -> list[dict]:
    """On a dev task: the default recipe (final model) at every damping share × budget rule of
    ``grid`` (``damping``, ``budget``, ``judged``: the share lists, :data:`GRID_DAMPING_SHARES`
    …), each through the library's public arguments (``EKFAC(damping_share=...)``,
    ``ProjectionConfig(budget_share=..., budget_damping_share=...)``); one store per budget
    rule, removed once scored."""
    rows = []
    fixed = {float(b) for b in grid["judged"] if b != "same"}
    same = set(grid["damping"]) if "same" in grid["judged"] else set()
    judged_at = sorted(fixed | same)
    for budget_share in grid["budget"]:
        for judged in judged_at:
            budget = {"budget_share": budget_share, "budget_damping_share": judged}
            tag = f"-b{budget_share}-j{judged}"
            for damping_share in grid["damping"]:
                rule = [b for b in grid["judged"] if b != "same" and float(b) == judged]
                if judged == damping_share:
                    rule.append("same")
                if not rule:
                    continue
                label = f"grid b={budget_share} j={judged} d={damping_share}"
                row, _ = recipe.row(
                    "auto", "auto", False, outcomes, label, tag, budget, damping_share
                )
                row.update(
                    budget_share=budget_share,
                    budget_damping_share=judged,
                    damping_share=damping_share,
                    rules=rule,
                    budget_damping=row["budget"]["relative_damping"],
                )
                rows.append(row)
                print(f"  {row}", flush=True)
            recipe.forget("auto", False, tag)
    return rows


def _target(report: dict, trajectory: bool) -> dict | None:
    """One default row (final model or trajectory) against the targets: kronfluence's better
    row + 0.02, ≤ 1.5× its seconds and peak MB, within 0.02 of the best of its sweep (the
    trajectory sweep for the trajectory); ``None`` when the report lacks a row it needs."""
    rows = report["rows"]
    method = "default: eigen auto, damping auto" + (", trajectory" if trajectory else "")
    family = "trajectory sweep" if trajectory else "sweep "
    default = next((r for r in rows if r["method"] == method), None)
    krons = [r for r in rows if r["method"].startswith("kronfluence")]
    sweeps = [r for r in rows if r["method"].startswith(family)]
    if default is None or not krons or not sweeps:
        return None
    kron = max(krons, key=lambda r: r["lds"])
    sweep = max(sweeps, key=lambda r: r["lds"])
    differences = report.get("paired", {})
    return {
        "default": default,
        "kronfluence": kron,
        "sweep": sweep,
        "vs_kronfluence": differences.get(f"{method} − {kron['method']}"),
        "vs_sweep": differences.get(f"{method} − {sweep['method']}"),
        "lds_met": default["lds"] >= kron["lds"] + 0.02,
        "time_met": default["seconds"] <= 1.5 * kron["seconds"],
        "memory_met": default["peak_mb"] <= 1.5 * kron["peak_mb"],
        "sweep_met": default["lds"] >= sweep["lds"] - 0.02,
    }


def _difference(paired: dict | None) -> str:
    if paired is None:
        return "–"
    return f"{paired['difference']:+.3f} [{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}]"


def table(reports: list[dict]) -> str:
    """One markdown row per task and default (final model, trajectory): against kronfluence's
    better row and the best of the sweep, the differences with their paired 95% CIs."""
    header = (
        "split", "task", "default", "LDS (k; s, MB)", "kronfluence better row", "− kf [95% CI]",
        "sweep best", "− sweep [95% CI]", "LDS ≥ kf + 0.02", "time ≤ 1.5×", "memory ≤ 1.5×",
        "within 0.02 of sweep",
    )  # fmt: skip
    mark = {True: "met", False: "**missed**"}
    rows = []
    for report in reports:
        for trajectory in (False, True):
            t = _target(report, trajectory)
            if t is None:
                continue
            d, k, s = t["default"], t["kronfluence"], t["sweep"]
            rows.append(
                (
                    report["split"],
                    report["task"],
                    "trajectory" if trajectory else "final model",
                    f"{d['lds']:.3f} (k = {d['k']:,}; {d['seconds']:.0f} s, {d['peak_mb']:.0f} MB)",
                    f"{k['method'].split()[1]} {k['lds']:.3f} ({k['seconds']:.0f} s, "
                    f"{k['peak_mb']:.0f} MB)",
                    _difference(t["vs_kronfluence"]),
                    f"{s['lds']:.3f} (k = {s['method'].split('k=')[1]})",
                    _difference(t["vs_sweep"]),
                    mark[t["lds_met"]],
                    f"{mark[t['time_met']]} ({d['seconds'] / k['seconds']:.2f}×)",
                    f"{mark[t['memory_met']]} ({d['peak_mb'] / k['peak_mb']:.2f}×)",
                    mark[t["sweep_met"]],
                )
            )
    return markdown_table(header, rows)


#: shares of the damping rule at which :func:`profile_table` reads the damping profiles
PROFILE_SHARES = (0.9, 0.5, 0.2, 0.08, 0.03, 0.01)


def _lds_at_share(profile: dict, share: float) -> tuple[float, float]:
    """The LDS and relative damping at which the default's spectrum resolves ``share`` of its
    directions, interpolated on log λ between the profiled dampings (clamped to the grid)."""
    dampings = np.log([float(d) for d in profile["resolved"]])
    resolved = np.array(list(profile["resolved"].values()))  # falls with λ
    lds = np.array([profile["lds"][d] for d in profile["lds"]])
    at = float(np.interp(-share, -resolved, dampings))
    return float(np.interp(at, dampings, lds)), float(np.exp(at))


def profile_table(reports: list[dict]) -> str:
    """One markdown row per task and default row with a damping profile: the spectrum's shape,
    the default's LDS and the LDS had the damping rule resolved each of :data:`PROFILE_SHARES`."""
    header = (
        "split", "task", "default", "median / mean", "participation ratio / D",
        "LDS at damping='auto' (λ rel)", *(f"share {s}" for s in PROFILE_SHARES),
        "profile's best (λ rel)",
    )  # fmt: skip
    rows = []
    for report in reports:
        for row in report["rows"]:
            profile = row.get("damping_profile")
            if profile is None:
                continue
            shape = profile["spectrum"][-1]  # pooled over the checkpoints
            best = max(profile["lds"], key=profile["lds"].get)
            rows.append(
                (
                    report["split"],
                    report["task"],
                    "trajectory" if "trajectory" in row["method"] else "final model",
                    f"{shape['median_over_mean']:.3g}",
                    f"{shape['participation_ratio'] / shape['directions']:.3f}",
                    f"{row['lds']:.3f} ({row['damping']:.2g})",
                    *(
                        "{:.3f} ({:.2g})".format(*_lds_at_share(profile, share))
                        for share in PROFILE_SHARES
                    ),
                    f"{profile['lds'][best]:.3f} ({float(best):g})",
                )
            )
    return markdown_table(header, rows)


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a share must lie in (0, 1), got {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=("truth", "eval", "table", "profile"), default="eval")
    parser.add_argument("--tasks", default=",".join(DEV + TEST))
    parser.add_argument(
        "--no-trajectory", action="store_true", help="only the final-model default recipe"
    )
    parser.add_argument(
        "--kronfluence", default="ekfac,kfac", help="kronfluence strategies to run (comma list)"
    )
    parser.add_argument("--damping-share", type=_share, help="damping='auto' rule's share")
    parser.add_argument("--budget-share", type=_share, help="dim='auto' rule's kept share")
    parser.add_argument(
        "--budget-damping-share",
        help="dim='auto' rule's damping share, or 'same': the --damping-share (default: the "
        "library's eigen share)",
    )
    parser.add_argument("--grid", action="store_true", help="the dev grid of rule shares")
    parser.add_argument("--grid-damping-shares", default=",".join(map(str, GRID_DAMPING_SHARES)))
    parser.add_argument("--grid-budget-shares", default=",".join(map(str, GRID_BUDGET_SHARES)))
    parser.add_argument(
        "--grid-budget-damping-shares",
        default=",".join(GRID_BUDGET_DAMPING_SHARES),
        help="comma list of shares or 'same' (the damping share of the row)",
    )
    parser.add_argument(
        "--default-only", action="store_true", help="no sweep, CLI default or kronfluence rows"
    )
    parser.add_argument(
        "--trajectory-sweep",
        action="store_true",
        help="also sweep fixed budgets × dampings on the recipe with checkpoints",
    )
    parser.add_argument("--suffix", default="", help="appended to the JSON's name")
    parser.add_argument(
        "--damping-profile",
        action="store_true",
        help="rescore the default rows at every relative damping of PROFILE_DAMPINGS and record "
        "their spectra's shape (one rescaling each)",
    )
    parser.add_argument(
        "--compare-to",
        metavar="SUFFIX",
        help="with --default-only: take kronfluence's and the sweeps' rows and scores from the "
        "run saved under SUFFIX (same task, same ground truth) for the targets and the paired "
        "differences",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.tasks.split(",")
    if args.stage == "truth":
        for name in names:
            truth(name)
        return
    if args.stage in ("table", "profile"):
        reports = [json.loads((OUT / f"{n}{args.suffix}.json").read_text()) for n in names]
        print((table if args.stage == "table" else profile_table)(reports))
        return
    rule = {}
    if args.damping_share is not None:
        rule["damping_share"] = args.damping_share
    if args.budget_share is not None:
        rule["budget_share"] = args.budget_share
    if args.budget_damping_share == "same":
        rule["budget_damping_share"] = rule.get("damping_share", EIGEN_DAMPING_SHARE)
    elif args.budget_damping_share is not None:
        rule["budget_damping_share"] = _share(args.budget_damping_share)
    grid = None
    if args.grid:
        grid = {
            "damping": [_share(v) for v in args.grid_damping_shares.split(",")],
            "budget": [_share(v) for v in args.grid_budget_shares.split(",")],
            "judged": [
                v if v == "same" else str(_share(v))
                for v in args.grid_budget_damping_shares.split(",")
            ],
        }
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"=== {name}", flush=True)
        report = evaluate(
            name,
            not args.no_trajectory,
            tuple(args.kronfluence.split(",")),
            rule,
            grid,
            not args.default_only,
            args.trajectory_sweep,
            args.suffix,
            args.compare_to,
            args.damping_profile,
        )
        (OUT / f"{name}{args.suffix}.json").write_text(json.dumps(report, indent=1, default=float))
        for row in report["rows"]:
            print(
                f"  {row['method']:55s} LDS {row['lds']:.3f}  {row['seconds']:7.1f} s  "
                f"{row['peak_mb']:7.0f} MB  k={row.get('k')}  λ={row.get('damping')}",
                flush=True,
            )


if __name__ == "__main__":
    main()
