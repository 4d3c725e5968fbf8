"""Pruning studies: how far can a dataset be cut by a score before the model gets worse?

For each score, strategy and keep-fraction, a :class:`PruningStudy` selects a subset, retrains
with several seeds through the user's ``train_fn(indices, seed) -> metric`` (higher is better,
e.g. test accuracy) and compares with random subsets of the same size and with the full data.
Every training run is cached through :class:`~infscope.evaluation.retraining.RetrainingRunner`,
so a killed study continues where it stopped. Results come out as a CSV, a pruning-curve plot
(PNG or SVG) and a text summary with mean ± std.

**Convention: a higher score means a harder / more informative example** (high loss, EL2N,
forgetting events, self-influence). Pass ``-score`` for scores where high means easy (confidence,
area under the margin).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infscope.attribution.scores import SelfInfluence, load_scores
from infscope.errors import InputError
from infscope.evaluation.retraining import RetrainingRunner
from infscope.plotting import saved_figure

STRATEGIES = ("keep-hard", "keep-easy", "drop-both-tails", "class-stratified")
RANDOM, FULL = "random", "full-data"


def prune_mask(
    scores: np.ndarray,
    keep_fraction: float,
    strategy: str,
    labels: np.ndarray | None = None,
    tie_break_seed: int | None = None,
) -> np.ndarray:
    """Boolean mask keeping ``round(keep_fraction × n)`` examples by ``strategy``:
    ``keep-hard`` (highest scores), ``keep-easy`` (lowest), ``drop-both-tails`` (drop equal
    numbers from both ends, keep the middle), ``class-stratified`` (keep-hard within each class,
    in proportion to the class's size). Ties break by index, or at random with
    ``tie_break_seed`` (integer scores such as forgetting counts tie a lot, and data files are
    often ordered)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if not 0 < keep_fraction <= 1:
        raise InputError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    if not np.isfinite(scores).all():
        raise InputError("scores contain NaN or inf: compute them for every example first")
    keep = max(1, int(round(keep_fraction * n)))
    if tie_break_seed is None:
        tie = np.arange(n)
    else:
        tie = np.random.default_rng(tie_break_seed).permutation(n)
    order = np.lexsort((tie, -scores))  # hardest first, ties by ``tie``
    mask = np.zeros(n, dtype=bool)
    if strategy == "keep-hard":
        mask[order[:keep]] = True
    elif strategy == "keep-easy":
        mask[order[n - keep :]] = True
    elif strategy == "drop-both-tails":
        drop_top = (n - keep) // 2
        mask[order[drop_top : drop_top + keep]] = True
    elif strategy == "class-stratified":
        if labels is None or len(labels) != n:
            raise InputError("class-stratified pruning needs one label per example")
        labels = np.asarray(labels)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            quota = max(1, int(round(keep_fraction * len(members))))
            mask[members[np.lexsort((tie[members], -scores[members]))[:quota]]] = True
    else:
        raise InputError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    return mask


@dataclass(frozen=True)
class PruningRun:
    """One training run of the study."""

    score: str
    strategy: str
    keep_fraction: float
    seed: int
    metric: float
    seconds: float


@dataclass
class PruningResult:
    """All runs of a study, with summaries, CSV and plots."""

    runs: list[PruningRun]
    n_train: int

    def summary(self) -> list[dict[str, object]]:
        """Mean and std of the metric per (score, strategy, keep fraction), over seeds."""
        groups: dict[tuple[str, str, float], list[float]] = {}
        for run in self.runs:
            groups.setdefault((run.score, run.strategy, run.keep_fraction), []).append(run.metric)
        return [
            {
                "score": s,
                "strategy": st,
                "keep_fraction": f,
                "mean": float(np.mean(v)),
                "std": float(np.std(v)),
                "n_seeds": len(v),
            }
            for (s, st, f), v in sorted(groups.items())
        ]

    def full_data(self) -> tuple[float, float]:
        """Mean and std of the metric with all training data."""
        values = [r.metric for r in self.runs if r.score == FULL]
        return float(np.mean(values)), float(np.std(values))

    def largest_removable_fraction(self, score: str, strategy: str) -> float:
        """The largest fraction removed whose mean metric stays within one std (of the full-data
        runs) of the full-data mean; 0 when none does."""
        full_mean, full_std = self.full_data()
        removable = [
            1 - row["keep_fraction"]
            for row in self.summary()
            if row["score"] == score
            and row["strategy"] == strategy
            and row["mean"] >= full_mean - full_std
        ]
        return float(max(removable, default=0.0))

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["score", "strategy", "keep_fraction", "seed", "metric", "seconds"])
            for r in self.runs:
                writer.writerow(
                    [
                        r.score,
                        r.strategy,
                        r.keep_fraction,
                        r.seed,
                        repr(r.metric),
                        f"{r.seconds:.3f}",
                    ]
                )
        return path

    @classmethod
    def from_csv(cls, path: str | Path, n_train: int = 0) -> PruningResult:
        """Read what :meth:`to_csv` wrote (``n_train`` is not in the file)."""
        try:
            with Path(path).open(newline="") as handle:
                runs = [
                    PruningRun(
                        row["score"],
                        row["strategy"],
                        float(row["keep_fraction"]),
                        int(row["seed"]),
                        float(row["metric"]),
                        float(row["seconds"]),
                    )
                    for row in csv.DictReader(handle)
                ]
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise InputError(f"{path} is not a pruning-study runs.csv ({err})") from None
        return cls(runs, n_train)

    def text(self) -> str:
        """A short human summary: full data, random and every score at each fraction."""
        full_mean, full_std = self.full_data()
        lines = [f"full data ({self.n_train} examples): {full_mean:.4f} ± {full_std:.4f}"]
        for row in self.summary():
            if row["score"] == FULL:
                continue
            label = (
                row["score"] if row["score"] == RANDOM else f"{row['score']} / {row['strategy']}"
            )
            lines.append(
                f"keep {row['keep_fraction']:.0%} {label}: {row['mean']:.4f} ± {row['std']:.4f}"
            )
        for score, strategy in sorted(
            {(r.score, r.strategy) for r in self.runs if r.score not in (FULL, RANDOM)}
        ):
            removable = self.largest_removable_fraction(score, strategy)
            lines.append(
                f"{score} / {strategy}: up to {removable:.0%} removable within one std of full data"
            )
        return "\n".join(lines)

    def plot(self, path: str | Path, metric_name: str = "metric") -> Path:
        """Pruning curves (metric vs fraction kept, mean ± std) against random and full data."""
        path = Path(path)
        with saved_figure(path) as axis:
            full_mean, full_std = self.full_data()
            axis.axhline(full_mean, color="black", lw=1, label="full data")
            axis.axhspan(full_mean - full_std, full_mean + full_std, color="black", alpha=0.08)
            curves: dict[str, list[dict[str, object]]] = {}
            for row in self.summary():
                if row["score"] != FULL:
                    name = (
                        RANDOM if row["score"] == RANDOM else f"{row['score']} ({row['strategy']})"
                    )
                    curves.setdefault(name, []).append(row)
            for name, rows in curves.items():
                x = [r["keep_fraction"] for r in rows]
                style = {"color": "gray", "ls": "--"} if name == RANDOM else {}
                axis.errorbar(
                    x,
                    [r["mean"] for r in rows],
                    yerr=[r["std"] for r in rows],
                    marker="o",
                    capsize=3,
                    label=name,
                    **style,
                )
            axis.set_xlabel("fraction of training data kept")
            axis.set_ylabel(metric_name)
            axis.legend(fontsize=8)
            axis.grid(alpha=0.3)
        return path


def load_pruning_scores(
    paths: Mapping[str, str | Path], negate: Collection[str] = ()
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Saved per-example scores (name → scores directory), each oriented high = hard by its
    recorded direction (``negate``: the names of scores that record none and where high means
    easy), and the training ids they score — the same, in the same order, for every one."""
    unknown = set(negate) - set(paths)
    if unknown:
        raise InputError(f"negate names unknown scores {sorted(unknown)}")
    scores: dict[str, np.ndarray] = {}
    ids: list[str] | None = None
    for name, path in paths.items():
        loaded = load_scores(path, expect=SelfInfluence)
        if ids is not None and list(loaded.train_ids) != ids:
            raise InputError(
                f"{path} scores other examples (or another order) than the first score"
            )
        ids = list(loaded.train_ids)
        scores[name] = loaded.oriented(name in negate).values
    if ids is None:
        raise InputError("a pruning study needs at least one score")
    return scores, ids


@dataclass
class PruningStudy:
    """Retrain on score-pruned subsets, random subsets and the full data, with several seeds.

    Args:
        scores: score name → per-example scores (higher = harder), all of length ``n_train``.
        train_fn: ``train_fn(train_indices, seed) -> metric`` (higher is better).
        keep_fractions: fractions of the training set to keep.
        strategies: pruning strategies applied to every score.
        seeds: training seeds; random subsets use them too.
        labels: class labels (for ``class-stratified``).
        cache_dir: where every training run is cached (resumable).
        training_key: names the training settings; a cache made with other settings is refused.
        tie_break_seed: break score ties at random with this seed (default: by index).
    """

    scores: Mapping[str, np.ndarray]
    train_fn: Callable[[np.ndarray, int], float]
    keep_fractions: Sequence[float] = (0.3, 0.5, 0.7)
    strategies: Sequence[str] = ("keep-hard",)
    seeds: Sequence[int] = (0, 1, 2)
    labels: np.ndarray | None = None
    cache_dir: str | Path | None = None
    training_key: str = ""
    tie_break_seed: int | None = None
    plan: list[tuple[str, str, float, int]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not self.scores:
            raise InputError("a pruning study needs at least one score")
        lengths = {name: len(values) for name, values in self.scores.items()}
        if len(set(lengths.values())) != 1:
            raise InputError(f"scores differ in length: {lengths}")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise InputError(f"unknown strategies {unknown}; choose from {STRATEGIES}")
        if not self.seeds:
            raise InputError("give at least one seed")
        if not self.keep_fractions:
            raise InputError("give at least one keep fraction")
        bad = [f for f in self.keep_fractions if not (isinstance(f, (int, float)) and 0 < f <= 1)]
        if bad:
            raise InputError(f"keep fractions must lie in (0, 1], got {bad}")
        self.n_train = next(iter(lengths.values()))

    def _masks(self) -> tuple[np.ndarray, list[int]]:
        rows, seeds = [], []
        self.plan = []
        for seed in self.seeds:
            self.plan.append((FULL, FULL, 1.0, seed))
            rows.append(np.ones(self.n_train, dtype=bool))
            seeds.append(seed)
        for fraction in self.keep_fractions:
            for seed in self.seeds:
                rng = np.random.default_rng([seed, int(round(fraction * 1e6))])
                mask = np.zeros(self.n_train, dtype=bool)
                mask[
                    rng.choice(
                        self.n_train, max(1, int(round(fraction * self.n_train))), replace=False
                    )
                ] = True
                self.plan.append((RANDOM, RANDOM, fraction, seed))
                rows.append(mask)
                seeds.append(seed)
            for name, values in self.scores.items():
                for strategy in self.strategies:
                    mask = prune_mask(values, fraction, strategy, self.labels, self.tie_break_seed)
                    for seed in self.seeds:
                        self.plan.append((name, strategy, fraction, seed))
                        rows.append(mask)
                        seeds.append(seed)
        return np.array(rows), seeds

    def run(self, progress: bool = True) -> PruningResult:
        masks, seeds = self._masks()

        def train(indices: np.ndarray, seed: int) -> np.ndarray:
            return np.array([float(self.train_fn(indices, seed))])

        runner = RetrainingRunner(train, masks, self.cache_dir, seeds, self.training_key)
        outcomes = runner.run(progress=progress)
        runs = [
            PruningRun(
                name,
                strategy,
                float(fraction),
                int(seed),
                float(outcomes.outputs[i, 0]),
                float(outcomes.seconds[i]),
            )
            for i, (name, strategy, fraction, seed) in enumerate(self.plan)
        ]
        return PruningResult(runs, self.n_train)
