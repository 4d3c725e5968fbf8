"""Influence-based unlearning against retraining without the forget set.

What: two models trained to a (local) optimum of mean cross-entropy + (wd/2)‖θ‖² by full-batch
L-BFGS in float64 — (a) L2-regularised logistic regression on scikit-learn digits (convex: the
Newton step should be nearly exact), (b) an MLP (384-32-6, tanh) on frozen MiniLM-L6 sentence
embeddings of 2,000 TREC questions (cached by ``bench/audit_cleanlab.py``; digits pixels instead
when the cache is missing) — and, per seed and forget set, the same model retrained without the
forget set twice: from the same initial weights ("from scratch", the ground truth of unlearning)
and from the trained weights ("warm": the local optimum of the rest's objective, which is what a
Newton step approximates; on the convex task the two coincide). Forget sets: 1%, 5% and 10% of
the training data, drawn at random or from one class (a seeded class's examples, up to that
size). Methods (``infscope.unlearning``): the Newton step (``newton``), two Newton steps
(``newton-2``), the forget-gradient-only influence form (``influence``), Newton + 10 full-batch
gradient steps of correction on the rest (``newton+corr``), the Newton step on the MLP's output
layer only (``newton-head``), and the baselines: fine-tuning on the rest (100 SGD steps, batch
128) and gradient ascent on the forget set (10 steps), their learning rates tuned on a
development draw (seed 100, random 5%) by parameter distance — in the baselines' favour —
as is the Newton step's extra damping (0, 1e-3, 1e-2 or 0.1 on top of the weight decay).
``original`` is the model before unlearning.

Metrics, mean ± std over ``--seeds`` (each a new forget draw; for the MLP also a new
initialisation): relative parameter distance ‖θ_u − θ_r‖ / ‖θ_o − θ_r‖ (0 = the retrained model,
1 = no better than doing nothing), test-prediction agreement with the retrained model, accuracy on
the forget set, test accuracy, the loss gap (mean loss on the forget set minus on the test set)
and seconds, against the retraining's seconds.

Run (from the repository root; about 8 minutes on one thread)::

    flock /tmp/infscope-heavy.lock env OMP_NUM_THREADS=1 .venv/bin/python bench/unlearning.py \\
        --markdown bench/results/unlearning/unlearning.md
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
from torch import nn

from infscope.data import ExampleSet
from infscope.errors import InputError
from infscope.io import write_atomic
from infscope.tasks import ClassificationTask
from infscope.unlearning import (
    GradientConfig,
    NewtonConfig,
    Unlearned,
    agreement,
    ascent_unlearn,
    finetune_unlearn,
    loss_gap,
    newton_unlearn,
    parameter_distance,
)

ROOT = Path(__file__).resolve().parent.parent
TASK = ClassificationTask()
FRACTIONS = (0.01, 0.05, 0.10)
KINDS = ("random", "class")
FINETUNE_LRS = (0.03, 0.1, 0.3, 1.0, 3.0)
ASCENT_LRS = (0.001, 0.003, 0.01, 0.03, 0.1)
#: extra damping of the Newton step (on top of the weight decay), tuned like the baselines
DAMPINGS = (0.0, 1e-3, 1e-2, 1e-1)
DEV_SEED = 100
#: examples per pass of the Newton step's gradients and Hessian products (all, on these data)
BATCH = 8192
#: training examples of the MLP task (a seeded subset of TREC's 5,452, for the time budget)
MLP_TRAIN = 2000


@dataclass
class Problem:
    """Training and test arrays and how to build the model."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    build: Callable[[int], nn.Module]
    weight_decay: float
    head: list[str] | None  # modules of the top layer, for newton-head
    max_iter: int  # L-BFGS iterations of every training run

    def examples(self) -> ExampleSet:
        return ExampleSet(
            [(self.x[i], self.y[i]) for i in range(len(self.y))],
            tuple(f"t{i}" for i in range(len(self.y))),
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--problems", type=csv_list(str, ["logreg", "mlp"]), default=["logreg", "mlp"]
    )
    parser.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    parser.add_argument("--fractions", type=csv_list(float), default=list(FRACTIONS))
    parser.add_argument("--kinds", type=csv_list(str, list(KINDS)), default=list(KINDS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--embeddings",
        type=Path,
        default=ROOT / "bench" / "results" / "audit_cleanlab" / "embeddings",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "unlearning")
    parser.add_argument("--markdown", type=Path, default=None)
    return parser.parse_args()


def digits_problem() -> Problem:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order] / 16.0, y[order]
    mean, std = x[:1400].mean(0), x[:1400].std(0) + 1e-3
    x = (x - mean) / std

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Linear(64, 10).double()

    t = torch.as_tensor
    x_train, y_train, x_test, y_test = t(x[:1400]), t(y[:1400]), t(x[1400:]), t(y[1400:])
    return Problem("logreg (digits)", x_train, y_train, x_test, y_test, build, 1e-2, None, 2000)


def mlp_problem(args: argparse.Namespace) -> Problem:
    sys.path.insert(0, str(ROOT / "bench"))
    import labelnoise.tasks as text_tasks

    def refuse(*_args, **_kwargs):
        raise FileNotFoundError("embeddings are not cached")

    text_tasks.embed = refuse  # only cached embeddings: never run the encoder here
    try:
        task = text_tasks.load_task("trec", 1.0, args.data, args.embeddings)
        name = f"MLP (TREC, MiniLM embeddings, {MLP_TRAIN} of {len(task)} training examples)"
        keep = np.sort(np.random.default_rng(0).choice(len(task), MLP_TRAIN, replace=False))
        x, y = task.embeddings[keep].astype(np.float64), task.labels[keep]
        x_test, y_test, classes = task.test_embeddings.astype(np.float64), task.test_labels, 6
    except (FileNotFoundError, OSError):
        digits = digits_problem()
        name = "MLP (digits pixels)"
        x, y, x_test, y_test = (
            a.numpy() for a in (digits.x, digits.y, digits.x_test, digits.y_test)
        )
        classes = 10
    width = x.shape[1]

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(width, 32), nn.Tanh(), nn.Linear(32, classes)).double()

    t = torch.as_tensor
    return Problem(name, t(x), t(y), t(x_test), t(y_test), build, 3e-3, ["2"], 500)


def forget_positions(y: np.ndarray, fraction: float, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = max(1, round(fraction * len(y)))
    if kind == "random":
        return np.sort(rng.choice(len(y), size, replace=False))
    counts = np.bincount(y)
    chosen = rng.choice(np.flatnonzero(counts >= size))
    members = np.flatnonzero(y == chosen)
    return np.sort(rng.choice(members, size, replace=False))


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        logits = model(x)
        losses = nn.functional.cross_entropy(logits, y, reduction="none")
    return logits.argmax(1).numpy(), losses.numpy()


def methods(problem: Problem, tuned: dict[str, float]) -> dict[str, Callable]:
    wd, damping = problem.weight_decay, tuned["damping"]
    finetune_lr, ascent_lr = tuned["finetune"], tuned["ascent"]

    def newton(**options):
        config = NewtonConfig(
            weight_decay=wd, ridge=damping, tol=1e-6, max_iter=100, batch_size=BATCH, **options
        )
        return lambda m, d, f: newton_unlearn(m, TASK, d, f, config)

    # full-batch steps: minibatch noise at the tuned rate would undo the Newton step's precision
    correction = GradientConfig(
        steps=10, lr=finetune_lr, batch_size=len(problem.y), weight_decay=wd
    )
    table = {
        "newton": newton(),
        "newton-2": newton(newton_steps=2),
        "influence": newton(form="influence"),
        "newton+corr": newton(correction=correction),
    }
    if problem.head is not None:
        head = NewtonConfig(
            weight_decay=wd, ridge=damping, tol=1e-6, max_iter=100, batch_size=BATCH
        )
        table["newton-head"] = lambda m, d, f: newton_unlearn(m, TASK, d, f, head, problem.head)
    finetune = GradientConfig(steps=100, lr=finetune_lr, batch_size=128, weight_decay=wd)
    ascent = GradientConfig(steps=10, lr=ascent_lr, batch_size=128)
    table["finetune"] = lambda m, d, f: finetune_unlearn(m, TASK, d, f, finetune)
    table["ascent"] = lambda m, d, f: ascent_unlearn(m, TASK, d, f, ascent)
    return table


def trained(problem: Problem, seed: int, cache: dict) -> tuple[nn.Module, dict, float]:
    """The model trained on all data from seed ``seed``'s initialisation (cached per seed)."""
    if seed not in cache:
        model = problem.build(seed)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        seconds = fit_lbfgs(model, problem.x, problem.y, problem.weight_decay, problem.max_iter)
        cache[seed] = (model, init, seconds)
    return cache[seed]


def retrained(problem: Problem, init: dict, keep: np.ndarray) -> tuple[nn.Module, float]:
    """Trained on ``keep`` from the weights ``init``: the initialisation (retraining from scratch)
    or the trained weights ("warm": the local minimum of the rest's objective that the Newton
    step aims at)."""
    model = problem.build(0)
    model.load_state_dict(init)
    seconds = fit_lbfgs(
        model, problem.x[keep], problem.y[keep], problem.weight_decay, problem.max_iter
    )
    return model, seconds


def measure(problem: Problem, model: nn.Module, targets: dict, original: nn.Module, forget) -> dict:
    """Metrics of ``model`` against ``targets`` (the scratch and warm retrained models)."""
    pred, test_losses = evaluate(model, problem.x_test, problem.y_test)
    f_pred, f_losses = evaluate(model, problem.x[forget], problem.y[forget])
    out = {}
    for which, target in targets.items():
        out[f"distance_{which}"] = parameter_distance(
            model.state_dict(), target.state_dict(), original.state_dict()
        )
        target_pred = evaluate(target, problem.x_test, problem.y_test)[0]
        out[f"agreement_{which}"] = agreement(pred, target_pred)
    out["forget_acc"] = float((f_pred == problem.y[forget].numpy()).mean())
    out["test_acc"] = float((pred == problem.y_test.numpy()).mean())
    out["gap"] = loss_gap(f_losses, test_losses)
    return out


def tune(problem: Problem, cache: dict) -> tuple[dict[str, float], dict]:
    """The Newton step's extra damping and the learning rates of fine-tuning and ascent that
    minimise the parameter distance to the
    rest's local optimum (equal to the scratch retraining on the convex task; informative on the
    MLP, where every method is about as far from the scratch retraining) on the development draw
    (seed 100, random 5%)."""
    model, _, _ = trained(problem, 0, cache)
    examples = problem.examples()
    forget = forget_positions(problem.y.numpy(), 0.05, "random", DEV_SEED)
    keep = np.setdiff1d(np.arange(len(problem.y)), forget)
    target, _ = retrained(problem, model.state_dict(), keep)
    ids = [examples.ids[i] for i in forget]
    wd = problem.weight_decay
    grids = {
        "finetune": [
            (
                lr,
                finetune_unlearn,
                GradientConfig(steps=100, lr=lr, batch_size=128, weight_decay=wd),
            )
            for lr in FINETUNE_LRS
        ],
        "ascent": [
            (lr, ascent_unlearn, GradientConfig(steps=10, lr=lr, batch_size=128))
            for lr in ASCENT_LRS
        ],
        "damping": [
            (
                damping,
                newton_unlearn,
                NewtonConfig(
                    weight_decay=wd, ridge=damping, tol=1e-6, max_iter=100, batch_size=BATCH
                ),
            )
            for damping in DAMPINGS
        ],
    }
    scores: dict[str, dict[str, float]] = {}
    for name, grid in grids.items():
        scores[name] = {}
        for lr, method, config in grid:
            try:
                out = method(model, TASK, examples, ids, config).model
                distance = parameter_distance(
                    out.state_dict(), target.state_dict(), model.state_dict()
                )
            except InputError:  # a diverging learning rate (or no damping at all) is not chosen
                distance = float("inf")
            scores[name][str(lr)] = distance
    best = {name: float(min(v, key=v.get)) for name, v in scores.items()}
    return best, scores


def run_problem(problem: Problem, args: argparse.Namespace) -> dict:
    cache: dict = {}
    tuned, tuning = tune(problem, cache)
    print(f"{problem.name}: tuned {tuned}", flush=True)
    table = methods(problem, tuned)
    examples = problem.examples()
    cells = []
    for kind in args.kinds:
        for fraction in args.fractions:
            for seed in args.seeds:
                model, init, train_seconds = trained(problem, seed, cache)
                forget = forget_positions(problem.y.numpy(), fraction, kind, seed)
                keep = np.setdiff1d(np.arange(len(problem.y)), forget)
                target, retrain_seconds = retrained(problem, init, keep)
                warm, warm_seconds = retrained(problem, model.state_dict(), keep)
                targets = {"scratch": target, "warm": warm}
                ids = [examples.ids[i] for i in forget]
                rows = {}
                for name, reference, seconds in (
                    ("original", model, 0.0),
                    ("retrained", target, retrain_seconds),
                    ("retrained (warm)", warm, warm_seconds),
                ):
                    rows[name] = measure(problem, reference, targets, model, forget)
                    rows[name]["seconds"] = seconds
                for name, method in table.items():
                    start = time.perf_counter()
                    result: Unlearned = method(model, examples, ids)
                    seconds = time.perf_counter() - start
                    rows[name] = measure(problem, result.model, targets, model, forget)
                    rows[name]["seconds"] = seconds
                    steps = result.info.get("steps")
                    if steps:
                        rows[name]["cg_iterations"] = sum(s["cg_iterations"] for s in steps)
                cells.append(
                    {
                        "kind": kind,
                        "fraction": fraction,
                        "seed": seed,
                        "n_forget": len(forget),
                        "rows": rows,
                    }
                )
                print(
                    f"  {kind} {fraction:.0%} seed {seed}: distance (scratch / warm) newton "
                    f"{rows['newton']['distance_scratch']:.3f} / {rows['newton']['distance_warm']:.3f}"
                    f", finetune {rows['finetune']['distance_scratch']:.3f} / "
                    f"{rows['finetune']['distance_warm']:.3f}; retrain {retrain_seconds:.1f} s, "
                    f"newton {rows['newton']['seconds']:.1f} s",
                    flush=True,
                )
    return {
        "problem": problem.name,
        "n_train": len(problem.y),
        "n_test": len(problem.y_test),
        "n_params": int(sum(p.numel() for p in problem.build(0).parameters())),
        "weight_decay": problem.weight_decay,
        "tuned": tuned,
        "tuning": tuning,
        "cells": cells,
    }


def pm(values: list[float], digits: int = 3) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _values(cells: list[dict], name: str, kind: str, fraction: float, key: str) -> list[float]:
    return [c["rows"][name][key] for c in cells if c["kind"] == kind and c["fraction"] == fraction]


def render(results: list[dict], header: str) -> str:
    out = [header]
    for result in results:
        cells = result["cells"]
        names = list(cells[0]["rows"])
        sets = list(dict.fromkeys((c["kind"], c["fraction"]) for c in cells))

        out.append(
            f"\n### {result['problem']}\n\n{result['n_train']} training / {result['n_test']} test "
            f"examples, {result['n_params']} parameters, weight decay {result['weight_decay']}; "
            f"tuned on the development draw: Newton damping {result['tuned']['damping']} (+ the "
            f"weight decay), learning rates fine-tuning {result['tuned']['finetune']}, ascent "
            f"{result['tuned']['ascent']}.\n"
        )
        for key, title, digits in (
            (
                "distance_scratch",
                "Relative parameter distance to the model retrained from scratch",
                3,
            ),
            (
                "distance_warm",
                "Relative parameter distance to the rest's local optimum (warm retraining)",
                3,
            ),
            (
                "agreement_scratch",
                "Test-prediction agreement with the model retrained from scratch",
                3,
            ),
            ("agreement_warm", "Test-prediction agreement with the warm-retrained model", 3),
            ("forget_acc", "Accuracy on the forget set", 3),
            ("gap", "Loss gap: mean loss on the forget set minus on the test set", 3),
            ("test_acc", "Test accuracy", 3),
            (
                "seconds",
                "Seconds (retrained: L-BFGS from the initialisation; warm: from the trained weights)",
                2,
            ),
        ):
            rows = []
            for name in names:
                if key.startswith("distance") and name.startswith("retrained"):
                    continue
                rows.append([name] + [pm(_values(cells, name, k, f, key), digits) for k, f in sets])
            columns = [f"{k} {f:.0%}" for k, f in sets]
            out.append(f"\n{title}:\n\n" + markdown_table(["method", *columns], rows))
    return "\n".join(out) + "\n"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    problems = {"logreg": digits_problem, "mlp": lambda: mlp_problem(args)}
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.problems:  # results are written after each problem
        results.append(run_problem(problems[name](), args))
        write_atomic(args.out / "unlearning.json", json.dumps(results, indent=1).encode())
        header = (
            f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`\n\n"
            f"Machine: {platform.platform()}, CPU {cpu_model()}, {os.cpu_count()} logical CPUs, "
            f"{torch.get_num_threads()} torch thread(s) (OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), no GPU; torch {torch.__version__}; "
            f"infscope {git_commit()}; seeds {args.seeds}; wall time "
            f"{time.perf_counter() - started:.0f} s.\n"
        )
        text = render(results, header)
        if args.markdown is not None:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(args.markdown, text.encode())
    print(text)


if __name__ == "__main__":
    main()
