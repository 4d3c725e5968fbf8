"""The issue-23 failure on the test task ``banking77_20pc``: the previous noise-structure statistic
against ``infscope.audit.evidence.noise_structure`` on the benchmark's own draws (seeds 0-2, the
same probe and 5-fold out-of-fold probabilities), with the audit's AP at each statistic's β.

The previous statistic (removed from the library; kept here to show the before) was the
class-mass-weighted share of each true class's estimated flips (cleanlab's calibrated joint) that
go to its most common wrong label, rescaled by the infinite-sample uniform value ``1/(C - 1)``,
with β rising from 0 to 1 between 0.25 and 0.35. It is also computed from the true flips.
Only reports: nothing is chosen on a test task. Run from the repository root (about 2 minutes)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/labelnoise/before_after.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from infscope.audit import (  # noqa: E402
    AuditConfig,
    ProbeConfig,
    audit,
    cross_validate,
    noise_structure,
    probe_fit_predict,
)
from infscope.evaluation import mislabel_detection  # noqa: E402
from labelnoise.tasks import add_noise, load_task  # noqa: E402


def previous_statistic(probs: np.ndarray, labels: np.ndarray) -> float:
    from cleanlab.count import estimate_joint

    c = probs.shape[1]
    joint = estimate_joint(labels, probs)
    flips = np.where(np.eye(c, dtype=bool), 0.0, joint)
    share = flips.max(0) / np.maximum(flips.sum(0), 1e-12)
    mass = joint.sum(0)
    concentration = float((share * mass).sum() / max(mass.sum(), 1e-12))
    uniform = 1 / (c - 1)
    return float(np.clip((concentration - uniform) / (1 - uniform), 0, 1))


def main() -> None:
    torch.set_num_threads(1)
    task = load_task(
        "banking77_20pc",
        1.0,
        ROOT.parent / "shared" / "data",
        ROOT / "bench/results/audit_cleanlab/embeddings",
    )
    c = task.n_classes
    print(
        "| noise | seed | old statistic | old, from the true flips | old β | audit AP at old β | "
        "new concentration | beyond chance | new β | audit AP at new β |\n|" + "---|" * 10
    )
    for noise in ("uniform", "confusable"):
        for seed in (0, 1, 2):
            noisy, flipped = add_noise(task, noise, task.spec.rate, 1000 + seed)
            fit = probe_fit_predict(task.embeddings, noisy, c, task.ids, ProbeConfig(seed=seed))
            oof = cross_validate(fit, noisy, c, 5, seed)
            old = previous_statistic(oof.probs, noisy)
            old_beta = float(np.clip((old - 0.25) / 0.1, 0, 1))
            from_truth = previous_statistic(np.eye(c)[task.labels] * 0.9 + 0.1 / c, noisy)
            new = noise_structure(oof.probs, noisy, seed=seed)
            ap = {}
            for name, beta in (("old", old_beta), ("new", None)):
                result = audit(
                    noisy,
                    ids=task.ids,
                    n_classes=c,
                    out_of_fold=oof,
                    features=task.embeddings,
                    config=AuditConfig(seed=seed, beta=beta),
                )
                ap[name] = mislabel_detection(result.suspicion, flipped).average_precision
            print(
                f"| {noise} | {seed} | {old:.3f} | {from_truth:.3f} | {old_beta:.2f} | "
                f"{ap['old']:.3f} | {new.concentration:.3f} | {new.shrunk:.3f} | {new.beta:.2f} | "
                f"{ap['new']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
