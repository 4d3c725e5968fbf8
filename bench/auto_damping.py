"""``damping="auto"`` for every damped estimator on the classification tasks: the LDS at the
estimator's constant default, at ``damping="auto"`` with its declared share, at other shares
and at the best relative damping of a grid — one fit per estimator, every other row by
``with_damping`` (the same fitted state, as a fresh fit at that damping would give).

Dev tasks (the shares were chosen here): digits-logreg, digits-mlp. Test tasks (only
reported): digits-mlp-128, minilm-sst2. Ground truths are the ones ``attribution_quality.py``
builds and caches (M = 100 retrained models per task).

    OMP_NUM_THREADS=1 .venv/bin/python bench/auto_damping.py \
        --tasks digits-logreg,digits-mlp,digits-mlp-128,minilm-sst2 \
        --markdown bench/results/auto_damping.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attribution_quality as aq  # noqa: E402
from benchutil import cpu_model  # noqa: E402
from quality.ours import Workspace, methods, train_all  # noqa: E402

from infscope.evaluation import ResourceMeter, linear_datamodeling_score  # noqa: E402

SHARES = (0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
GRID = tuple(float(10**e) for e in np.arange(-4, 1.51, 0.5))  # relative dampings 1e-4 … 31.6
DEV = ("digits-logreg", "digits-mlp")


def _lds(fitted, damping, query, outcomes, **options) -> float | None:
    """LDS of ``fitted`` moved to ``damping`` (``None``: as fitted)."""
    try:
        estimator = fitted if damping is None else fitted.with_damping(damping, **options)
        scores = estimator.score(query).values.astype(np.float64)
    except Exception as err:  # an indefinite Hessian below its shift: no row, say why
        print(f"    {type(err).__name__}: {err}", flush=True)
        return None
    return float(linear_datamodeling_score(scores, outcomes).mean)


def run_task(name: str) -> list[dict]:
    task = aq.build_task(name, 1.0)
    trained = {"clean": train_all(task, task.train, task.ensemble)}
    outcomes, _, _ = aq.ground_truth(task, aq.SUBSETS[name])
    work = Path(tempfile.mkdtemp(prefix=f"auto-damping-{name}-", dir=aq.RESULTS))
    ws = Workspace(task, work, ResourceMeter(), trained, {})
    rows = []
    for method in methods(task):
        if not method.damped or "CG" in method.name:  # CG: the exact solver's scores, slower
            continue
        start = time.perf_counter()
        train, query = (
            ws.store(f"train:clean:{method.kind}"),
            ws.store(f"query:clean:{method.kind}"),
        )
        ws.load_final("clean")
        fitted = method.build(ws, "clean").fit(train)
        auto = fitted.with_damping("auto")
        shares = {s: _lds(fitted, "auto", query, outcomes, damping_share=s) for s in SHARES}
        grid = {d: _lds(fitted, d, query, outcomes) for d in GRID}
        best = max((d for d in grid if grid[d] is not None), key=lambda d: grid[d])
        row = {
            "task": name,
            "split": "dev" if name in DEV else "test",
            "method": method.name,
            "constant": _lds(fitted, None, query, outcomes),
            "share": auto.damping_share,
            "auto": _lds(auto, None, query, outcomes),
            "auto_relative": auto.damping,
            "auto_rule": auto.describe()["damping_rule"],
            "shares": shares,
            "grid": grid,
            "best_relative": best,
            "best": grid[best],
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        print(
            f"  {name} | {method.name}: constant {row['constant']}, auto (share {row['share']}, "
            f"λ {auto.damping:.3g}) {row['auto']}, grid best {row['best']:.3f} at {best:g}",
            flush=True,
        )
    return rows


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| split | task | estimator | constant default | auto (share → λ rel) | auto − grid best "
        "| grid best (λ rel) | " + " | ".join(f"share {s:g}" for s in SHARES) + " |",
        "|---" * (7 + len(SHARES)) + "|",
    ]
    for r in rows:
        gap = None if r["auto"] is None else r["auto"] - r["best"]
        lines.append(
            f"| {r['split']} | {r['task']} | {r['method']} | {_cell(r['constant'])} | "
            f"{_cell(r['auto'])} ({r['share']:g} → {r['auto_relative']:.3g}) | "
            f"{'—' if gap is None else f'{gap:+.3f}'} | {r['best']:.3f} ({r['best_relative']:.3g}) | "
            + " | ".join(_cell(r["shares"][s]) for s in SHARES)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="digits-logreg,digits-mlp,digits-mlp-128,minilm-sst2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{cpu_model()}, {args.threads} thread(s)", flush=True)
    rows = [row for name in args.tasks.split(",") for row in run_task(name)]
    table = markdown(rows)
    print(table)
    for path, text in (
        (args.markdown, table),
        (args.json, json.dumps(rows, indent=1, default=str)),
    ):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


if __name__ == "__main__":
    main()
