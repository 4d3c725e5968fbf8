"""Held-out language-model tasks: *test* tasks of ``bench/lm_defaults.py``, never used to choose a
default. Each differs from the dev tasks (``gpt2-trec``, ``lm-banking``, ``lm-lora-banking`` of
:mod:`.tasks`) in corpus, training recipe or size:

* ``lm-agnews`` — a GPT-2 trained from scratch on AG News sentences (news text, not questions);
* ``lm-lora-trec`` — a GPT-2 pre-trained on TREC and SMS texts, fine-tuned with LoRA adapters
  (peft) on TREC questions → their coarse type;
* ``lm-snli-wide`` — a wider GPT-2 (d = 256) over a larger vocabulary, SNLI premise → hypothesis:
  longer completions.
* ``lm-qnli-deep`` — a deeper GPT-2 (4 layers) trained from scratch on Wikipedia text (QNLI
  question → the sentence that may answer it): the longest completions (~30 tokens).

and one dev task, ``lm-lora-sst2`` (LoRA on SST-2 sentiment: a spectrum as concentrated as the
LoRA test task's, which no other dev task has).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from infscope.tasks import HFCausalLMTask

from .common import BenchTask
from .tasks import (
    CompactTokenizer,
    _causal_lm_task,
    _conv1d_to_linear,
    _gpt2_config,
    _gpt2_from_scratch,
    _minilm_tokenizer,
    _read_jsonl,
)

TRAIN, QUERY, HELDOUT = 500, 100, 50
TREC_TYPES = ("abbreviation", "description", "entity", "person", "location", "number")
SENTIMENTS = ("negative", "positive")
#: SST-2 phrases the ``lm-lora-sst2`` GPT-2 is pre-trained on
SST2_CORPUS = 10_000


def _splits(rows: list[dict], test: list[dict], pair) -> dict[str, list[dict]]:
    rng = np.random.default_rng(0)
    train = [rows[i] for i in rng.choice(len(rows), TRAIN, replace=False)]
    picked = rng.choice(len(test), QUERY + HELDOUT, replace=False)
    return {
        "train": [pair(r) for r in train],
        "query": [pair(test[i]) for i in picked[:QUERY]],
        "heldout": [pair(test[i]) for i in picked[QUERY:]],
    }


def _texts(splits_rows: dict[str, list[dict]]) -> list[str]:
    return [r["prompt"] + r["completion"] for rs in splits_rows.values() for r in rs]


def _read_splits(data_root: Path, dataset: str, pair) -> dict[str, list[dict]]:
    """The task's seeded train / query / held-out pairs from ``dataset``'s train and test files."""
    return _splits(
        _read_jsonl(data_root / dataset / "train.jsonl"),
        _read_jsonl(data_root / dataset / "test.jsonl"),
        pair,
    )


def _from_scratch_task(
    name: str,
    splits_rows: dict[str, list[dict]],
    describe,
    width: int,
    layers: int,
    epochs: int,
    lr: float,
    corpus: Sequence[str] = (),
    **options,
) -> BenchTask:
    """A GPT-2 (4 heads, untied ``nn.Linear`` head) trained from scratch on ``splits_rows``, over
    the MiniLM WordPiece tokens that occur in ``corpus`` and the pairs; ``describe(vocabulary)``
    gives its description from the number of tokens kept."""
    tokenizer = CompactTokenizer(_minilm_tokenizer(), list(corpus) + _texts(splits_rows))
    config = _gpt2_config(tokenizer, width=width, layers=layers, heads=4)
    return _causal_lm_task(
        name,
        describe(tokenizer.vocab_size - 1),
        splits_rows,
        tokenizer,
        _gpt2_from_scratch(config),
        epochs,
        lr,
        **options,
    )


def lm_agnews(data_root: Path) -> BenchTask:
    """AG News: the first 8 words of an article → its next ≤ 16 words; trained from scratch."""

    def pair(row):
        words = row["text"].split()[:24]
        return {
            "id": row["id"],
            "prompt": " ".join(words[:8]),
            "completion": " " + " ".join(words[8:]),
        }

    return _from_scratch_task(
        "lm-agnews",
        _read_splits(data_root, "ag_news", pair),
        lambda vocabulary: (
            f"AG News articles (first 8 words → the next ≤ 16, AG News test for queries); GPT-2 "
            f"(n_layer=2 n_embd=64 n_head=4, untied head, nn.Linear) over the "
            f"{vocabulary} MiniLM WordPiece tokens that occur; trained from scratch"
        ),
        width=64,
        layers=2,
        epochs=8,
        lr=3e-3,
    )


def _pretrain(model: nn.Module, tokenizer, corpus: list[str], path: Path, epochs: int):
    """Next-token pre-training on ``corpus`` (AdamW 3e-3, batch 64, seed 0), cached at ``path``."""
    from safetensors.torch import load_file, save_file

    if not path.is_file():
        torch.manual_seed(0)
        lm = HFCausalLMTask(tokenizer, max_length=48)
        records = [
            {"prompt": "", "completion": t} for t in corpus if len(tokenizer(t)["input_ids"]) > 1
        ]
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        generator = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(epochs):
            for index in torch.randperm(len(records), generator=generator).split(64):
                optimizer.zero_grad()
                lm.train_loss(
                    model, lm.collate([records[i] for i in index.tolist()])
                ).mean().backward()
                optimizer.step()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return load_file(str(path))


def _lora_task(name: str, splits_rows, corpus: list[str], cache_dir: Path, describe) -> BenchTask:
    """LoRA (r = 8, α = 16 on every attention and MLP linear; peft) on a 2-layer GPT-2 (d = 64)
    pre-trained for one epoch on ``corpus`` (cached), fine-tuned 4 epochs at 3e-3;
    ``describe(vocabulary, corpus_size)`` gives its description."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    tokenizer = CompactTokenizer(_minilm_tokenizer(), corpus + _texts(splits_rows))
    config = _gpt2_config(tokenizer, width=64, layers=2, heads=4)
    key = f"{name.removeprefix('lm-')}-{tokenizer.vocab_size}-{len(corpus)}-1"
    torch.manual_seed(0)
    pretrained = _pretrain(
        _conv1d_to_linear(GPT2LMHeadModel(config)),
        tokenizer,
        corpus,
        cache_dir / f"pretrained-{key}.safetensors",
        1,
    )
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"])

    def make_model(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = _conv1d_to_linear(GPT2LMHeadModel(config))
        model.load_state_dict(pretrained)
        return get_peft_model(model, lora).eval()

    description = describe(tokenizer.vocab_size - 1, len(corpus))
    return _causal_lm_task(
        name, description, splits_rows, tokenizer, make_model, 4, 3e-3, max_length=64
    )


def lm_lora_trec(data_root: Path, cache_dir: Path) -> BenchTask:
    """TREC question → its coarse type's name, LoRA (r = 8 on every attention and MLP linear)
    on a GPT-2 pre-trained on TREC and SMS texts."""

    def pair(row):
        return {
            "id": row["id"],
            "prompt": f"{row['text']} type:",
            "completion": f" {TREC_TYPES[row['label']]}",
        }

    rows = _read_jsonl(data_root / "trec" / "train.jsonl")
    splits_rows = _splits(rows, _read_jsonl(data_root / "trec" / "test.jsonl"), pair)
    corpus = [r["text"] for r in rows]
    corpus += [r["text"] for r in _read_jsonl(data_root / "sms_spam" / "train.jsonl")]
    return _lora_task(
        "lm-lora-trec",
        splits_rows,
        corpus,
        cache_dir,
        lambda vocabulary, size: (
            f'TREC questions → their coarse type ("<question> type:" → e.g. " location", TREC '
            f"test for queries); GPT-2 (n_layer=2 n_embd=64 n_head=4) over "
            f"{vocabulary} MiniLM WordPiece tokens, pre-trained 1 epoch on "
            f"{size} TREC/SMS texts (cached), fine-tuned with LoRA r=8 α=16 on c_attn, "
            f"c_proj, c_fc (peft; only the adapters train)"
        ),
    )


def lm_lora_sst2(data_root: Path, cache_dir: Path) -> BenchTask:
    """A **dev** task: SST-2 phrase → its sentiment's name (two completions), LoRA as on
    ``lm-lora-trec`` on a GPT-2 pre-trained on SST-2 phrases — a fine-tuning whose gradients
    concentrate on a few directions (added to choose the damping on such a spectrum without
    looking at a test task's LDS)."""

    def pair(row):
        return {
            "id": row["id"],
            "prompt": f"{row['text']} sentiment:",
            "completion": f" {SENTIMENTS[row['label']]}",
        }

    def sentence(row) -> bool:  # a phrase of 4-30 words: within the model's 64 positions
        return 4 <= len(row["text"].split()) <= 30

    rows = [r for r in _read_jsonl(data_root / "sst2" / "train.jsonl") if sentence(r)]
    test = [r for r in _read_jsonl(data_root / "sst2" / "test.jsonl") if sentence(r)]
    return _lora_task(
        "lm-lora-sst2",
        _splits(rows, test, pair),
        [r["text"] for r in rows[:SST2_CORPUS]],
        cache_dir,
        lambda vocabulary, size: (
            f'SST-2 phrases → their sentiment ("<phrase> sentiment:" → " positive" / '
            f'" negative", SST-2 test for queries); GPT-2 (n_layer=2 n_embd=64 n_head=4) over '
            f"{vocabulary} MiniLM WordPiece tokens, pre-trained 1 epoch on {size} SST-2 "
            f"phrases (cached), fine-tuned with LoRA r=8 α=16 on c_attn, c_proj, c_fc (peft)"
        ),
    )


def lm_snli_wide(data_root: Path) -> BenchTask:
    """SNLI premise → hypothesis on a wider GPT-2 (d = 256) whose vocabulary covers every SNLI
    training text, not only the task's: a larger head, longer completions."""

    def pair(row):
        return {
            "id": row["id"],
            "prompt": f"{row['premise']} =>",
            "completion": f" {row['hypothesis']}",
        }

    rows = _read_jsonl(data_root / "snli" / "train.jsonl")
    return _from_scratch_task(
        "lm-snli-wide",
        _splits(rows, _read_jsonl(data_root / "snli" / "test.jsonl"), pair),
        lambda vocabulary: (
            f'SNLI premise → hypothesis ("<premise> =>" → " <hypothesis>", SNLI test for '
            f"queries); GPT-2 (n_layer=2 n_embd=256 n_head=4, untied head, nn.Linear) over the "
            f"{vocabulary} MiniLM WordPiece tokens of 4,000 SNLI pairs; trained from "
            f"scratch"
        ),
        width=256,
        layers=2,
        epochs=5,
        lr=1e-3,
        corpus=[r["premise"] + " " + r["hypothesis"] for r in rows[:4000]],
        max_length=64,
    )


def lm_qnli_deep(data_root: Path) -> BenchTask:
    """QNLI question → the Wikipedia sentence paired with it, on a 4-layer GPT-2 trained from
    scratch: a deeper model and the longest completions of the suite."""

    def pair(row):
        return {
            "id": row["id"],
            "prompt": f"{row['question']} answer:",
            "completion": f" {row['sentence']}",
        }

    return _from_scratch_task(
        "lm-qnli-deep",
        _read_splits(data_root, "qnli", pair),
        lambda vocabulary: (
            f'QNLI question → its paired Wikipedia sentence ("<question> answer:" → " <sentence>", '
            f"QNLI test for queries); GPT-2 (n_layer=4 n_embd=64 n_head=4, untied head, nn.Linear) "
            f"over the {vocabulary} MiniLM WordPiece tokens that occur; trained from "
            f"scratch"
        ),
        width=64,
        layers=4,
        epochs=6,
        lr=3e-3,
        max_length=64,
    )
