"""The model of this example: a softmax classifier on frozen sentence embeddings, trained with
Adam, seeded. It stands in for any model you train yourself: selection and pruning need only a way
to train it on some rows and measure it (`retrain.py`), and a record of its training dynamics.

The data `prepare.py` writes (`arrays.npz`) is read from RUN, relative to the working directory:
run the commands from the repository root.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

RUN = Path("runs/select_and_prune")


def load_arrays(run: Path = RUN) -> dict[str, np.ndarray]:
    """Embeddings and class indices of the pool and the evaluation rows, and settings."""
    with np.load(run / "arrays.npz", allow_pickle=False) as arrays:
        loaded = dict(arrays)
    loaded["settings"] = json.loads((run / "settings.json").read_text())
    return loaded


def fit(x: np.ndarray, y: np.ndarray, classes: int, seed: int, epochs: int, recorder=None,
        ids: list[str] | None = None) -> torch.nn.Linear:  # fmt: skip
    """Train on rows ``x`` (labels ``y``); with a ``DynamicsRecorder``, every minibatch's logits
    are recorded under the rows' ``ids`` — the forward pass training does anyway."""
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    model = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, labels = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    for epoch in range(epochs):
        order = generator.permutation(len(x))
        for start in range(0, len(x), 32):
            rows = order[start : start + 32]
            logits = model(inputs[rows])
            if recorder is not None:
                recorder.record([ids[r] for r in rows], logits.detach(), labels[rows], epoch)
            loss = torch.nn.functional.cross_entropy(logits, labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def accuracy(model: torch.nn.Linear, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
    return float((predicted == y).mean())
