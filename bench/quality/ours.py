"""infscope's side: feature stores for one task and every estimator run on them.

All stores of a task live in one scratch directory (rebuilt every run: extraction is cheap next to
retraining). Extraction time is recorded per (store, checkpoint), so each method's row can add
up exactly the features it reads; estimator fit+score is timed (and its peak RSS sampled) with
:class:`~infscope.evaluation.ResourceMeter`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from infscope.attribution import TRAK, DataInf, GradientSimilarity, InfluenceFunction, TracIn
from infscope.attribution.representer import RepresenterPoints
from infscope.curvature import KroneckerBasis, fit_kronecker_basis
from infscope.curvature.hessian import ModelHessian
from infscope.evaluation import ResourceMeter, current_rss_mb, select_damping
from infscope.gradients import GradientExtractor, ModuleSelection, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore

from .common import BenchTask, Checkpoint, Split


@dataclass
class Trained:
    """Models trained on one label set: the main trajectory and the ensemble's final states."""

    trajectory: list[Checkpoint]
    ensemble: list[Checkpoint]  # ensemble[0] is the main model's final state
    seconds: float = 0.0

    @property
    def final(self) -> Checkpoint:
        return self.trajectory[-1]


def train_all(task: BenchTask, split: Split, size: int) -> Trained:
    start = time.perf_counter()
    model, trajectory = task.train_model(split, seed=0, checkpoints=True)
    ensemble = [Checkpoint("model-0", trajectory[-1].state, trajectory[-1].learning_rate)]
    for seed in range(1, size):
        _, other = task.train_model(split, seed=seed, checkpoints=True)
        ensemble.append(Checkpoint(f"model-{seed}", other[-1].state, other[-1].learning_rate))
    return Trained(trajectory, ensemble, time.perf_counter() - start)


@dataclass
class Result:
    """One method's outputs: query scores [n_query, n_train] (our sign), self-influence on the
    noisy-label model, and its cost."""

    method: str
    family: str  # "infscope" or the anchor library
    scores: np.ndarray | None = None
    self_influence: np.ndarray | None = None
    seconds: float = 0.0
    peak_mb: float = 0.0
    note: str = ""
    extra: dict = field(default_factory=dict)


EIGEN_KIND = re.compile(r"eig([et])(\d+)(a?)")


class Workspace:
    """Stores and trained models of one task, created on demand."""

    def __init__(
        self,
        task: BenchTask,
        root: Path,
        meter: ResourceMeter,
        trained: dict,
        basis_options: dict | None = None,
    ) -> None:
        self.task, self.root, self.meter, self.trained = task, root, meter, trained
        #: keyword arguments of every ``fit_kronecker_basis`` call (e.g. ``max_exact_dim``)
        self.basis_options = dict(basis_options or {})
        self.model = task.make_model(0)
        self.stores: dict[str, FeatureStore] = {}
        self.extract_seconds: dict[tuple[str, str], float] = {}
        self.extract_peak: dict[str, float] = {}
        self.extractors: dict[str, GradientExtractor] = {}
        self.bases: dict[str, KroneckerBasis | list[KroneckerBasis]] = {}

    # ---- stores -----------------------------------------------------------------------------

    def trak_projection(self) -> ProjectionConfig:
        kind = "rademacher" if self.task.projection.kind == "identity" else "kronecker"
        return ProjectionConfig(kind=kind, dim=self.task.trak_dim)

    def basis(
        self, labels: str, fisher: str, trajectory: bool
    ) -> KroneckerBasis | list[KroneckerBasis]:
        """The full-space K-FAC eigenbasis of the final model, or one per trajectory checkpoint
        (a pass over the training data each); its time and peak are charged to every eigen store
        built on it."""
        name = f"basis:{labels}:{fisher}{':trajectory' if trajectory else ''}"
        if name not in self.bases:
            trained = self.trained[labels]
            extractor = GradientExtractor(
                self.model, self.task.infscope_task("loss"), ProjectionConfig("identity", None)
            )
            data = self.task.train if labels == "clean" else self.task.noisy_train
            start, base = time.perf_counter(), current_rss_mb()
            bases = []
            with self.meter.stage(name):
                for checkpoint in trained.trajectory if trajectory else [trained.final]:
                    self.model.load_state_dict(checkpoint.state)
                    bases.append(
                        fit_kronecker_basis(
                            extractor,
                            data.examples,
                            fisher=fisher,
                            batch_size=64,
                            progress=False,
                            **self.basis_options,
                        )
                    )
            self.bases[name] = bases if trajectory else bases[0]
            self.extract_seconds[(name, "final")] = time.perf_counter() - start
            self.extract_peak[name] = self.meter.report()[name]["peak_mb"] - base
        return self.bases[name]

    def spec(self, name: str):
        """``(split, labels, gradient, measurement, checkpoints, projection, modules)``.

        Kinds: ``traj`` (the task's projection, training trajectory), ``ens`` (TRAK), ``rep``
        (representer points), ``eig<f><k>[a]`` (eigen projection of ``k`` features on the
        empirical (``f = e``) or true (``t``) Fisher basis, ``k = 0``: full rank; of the final
        model, or with ``a`` of every trajectory checkpoint, each on its own basis). Split
        ``fisher`` is the training set's sampled-label store."""
        split, labels, kind = name.split(":")
        data = {
            "train": None,
            "fisher": None,
            "query": self.task.queries,
            "heldout": self.task.heldout,
        }[split]
        if split in ("train", "fisher"):
            data = self.task.train if labels == "clean" else self.task.noisy_train
        trained = self.trained[labels]
        loss = "margin" if self.task.kind == "classification" else "logprob"
        eigen = EIGEN_KIND.fullmatch(kind)
        if eigen:
            fisher = "true" if eigen.group(1) == "t" else "empirical"
            dim = int(eigen.group(2)) or None
            trajectory = bool(eigen.group(3))
            basis = self.basis(labels, fisher, trajectory)
            projection = ProjectionConfig("eigen", dim, basis=basis)
            checkpoints = trained.trajectory if trajectory else [trained.final]
            gradient, measurement = {
                "train": ("loss", "loss"),
                "fisher": ("fisher", "loss"),
            }.get(split, ("measurement", loss))
            return data, gradient, measurement, checkpoints, projection, None
        if kind == "traj":  # training trajectory, training-loss gradients (queries: measurement)
            gradient, measurement = ("loss", "loss") if split == "train" else ("measurement", loss)
            return data, gradient, measurement, trained.trajectory, self.task.projection, None
        if kind == "ens":  # TRAK: margin gradients of the ensemble's final models
            return data, "measurement", "margin", trained.ensemble, self.trak_projection(), None
        if kind == "rep":  # representer points: final layer, unprojected
            gradient, measurement = (
                ("loss", "loss") if split == "train" else ("measurement", "logit")
            )
            modules = (
                ModuleSelection(include=(self.task.final_layer,)) if self.task.final_layer else None
            )
            return (
                data,
                gradient,
                measurement,
                [trained.final],
                ProjectionConfig("identity", None),
                modules,
            )
        raise ValueError(name)

    def extractor(self, name: str) -> GradientExtractor:
        _, gradient, measurement, _, projection, modules = self.spec(name)
        key = f"{gradient}/{measurement}/{projection}/{modules}"
        if key not in self.extractors:
            self.extractors[key] = GradientExtractor(
                self.model, self.task.infscope_task(measurement), projection, modules
            )
        return self.extractors[key]

    def store(self, name: str) -> FeatureStore:
        if name in self.stores:
            return self.stores[name]
        data, gradient, _, checkpoints, _, _ = self.spec(name)
        extractor = self.extractor(name)
        root = self.root / name.replace(":", "-")
        for checkpoint in checkpoints:
            self.model.load_state_dict(checkpoint.state)
            start, base = time.perf_counter(), current_rss_mb()
            with self.meter.stage(f"features {name}"):
                featurize(
                    extractor,
                    data.examples,
                    root,
                    checkpoint.name,
                    gradient=gradient,
                    learning_rate=checkpoint.learning_rate,
                    batch_size=64,
                    progress=False,
                )
            self.extract_seconds[(name, checkpoint.name)] = time.perf_counter() - start
            peak = self.meter.report()[f"features {name}"]["peak_mb"] - base
            self.extract_peak[name] = max(self.extract_peak.get(name, 0.0), peak)
        self.stores[name] = FeatureStore.open(root)
        return self.stores[name]

    def cost(self, name: str, checkpoints: list[str] | None = None) -> float:
        return sum(
            s
            for (n, c), s in self.extract_seconds.items()
            if n == name and (checkpoints is None or c in checkpoints)
        )

    def eigen_cost(self, kind: str, labels: str = "clean") -> tuple[float, float]:
        """Seconds and peak MB of the eigenbasis and of the sampled-label store behind an
        ``eig*`` kind (nothing for other kinds)."""
        eigen = EIGEN_KIND.fullmatch(kind)
        if not eigen:
            return 0.0, 0.0
        basis = f"basis:{labels}:{'true' if eigen.group(1) == 't' else 'empirical'}"
        basis += ":trajectory" if eigen.group(3) else ""
        fisher = f"fisher:{labels}:{kind}"
        seconds = self.cost(basis) + self.cost(fisher)
        return seconds, max(self.extract_peak.get(basis, 0.0), self.extract_peak.get(fisher, 0.0))

    def load_final(self, labels: str) -> nn.Module:
        self.model.load_state_dict(self.trained[labels].final.state)
        return self.model


@dataclass
class Method:
    """An infscope estimator configuration: which stores it reads and how to build it.

    ``build(ws, labels)`` returns the unfitted estimator at its defaults; a damped estimator
    (:class:`~infscope.attribution.damped.DampedEstimator`) also gets a row tuned by
    ``select_damping`` on the held-out queries."""

    name: str
    kind: str  # "traj" | "ens" | "rep"
    build: Callable[[Workspace, str], object]  # (workspace, labels) -> unfitted estimator
    checkpoints: Callable[[Workspace], list[str] | None] = lambda ws: ["final"]
    damped: bool = False


def _ekfac(correct: bool):
    def build(ws: Workspace, labels: str):
        from infscope.attribution.kfac import EKFAC
        from infscope.curvature.kfac import KFACFactors

        key = f"factors:{labels}"
        if key not in ws.stores:
            train = ws.store(f"train:{labels}:traj")
            model = ws.load_final(labels)
            extractor = ws.extractor(f"train:{labels}:traj")
            assert extractor.model is model
            ws.stores[key] = KFACFactors.fit(
                extractor,
                ws.spec(f"train:{labels}:traj")[0].examples,
                store=train,
                checkpoint="final",
                progress=False,
            )
        return EKFAC(ws.stores[key], correct_eigenvalues=correct)

    return build


def _eigen_ekfac(correct: bool = True):
    """EK-FAC on an eigen store: the basis the store was projected with; for a true-Fisher kind
    the corrected eigenvalues come from the sampled-label store."""

    def build(ws: Workspace, labels: str, kind: str):
        from infscope.attribution.kfac import EKFAC

        basis = ws.spec(f"train:{labels}:{kind}")[4].basis
        fisher = ws.store(f"fisher:{labels}:{kind}") if kind.startswith("eigt") else None
        checkpoints = "all" if kind.endswith("a") else None
        return EKFAC(basis, correct_eigenvalues=correct, fisher=fisher, checkpoints=checkpoints)

    return build


def _hessian(ws: Workspace, labels: str, solver: str):
    curvature = ModelHessian.from_extractor(
        ws.extractor(f"train:{labels}:traj"), ws.spec(f"train:{labels}:traj")[0].examples
    )
    return InfluenceFunction(solver=solver, curvature=curvature)


def eigen_methods(task: BenchTask, dims: list[int | None]) -> list[Method]:
    """EK-FAC on the curvature-aware (eigen) projection, empirical and true Fisher, at each
    feature budget (``None``: full rank), at the final model and averaged over the trajectory."""
    rows = []
    for trajectory in (False, True):
        for dim in dims:
            label = f"k={dim}" if dim else "full rank"
            label += ", trajectory" if trajectory else ""
            for code, fisher in (("e", "empirical"), ("t", "true")):
                kind = f"eig{code}{dim or 0}{'a' if trajectory else ''}"
                rows.append(
                    Method(
                        f"ekfac (eigen {label}, {fisher} Fisher, λ=0.1 rel)",
                        kind,
                        lambda ws, lab, kind=kind: _eigen_ekfac()(ws, lab, kind),
                        checkpoints=lambda ws, a=trajectory: None if a else ["final"],
                        damped=True,
                    )
                )
    return rows


def methods(task: BenchTask) -> list[Method]:
    """The infscope rows of a task, each at its defaults (λ relative, documented per method)."""
    all_traj = lambda ws: [c.name for c in ws.trained["clean"].trajectory]  # noqa: E731
    rows = [
        Method("dot", "traj", lambda ws, lab: GradientSimilarity()),
        Method("cosine", "traj", lambda ws, lab: GradientSimilarity(normalize="unit")),
        Method("tracin", "traj", lambda ws, lab: TracIn(), checkpoints=all_traj),
        Method(
            "influence (Fisher, auto → exact, λ=1 rel)",
            "traj",
            lambda ws, lab: InfluenceFunction(),
            damped=True,
        ),
        Method(
            "influence (Fisher, CG, λ=1 rel)",
            "traj",
            lambda ws, lab: InfluenceFunction(solver="cg"),
            damped=True,
        ),
        Method(
            "influence (Fisher, Arnoldi rank 100, λ=1 rel)",
            "traj",
            lambda ws, lab: InfluenceFunction(solver="arnoldi"),
            damped=True,
        ),
    ]
    if task.hessian:
        rows += [
            Method(
                f"influence (model Hessian, {label}, λ=0.3 rel)",
                "traj",
                lambda ws, lab, solver=solver: _hessian(ws, lab, solver),
                damped=True,
            )
            for solver, label in (("auto", "auto"), ("cg", "CG"))
        ]
    if task.kind == "classification":
        n = task.ensemble
        rows.append(
            Method(
                "trak (1 model, λ=1 rel)",
                "ens",
                lambda ws, lab: TRAK(checkpoints=["model-0"]),
                checkpoints=lambda ws: ["model-0"],
                damped=True,
            )
        )
        if n > 1:
            rows.append(
                Method(
                    f"trak ({n} models, λ=1 rel)",
                    "ens",
                    lambda ws, lab: TRAK(checkpoints="all"),
                    checkpoints=lambda ws: None,
                    damped=True,
                )
            )
    rows.append(Method("datainf (λ=1 rel)", "traj", lambda ws, lab: DataInf(), damped=True))
    if task.kind == "classification":
        rows.append(
            Method(
                f"representer (L2 {task.l2:g})",
                "rep",
                lambda ws, lab: RepresenterPoints(ws.task.l2),
            )
        )
    rows += [
        Method("ekfac (λ=0.1 rel)", "traj", _ekfac(True), damped=True),
        Method("kfac (λ=0.1 rel)", "traj", _ekfac(False), damped=True),
    ]
    return rows


def run_method(ws: Workspace, method: Method, mislabel: bool) -> Result:
    """Fit on the clean model's stores and score the LDS queries; then self-influence on the
    noisy-label model's stores (mislabel detection)."""
    train_name, query_name = f"train:clean:{method.kind}", f"query:clean:{method.kind}"
    train, query = ws.store(train_name), ws.store(query_name)
    checkpoints = method.checkpoints(ws)
    base = current_rss_mb()
    start = time.perf_counter()
    with ws.meter.stage(f"{method.name} fit+score"):
        ws.load_final("clean")  # the model Hessian and K-FAC factors read the live model
        estimator = method.build(ws, "clean").fit(train)
        scores = estimator.score(query).values.astype(np.float64)
    seconds = time.perf_counter() - start
    seconds += ws.cost(train_name, checkpoints) + ws.cost(query_name, checkpoints)
    eigen_seconds, eigen_peak = ws.eigen_cost(method.kind)
    seconds += eigen_seconds
    peak = max(
        ws.meter.report()[f"{method.name} fit+score"]["peak_mb"] - base,
        ws.extract_peak.get(train_name, 0.0),
        ws.extract_peak.get(query_name, 0.0),
        eigen_peak,
    )
    result = Result(method.name, "infscope", scores=scores, seconds=seconds, peak_mb=peak)
    result.extra["describe"] = {
        k: v for k, v in estimator.describe().items() if isinstance(v, (int, float, str))
    }
    if method.name == "cosine":
        result.note = "self-influence ≡ 1: no mislabel ranking"
    elif mislabel and ws.task.noisy_train is not None:
        noisy = ws.store(f"train:noisy:{method.kind}")
        ws.load_final("noisy")
        result.self_influence = method.build(ws, "noisy").fit(noisy).self_influence().values
    return result


def run_selection(ws: Workspace, method: Method, outcomes, grid) -> tuple[Result, dict]:
    """``select_damping`` on the held-out queries (one fit, every λ of the grid, widened at its
    edges); the chosen estimator scores the LDS queries. Seconds include the features read."""
    train = ws.store(f"train:clean:{method.kind}")
    heldout = ws.store(f"heldout:clean:{method.kind}")
    query = ws.store(f"query:clean:{method.kind}")
    ws.load_final("clean")
    start = time.perf_counter()  # the reference: one fit and one scoring of the held-out queries
    method.build(ws, "clean").fit(train).score(heldout)
    one_fit = time.perf_counter() - start
    base, start = current_rss_mb(), time.perf_counter()
    with ws.meter.stage(f"select_damping {method.name}"):
        selection = select_damping(method.build(ws, "clean"), train, heldout, outcomes, grid)
        selecting = time.perf_counter() - start
        scores = selection.estimator.score(query).values.astype(np.float64)
    seconds = (
        time.perf_counter() - start + ws.cost(f"train:clean:{method.kind}", method.checkpoints(ws))
    )
    seconds += ws.eigen_cost(method.kind)[0]
    seconds += ws.cost(f"heldout:clean:{method.kind}") + ws.cost(f"query:clean:{method.kind}")
    peak = ws.meter.report()[f"select_damping {method.name}"]["peak_mb"] - base
    summary = {**selection.to_dict(), "seconds": selecting, "one_fit_seconds": one_fit}
    summary["cost_ratio"] = selecting / max(one_fit, 1e-9)
    return Result(method.name, "infscope", scores=scores, seconds=seconds, peak_mb=peak), summary
