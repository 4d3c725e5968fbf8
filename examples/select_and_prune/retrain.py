"""Retraining for the selection and pruning example.

`train_fn(train_indices, seed)` is what `infscope prune --train-fn` calls: train on the pool rows
`train_indices` (positions in the scores' ids, which `prepare.py` saved in pool order) with
`seed`, and return one number, higher is better — here the accuracy on held-out rows of every
task. Run as a script, it measures a selected subset on the target task instead:

    python examples/select_and_prune/retrain.py runs/select_and_prune/cluster-match/subset.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # classifier.py, also when imported
from classifier import accuracy, fit, load_arrays  # noqa: E402


def read_ids(path: Path) -> list[str]:
    """The ids of a .jsonl file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["id"] for line in lines if line.strip()]


def train_fn(train_indices, seed: int) -> float:
    """Accuracy on the held-out rows of all tasks after training on the given pool rows."""
    data = load_arrays()
    rows = np.asarray(train_indices, dtype=np.int64)
    settings = data["settings"]
    model = fit(data["pool_emb"][rows], data["pool_labels"][rows], settings["classes"], seed,
                settings["epochs"])  # fmt: skip
    return accuracy(model, data["eval_emb"], data["eval_labels"])


def target_accuracy(
    subset_ids: list[str], seeds: tuple[int, ...] = (0, 1, 2)
) -> tuple[float, float]:
    """Mean and std over seeds of the target-task accuracy of a model trained on the subset."""
    from classifier import RUN

    position = {i: p for p, i in enumerate(read_ids(RUN / "pool.jsonl"))}
    rows = np.array([position[i] for i in subset_ids])
    data = load_arrays()
    target = data["eval_is_target"]
    settings = data["settings"]
    values = [
        accuracy(
            fit(data["pool_emb"][rows], data["pool_labels"][rows], settings["classes"], seed,
                settings["epochs"]),
            data["eval_emb"][target], data["eval_labels"][target],
        )
        for seed in seeds
    ]  # fmt: skip
    return float(np.mean(values)), float(np.std(values))


def main() -> None:
    parser = argparse.ArgumentParser(description="Target-task accuracy of a selected subset.")
    parser.add_argument("subsets", type=Path, nargs="+", help="subset.jsonl from infscope select")
    args = parser.parse_args()
    for path in args.subsets:
        ids = read_ids(path)
        mean, std = target_accuracy(ids)
        print(f"{path}: {len(ids)} rows, target-task accuracy {mean:.1%} ± {std:.1%} (3 seeds)")


if __name__ == "__main__":
    main()
