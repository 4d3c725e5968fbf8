"""A tiny deterministic record set: 3 examples x 3 epochs x 3 classes, logits = log(probabilities)
so every recorded quantity has a closed form. Expected scores are written out by hand in the tests."""

from __future__ import annotations

import numpy as np
import torch

from infscope.dynamics import DynamicsRecorder

IDS = ["a", "b", "c"]
LABELS = [0, 1, 0]
#: PROBS[example][epoch] — a: correct, wrong, correct; b: wrong, correct, correct; c: never right
PROBS = {
    "a": [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.8, 0.1, 0.1]],
    "b": [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.1, 0.8, 0.1]],
    "c": [[0.25, 0.5, 0.25], [0.2, 0.6, 0.2], [0.1, 0.8, 0.1]],
}
#: final-layer inputs h: ||[h, 1]|| = 2 for a, 1 for b, 3 for c
FEATURES = {"a": [1.0, 1.0, 1.0], "b": [0.0, 0.0, 0.0], "c": [2.0, 2.0, 0.0]}


def table_recorder(order_per_epoch=None) -> DynamicsRecorder:
    """Record the table one example at a time, in ``order_per_epoch[e]`` (default a, b, c)."""
    recorder = DynamicsRecorder()
    for epoch in range(3):
        order = IDS if order_per_epoch is None else order_per_epoch[epoch]
        for i in order:
            k = IDS.index(i)
            logits = torch.log(torch.tensor([PROBS[i][epoch]], dtype=torch.float64))
            features = torch.tensor([FEATURES[i]], dtype=torch.float64)
            recorder.record([i], logits, torch.tensor([LABELS[k]]), epoch, features=features)
    return recorder


def random_records(n: int = 10, epochs: int = 3, classes: int = 4, seed: int = 0):
    generator = np.random.default_rng(seed)
    logits = generator.normal(size=(epochs, n, classes)) * 2
    labels = generator.integers(0, classes, size=n)
    features = generator.normal(size=(epochs, n, 5))
    return logits, labels, features
