"""Development draws for the audit's noise-structure setting (``BETA_RAMP``): dev tasks only.

For each *dev* task (``labelnoise.tasks.DEV_TASKS``; never a test task) and noise model and each
development seed (100, 101 by default; the benchmark reports seeds 0-2), one 5-fold run of the
benchmark's probe, then the audit's mixed class distribution (out-of-fold, epoch-mean and
neighbour-vote probabilities, weights by likelihood) ranked at fixed ``--betas``, next to
cleanlab's self-confidence and normalised margin of the same out-of-fold probabilities, and the
noise-structure estimate (``infscope.audit.evidence.noise_structure``) of those probabilities;
prints a markdown table. Each draw's probabilities are cached under ``--cache`` (a rerun only
re-ranks). Run from ``bench/``::

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
    label_suspicion,
    neighbour_votes,
    noise_structure,
    stack_weights,
)
from infscope.evaluation import mislabel_detection
from infscope.io import write_atomic
from labelnoise.tasks import DEV_TASKS, NOISE_MODELS, TASKS, add_noise, load_task

ROOT = Path(__file__).resolve().parents[2]


def average_precision(scores: np.ndarray, flipped: np.ndarray) -> float:
    return mislabel_detection(scores, flipped, fractions=(0.1,)).average_precision


def draw(name: str, noise: str, seed: int, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """One development draw's labels and class distributions (cached as ``.npz``)."""
    rate = TASKS[name].rate
    path = args.cache / f"{name}-{noise}-{seed}-r{rate}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    task = load_task(name, 1.0, args.data, args.embeddings)
    c = task.n_classes
    noisy, flipped = add_noise(task, noise, rate, 1000 + seed)
    config = ProbeConfig(hidden=256, epochs=10, seed=seed)
    oof = cross_validate(probe_fit_predict(task.embeddings, noisy, c, task.ids, config), noisy, c)
    votes = neighbour_votes(noisy, c, features=task.embeddings)
    arrays = {
        "noisy": noisy,
        "flipped": flipped,
        "oof": oof.probs,
        "epoch_mean": oof.epoch_mean_probs(task.ids),
        "votes": votes.probs,
    }
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(DEV_TASKS))
    parser.add_argument("--noise", default=",".join(NOISE_MODELS))
    parser.add_argument("--seeds", default="100,101")
    parser.add_argument("--betas", default="0,1")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--embeddings", type=Path, default=ROOT / "bench/results/audit_cleanlab/embeddings"
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "bench/results/audit_cleanlab/dev")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    betas = [float(b) for b in args.betas.split(",")]
    head = ["task / noise", "dev seed", "flips", "observed share", "uniform null (mean / 99%)"]
    head += ["concentration", "beyond chance", "β"]
    head += [f"AP, β = {b:g}" for b in betas]
    head += ["cleanlab self-confidence", "cleanlab normalised margin"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name in args.tasks.split(","):
        if TASKS[name].split != "dev":
            raise SystemExit(f"{name} is a test task: defaults are never chosen on it")
        for noise in args.noise.split(","):
            for seed in map(int, args.seeds.split(",")):
                d = draw(name, noise, seed, args)
                noisy, flipped = d["noisy"], d["flipped"]
                if d["oof"].shape[1] == 2 and noise == "confusable":
                    continue
                sources = [d["oof"], d["epoch_mean"], d["votes"]]
                weights = stack_weights(sources, noisy)
                q = sum(w * s for w, s in zip(weights, sources))
                structure = noise_structure(d["oof"], noisy)
                rows = np.arange(noisy.size)
                given = d["oof"][rows, noisy]
                others = d["oof"].copy()
                others[rows, noisy] = -np.inf
                cells = [f"{name} / {noise}", str(seed), str(structure.flips)]
                cells.append(f"{structure.observed:.3f}")
                cells.append(f"{structure.null_mean:.3f} / {structure.null_upper:.3f}")
                cells.append(f"{structure.concentration:.3f}")
                cells.append(f"{structure.shrunk:.3f}")
                cells.append(f"{structure.beta:.2f}")
                cells += [
                    f"{average_precision(label_suspicion(q, noisy, b)[0], flipped):.3f}"
                    for b in betas
                ]
                cells.append(f"{average_precision(-given, flipped):.3f}")
                cells.append(f"{average_precision(others.max(1) - given, flipped):.3f}")
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
