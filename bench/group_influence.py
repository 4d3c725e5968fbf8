"""Group influence against retraining without the group (issue 14, item 5).

What: two models trained to a (local) optimum of mean cross-entropy + (wd/2)‖θ‖² by full-batch
L-BFGS in float64 on scikit-learn digits (standardised pixels, a seeded train subset, the
remaining 397 images as the test set): (a) L2-regularised logistic regression (convex), (b) a
small MLP (64-16-10, tanh). Per seed, groups of 1%, 5%, 10% and 20% of the training data, drawn
at random or *coherent* (class-specific: one seeded class's examples; a group larger than a class
is filled from a second seeded class). For each group, ``infscope.group.group_influence``
predicts the change of the mean test loss when the group is removed — by the sum of individual
influences (``sum``), the Newton step on the remaining data linearised (``newton_linear``) and
with the test loss evaluated after the step (``newton``), and Basu et al.'s second-order
expansion (``second_order``) — and the ground truth retrains without the group (logistic
regression from its initialisation; the MLP from the trained weights, i.e. the nearby local
optimum of the rest's objective that every estimate approximates).

Metrics per model, kind and fraction: Pearson and Spearman correlation across groups (``--groups``
per seed, pooled over ``--seeds``, each seed a new draw of groups and for the MLP a new
initialisation) of predicted vs actual change of the mean test loss, and the mean absolute error
relative to the mean |actual change|.

Run (from the repository root; about 4 minutes on one thread, 74 s logreg + 149 s MLP)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/group_influence.py \\
        --markdown bench/results/group_influence/group_influence.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from benchutil import cpu_model, csv_list, fit_lbfgs, git_commit, markdown_table
from scipy.stats import pearsonr, spearmanr
from torch import nn

from infscope.data import ExampleSet
from infscope.group import METHODS, GroupConfig, group_influence, query_losses
from infscope.io import write_atomic
from infscope.tasks import ClassificationTask

ROOT = Path(__file__).resolve().parent.parent
TASK = ClassificationTask()
FRACTIONS = (0.01, 0.05, 0.10, 0.20)
KINDS = ("random", "class")
BATCH = 8192  # examples per pass (all of them on these data)

#: L-BFGS stopping tolerances (gradient, change): tighter than the default, groups are small
TOLERANCES = (1e-9, 1e-13)


@dataclass
class Problem:
    name: str
    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    build: Callable[[int], nn.Module]
    weight_decay: float
    damping: float  # on top of the weight decay, in every solve
    max_iter: int  # L-BFGS iterations of every training run
    warm: bool  # retrain from the trained weights (else from the initialisation)

    def examples(self, x, y, prefix) -> ExampleSet:
        return ExampleSet(
            [(x[i], y[i]) for i in range(len(y))], tuple(f"{prefix}{i}" for i in range(len(y)))
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--problems", type=csv_list(str, ["logreg", "mlp"]), default=["logreg", "mlp"]
    )
    parser.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    parser.add_argument("--groups", type=int, default=3, help="groups per kind, fraction and seed")
    parser.add_argument("--fractions", type=csv_list(float), default=list(FRACTIONS))
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "group_influence")
    parser.add_argument("--markdown", type=Path, default=None)
    return parser.parse_args()


def digits(n_train: int):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order] / 16.0, y[order]
    mean, std = x[:1400].mean(0), x[:1400].std(0) + 1e-3
    x = (x - mean) / std
    t = torch.as_tensor
    return t(x[:n_train]), t(y[:n_train]), t(x[1400:]), t(y[1400:])


def problems(args) -> dict[str, Callable[[], Problem]]:
    def logreg() -> Problem:
        def build(seed: int) -> nn.Module:
            torch.manual_seed(seed)
            return nn.Linear(64, 10).double()

        name = f"logreg (digits, {args.n_train} train)"
        return Problem(name, *digits(args.n_train), build, 1e-2, 0.0, 2000, False)

    def mlp() -> Problem:
        def build(seed: int) -> nn.Module:
            torch.manual_seed(seed)
            return nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).double()

        name = f"MLP 64-16-10 tanh (digits, {args.n_train} train)"
        return Problem(name, *digits(args.n_train), build, 3e-3, 1e-2, 500, True)

    return {"logreg": logreg, "mlp": mlp}


def draw_group(y: np.ndarray, fraction: float, kind: str, rng) -> np.ndarray:
    size = max(1, round(fraction * len(y)))
    if kind == "random":
        return np.sort(rng.choice(len(y), size, replace=False))
    chosen = []
    for c in rng.permutation(int(y.max()) + 1):  # one class, then a second if it is too small
        members = np.flatnonzero(y == c)
        take = min(size - len(chosen), len(members))
        chosen += list(rng.choice(members, take, replace=False))
        if len(chosen) == size:
            break
    return np.sort(np.array(chosen))


def run_problem(problem: Problem, args) -> dict:
    train = problem.examples(problem.x, problem.y, "t")
    test = problem.examples(problem.x_test, problem.y_test, "q")
    y = problem.y.numpy()
    config = GroupConfig(
        weight_decay=problem.weight_decay,
        ridge=problem.damping,
        tol=1e-6,
        max_iter=100,
        batch_size=BATCH,
    )
    rows, seconds = [], {"estimate": 0.0, "retrain": 0.0}
    for seed in args.seeds:
        model = problem.build(seed)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        fit_lbfgs(model, problem.x, problem.y, problem.weight_decay, problem.max_iter, *TOLERANCES)
        trained = {k: v.clone() for k, v in model.state_dict().items()}
        base = query_losses(model, TASK, test).mean()
        rng = np.random.default_rng(1000 + seed)
        cells, groups = [], []
        for kind in KINDS:
            for fraction in args.fractions:
                for _ in range(args.groups):
                    groups.append(draw_group(y, fraction, kind, rng))
                    cells.append((kind, fraction))
        start = time.perf_counter()
        ids = [[train.ids[i] for i in g] for g in groups]
        result = group_influence(model, TASK, train, test, ids, config)
        seconds["estimate"] += time.perf_counter() - start
        start = time.perf_counter()
        for k, (cell, group) in enumerate(zip(cells, groups, strict=True)):
            keep = np.setdiff1d(np.arange(len(y)), group)
            again = problem.build(seed)
            again.load_state_dict(trained if problem.warm else init)
            fit_lbfgs(
                again,
                problem.x[keep],
                problem.y[keep],
                problem.weight_decay,
                problem.max_iter,
                *TOLERANCES,
            )
            actual = float(query_losses(again, TASK, test).mean() - base)
            predicted = {m: float(p[k].mean()) for m, p in result.predictions.items()}
            rows.append(
                {
                    "seed": seed,
                    "kind": cell[0],
                    "fraction": cell[1],
                    "size": len(group),
                    "actual": actual,
                    **predicted,
                }
            )
        seconds["retrain"] += time.perf_counter() - start
        print(f"{problem.name} seed {seed}: {seconds}", file=sys.stderr, flush=True)
    return {"problem": problem.name, "rows": rows, "seconds": seconds, "config": vars(config)}


def summarise(result: dict, fractions) -> list[dict]:
    out = []
    for kind in KINDS:
        for fraction in [*fractions, None]:  # None: every fraction of the kind pooled
            cell = [
                r for r in result["rows"] if r["kind"] == kind and fraction in (None, r["fraction"])
            ]
            actual = np.array([r["actual"] for r in cell])
            entry = {"kind": kind, "fraction": fraction, "groups": len(cell)}
            for m in METHODS:
                pred = np.array([r[m] for r in cell])
                entry[m] = {
                    "pearson": float(pearsonr(pred, actual)[0]),
                    "spearman": float(spearmanr(pred, actual)[0]),
                    "rel_mae": float(np.abs(pred - actual).mean() / np.abs(actual).mean()),
                }
            out.append(entry)
    return out


def render(results: list[dict], header: str, fractions) -> str:
    parts = [header]
    for result in results:
        summary = result["summary"]
        parts.append(
            f"\n### {result['problem']}\n\nestimates {result['seconds']['estimate']:.1f} s, "
            f"retraining {result['seconds']['retrain']:.1f} s (all seeds); cells: Pearson / "
            f"Spearman / relative MAE of the mean-test-loss change over {summary[0]['groups']} "
            "groups per fraction (all: the kind's groups pooled)\n"
        )
        header_row = ["kind", "fraction", *METHODS]
        table = [
            [
                s["kind"],
                "all" if s["fraction"] is None else f"{s['fraction']:.0%}",
                *(
                    f"{s[m]['pearson']:.3f} / {s[m]['spearman']:.3f} / {s[m]['rel_mae']:.2f}"
                    for m in METHODS
                ),
            ]
            for s in summary
        ]
        parts.append(markdown_table(header_row, table))
    return "\n".join(parts) + "\n"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    table = problems(args)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.problems:
        result = run_problem(table[name](), args)
        result["summary"] = summarise(result, args.fractions)
        results.append(result)
        write_atomic(
            args.out / f"group_influence_{'_'.join(args.problems)}.json",
            json.dumps(results, indent=1).encode(),
        )
    header = (
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`\n\n"
        f"Machine: {platform.platform()}, CPU {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"{torch.get_num_threads()} torch thread(s) (OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), no GPU; torch {torch.__version__}; "
        f"infscope {git_commit()}; seeds {args.seeds}, {args.groups} groups per kind, fraction "
        f"and seed; wall time {time.perf_counter() - started:.0f} s.\n"
    )
    text = render(results, header, args.fractions)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.markdown, text.encode())
    print(text)


if __name__ == "__main__":
    main()
