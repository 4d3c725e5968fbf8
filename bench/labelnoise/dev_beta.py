"""Development draws for the audit's noise-structure setting (``BETA_RAMP``): not reported seeds.

For each task and noise model of ``bench/audit_cleanlab.py`` and each development seed (100, 101
by default), one 5-fold run of the same probe, then the audit's mixed class distribution (out-of-
fold, epoch-mean and neighbour-vote probabilities, weights by likelihood) ranked at fixed
``--betas`` next to cleanlab's self-confidence and normalised margin of the same out-of-fold
probabilities; prints a markdown table of average precisions. Run from ``bench/``::

    cd bench && OMP_NUM_THREADS=1 flock /tmp/infscope-heavy.lock ../.venv/bin/python \\
        -m labelnoise.dev_beta

(about 6 minutes on one CPU thread with the benchmark's cached embeddings).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from infscope.audit import ProbeConfig, cross_validate, probe_fit_predict
from infscope.audit.evidence import (
    beta_for,
    label_suspicion,
    neighbour_votes,
    noise_concentration,
    stack_weights,
)
from infscope.evaluation import mislabel_detection
from labelnoise.tasks import NOISE_MODELS, TASKS, add_noise, load_task

ROOT = Path(__file__).resolve().parents[2]


def average_precision(scores: np.ndarray, flipped: np.ndarray) -> float:
    return mislabel_detection(scores, flipped, fractions=(0.1,)).average_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--noise", default=",".join(NOISE_MODELS))
    parser.add_argument("--seeds", default="100,101")
    parser.add_argument("--betas", default="0,1,2")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--embeddings", type=Path, default=ROOT / "bench/results/audit_cleanlab/embeddings"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    betas = [float(b) for b in args.betas.split(",")]
    head = ["task / noise", "dev seed", "noise concentration", "β (ramp)"]
    head += [f"AP, β = {b:g}" for b in betas]
    head += ["cleanlab self-confidence", "cleanlab normalised margin"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name in args.tasks.split(","):
        task = load_task(name, 1.0, args.data, args.embeddings)
        c = task.n_classes
        for noise in args.noise.split(","):
            if c == 2 and noise == "confusable":
                continue
            for seed in map(int, args.seeds.split(",")):
                noisy, flipped = add_noise(task, noise, 0.1, 1000 + seed)
                config = ProbeConfig(hidden=256, epochs=10, seed=seed)
                fit = probe_fit_predict(task.embeddings, noisy, c, task.ids, config)
                oof = cross_validate(fit, noisy, c, 5, seed)
                votes = neighbour_votes(noisy, c, features=task.embeddings)
                sources = [oof.probs, oof.epoch_mean_probs(task.ids), votes.probs]
                weights = stack_weights(sources, noisy)
                q = sum(w * s for w, s in zip(weights, sources))
                concentration = noise_concentration(oof.probs, noisy)
                rows = np.arange(noisy.size)
                given = oof.probs[rows, noisy]
                others = oof.probs.copy()
                others[rows, noisy] = -np.inf
                cells = [f"{name} / {noise}", str(seed), f"{concentration:.2f}"]
                cells.append(f"{beta_for(concentration):.1f}")
                cells += [
                    f"{average_precision(label_suspicion(q, noisy, b)[0], flipped):.3f}"
                    for b in betas
                ]
                cells.append(f"{average_precision(-given, flipped):.3f}")
                cells.append(f"{average_precision(others.max(1) - given, flipped):.3f}")
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
