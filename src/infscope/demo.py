"""The demo: which training digits helped and hurt real predictions, and which labels are wrong.

Trains a small MLP on scikit-learn's bundled handwritten digits (no download) with a fraction of
training labels flipped, extracts projected gradient features at several checkpoints, scores test
predictions with TracIn and ranks training examples by self-influence to find the flipped labels.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from tqdm.auto import tqdm

from infscope.attribution import Scores, SelfInfluence, TracIn
from infscope.data import ExampleSet
from infscope.errors import InputError
from infscope.evaluation import mislabel_detection
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask


@dataclass
class DemoConfig:
    """Sizes of the demo run; ``threads`` torch threads while it runs (see README for times)."""

    flip_fraction: float = 0.1
    epochs: int = 30
    checkpoint_every: int = 5
    learning_rate: float = 0.1
    batch_size: int = 32
    hidden: int = 64
    projection: ProjectionConfig = field(
        default_factory=lambda: ProjectionConfig(kind="kronecker", dim=2048)
    )
    seed: int = 0
    threads: int = 1

    def validate(self) -> None:
        """InputError for settings that give no checkpoint to score with or nothing to detect."""
        if not 0 < self.flip_fraction < 1:
            raise InputError(
                f"flip_fraction must lie strictly between 0 and 1, got {self.flip_fraction}: "
                f"the demo measures how well self-influence finds flipped labels"
            )
        if not 1 <= self.checkpoint_every <= self.epochs:
            raise InputError(
                f"epochs ({self.epochs}) must be at least checkpoint_every "
                f"({self.checkpoint_every}) and checkpoint_every positive: TracIn needs a checkpoint"
            )
        if self.threads < 1:
            raise InputError(f"threads must be at least 1, got {self.threads}")


@dataclass
class DemoResult:
    """Everything the demo computed, for printing or testing."""

    scores: Scores
    self_influence: SelfInfluence
    flipped: np.ndarray
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    test_predictions: np.ndarray
    test_accuracy: float
    auc: float
    found_at: dict[float, float]


def _digits(config: DemoConfig):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=config.seed, stratify=digits.target
    )
    rng = np.random.default_rng(config.seed)
    flipped = np.zeros(len(y_train), dtype=bool)
    flipped[rng.choice(len(y_train), int(config.flip_fraction * len(y_train)), replace=False)] = (
        True
    )
    noisy = y_train.copy()
    noisy[flipped] = (y_train[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    return x_train, noisy, flipped, x_test, y_test


def _examples(x: np.ndarray, y: np.ndarray, prefix: str) -> ExampleSet:
    pairs = [(torch.from_numpy(x[i]), torch.tensor(int(y[i]))) for i in range(len(y))]
    return ExampleSet(pairs, tuple(f"{prefix}{i}" for i in range(len(y))))


def run_demo(config: DemoConfig | None = None, workdir: str | Path | None = None) -> DemoResult:
    """Train, checkpoint, extract features, score with ``config.threads`` torch threads (the
    caller's count is restored); returns the results (prints nothing)."""
    config = config or DemoConfig()
    config.validate()
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run(config, workdir)
    finally:
        torch.set_num_threads(previous)


def _run(config: DemoConfig, workdir: str | Path | None) -> DemoResult:
    torch.manual_seed(config.seed)
    x_train, y_train, flipped, x_test, y_test = _digits(config)
    train, test = _examples(x_train, y_train, "train-"), _examples(x_test, y_test, "test-")
    model = nn.Sequential(nn.Linear(64, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 10))
    task = ClassificationTask()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate)
    extractor = GradientExtractor(model, task, config.projection)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        train_store, test_store = root / "train-features", root / "test-features"
        generator = torch.Generator().manual_seed(config.seed)
        for epoch in tqdm(range(1, config.epochs + 1), desc="training", unit="epoch"):
            model.train()
            for index in torch.randperm(len(yt), generator=generator).split(config.batch_size):
                optimizer.zero_grad()
                task.train_loss(model, (xt[index], yt[index])).mean().backward()
                optimizer.step()
            if epoch % config.checkpoint_every == 0:
                checkpoint = f"epoch-{epoch}"
                for data, store, kind in (
                    (train, train_store, "loss"),
                    (test, test_store, "measurement"),
                ):
                    featurize(
                        extractor,
                        data,
                        store,
                        checkpoint,
                        gradient=kind,
                        learning_rate=config.learning_rate,
                        batch_size=256,
                        progress=False,
                    )
        estimator = TracIn().fit(FeatureStore.open(train_store))
        scores = estimator.score(FeatureStore.open(test_store))
        self_influence = estimator.self_influence()

    with torch.no_grad():
        predictions = model(torch.from_numpy(x_test)).argmax(1).numpy()
    detection = mislabel_detection(self_influence, flipped)
    return DemoResult(
        scores=scores,
        self_influence=self_influence,
        flipped=flipped,
        train_images=x_train,
        train_labels=y_train,
        test_images=x_test,
        test_labels=y_test,
        test_predictions=predictions,
        test_accuracy=float((predictions == y_test).mean()),
        auc=detection.auc,
        found_at=detection.found_at,
    )


_SHADES = " .:-=+*#%@"


def digit_art(image: np.ndarray) -> list[str]:
    """An 8x8 digit as 8 lines of text, two characters per pixel."""
    levels = np.clip((image.reshape(8, 8) * (len(_SHADES) - 1)).round().astype(int), 0, 9)
    return ["".join(_SHADES[v] * 2 for v in row) for row in levels]
