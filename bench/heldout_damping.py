"""A probe, not a default: would EK-FAC's damping on the eigen projection be better chosen by a
held-out check on the training store than by the spectrum share rule (``damping="auto"``)?

The check needs no retraining: in each module's eigenbasis the EK-FAC eigenvalue of a direction
is the mean square of the training features along it, so the examples of one half of the store
(even rows) estimate it and the other half (odd rows) test it. The damping chosen is the one
that maximises the two-fold held-out Gaussian likelihood of the features, ``Σ_j log(Λ_j + λ) +
m_j / (Λ_j + λ)`` (``Λ`` from one half, ``m`` the other half's mean square, both ways, ``λ``
relative to each module's mean eigenvalue as EK-FAC's damping is): the shrinkage under which the
fitted curvature best predicts gradients it has not seen. Per task, final model and trajectory:
the LDS at the share rule's damping, at the held-out one, and along the damping grid.

    OMP_NUM_THREADS=1 .venv/bin/python bench/heldout_damping.py --tasks gpt2-trec,lm-banking
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lm_defaults as lm  # noqa: E402

from infscope.attribution import EKFAC  # noqa: E402
from infscope.evaluation import ResourceMeter  # noqa: E402
from infscope.store import FeatureStore  # noqa: E402

#: relative dampings the held-out likelihood is evaluated at (8 per decade)
GRID = 10.0 ** np.arange(-7, 2.01, 0.125)


def halves(train: FeatureStore, estimator: EKFAC) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Per checkpoint and Kronecker block: the even and the odd rows' mean squared features and
    the block's damping unit (what relative damping multiplies)."""
    out = []
    for checkpoint, factors in estimator.factors_by_checkpoint.items():
        squares, counts = np.zeros((2, train.feature_dim)), np.zeros(2)
        for start, rows in train.iter_blocks(checkpoint):
            parity = np.arange(start, start + len(rows)) % 2
            for half in (0, 1):
                part = rows[parity == half].astype(np.float64)
                squares[half] += (part * part).sum(0)
                counts[half] += len(part)
        means = squares / counts[:, None]
        for block in factors.blocks:
            if block.kronecker:
                unit = block.damping_unit(estimator.n_train)
                out.append((means[0, block.slice], means[1, block.slice], unit))
    return out


def heldout_nll(stats, relative: float) -> float:
    """Two-fold held-out negative log-likelihood (up to constants) at ``relative`` damping."""
    total = 0.0
    for even, odd, unit in stats:
        for fitted, held in ((even, odd), (odd, even)):
            damped = fitted + relative * unit
            total += float(np.sum(np.log(damped) + held / damped))
    return total


def probe(name: str) -> dict:
    task = lm.build_task(name)
    trained = lm.train_all(task, task.train, 1)
    outcomes = lm.aq.ground_truth(task, lm.subsets(name))[0]
    work = Path(tempfile.mkdtemp(prefix=f"heldout-{name}-", dir=lm.OUT))
    report = {"task": name, "split": "dev" if name in lm.DEV else "test"}
    try:
        recipe = lm.Recipe(task, trained, work, ResourceMeter())
        for trajectory in (False, True):
            row, estimator = recipe.row("auto", "auto", trajectory, outcomes, "default")
            train, query = recipe.store("auto", trajectory)
            stats = halves(train, estimator)
            chosen = float(GRID[int(np.argmin([heldout_nll(stats, g) for g in GRID]))])
            curve = {f"{g:.3g}": lm._lds_at(estimator, query, g, outcomes) for g in GRID[::8]}
            key = "trajectory" if trajectory else "final"
            report[key] = {
                "share_rule": {"relative": estimator.damping, "lds": row["lds"]},
                "heldout": {
                    "relative": chosen,
                    "lds": lm._lds_at(estimator, query, chosen, outcomes),
                },
                "curve": curve,
            }
            print(f"{name} {key}: {report[key]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(lm.DEV + lm.TEST))
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm.OUT.mkdir(parents=True, exist_ok=True)
    for name in args.tasks.split(","):
        report = probe(name)
        (lm.OUT / f"{name}-heldout.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
