"""Train a tiny GPT-2 from scratch on prompt/completion pairs, offline, and save it where
`infscope features --task hf-causal-lm --model` reads it.

The pairs are TREC questions and their answer type: prompt "What is the capital of Peru ? type:",
completion " location". Nothing is downloaded: the model is built from a `GPT2Config` (2 layers,
width 64) and the tokenizer is a word-level one trained here on the training pairs (`tokenizers`).
Only the completion tokens are trained on (the loss infscope's `HFCausalLMTask` uses too). Writes
into --out:

    train.jsonl, queries.jsonl   id, prompt, completion (queries: held-out questions to explain)
    model/                       a transformers directory: GPT-2 weights, config, tokenizer
    training.json                settings and the held-out accuracy of the completion

Run from the repository root:  python examples/causal_lm/train.py --out runs/causal_lm
Your own pairs: --data-dir a folder with train.jsonl / test.jsonl of {"id", "text", "label"} and a
labels.json, or write train.jsonl of {"id", "prompt", "completion"} and train your own model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

#: TREC's coarse classes as words a completion can say
TYPE_WORDS = {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "person",
              "LOC": "location", "NUM": "number"}  # fmt: skip


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def pairs(rows: list[dict], names: list[str]) -> list[dict]:
    """Question → answer type, as prompt/completion records (the completion starts with a space)."""
    return [
        {"id": r["id"], "prompt": f"{r['text']} type:",
         "completion": " " + TYPE_WORDS.get(names[r["label"]], names[r["label"]].lower())}
        for r in rows
    ]  # fmt: skip


def word_tokenizer(texts: list[str]):
    """A lowercase word-level tokenizer with the training texts' vocabulary (unseen words:
    ``[UNK]``), as a ``transformers`` tokenizer that ``save_pretrained`` writes and
    ``AutoTokenizer`` reads back. A few thousand words keep the output layer small."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    words.normalizer = normalizers.BertNormalizer(lowercase=True)
    words.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    return PreTrainedTokenizerFast(tokenizer_object=words, pad_token="[PAD]", unk_token="[UNK]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/trec"))
    parser.add_argument("--out", type=Path, default=Path("runs/causal_lm"))
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-queries", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a smoke-test size (seconds)")
    args = parser.parse_args()
    if args.tiny:
        args.n_train, args.n_queries, args.epochs = 64, 4, 2

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from transformers import GPT2Config, GPT2LMHeadModel

    from infscope.tasks import HFCausalLMTask

    if not (args.data_dir / "train.jsonl").is_file():
        raise SystemExit(f"error: no {args.data_dir / 'train.jsonl'}; give --data-dir")
    names = json.loads((args.data_dir / "labels.json").read_text())
    rng = np.random.default_rng(args.seed)
    pool, tests = (
        read_jsonl(args.data_dir / "train.jsonl"),
        read_jsonl(args.data_dir / "test.jsonl"),
    )
    train = pairs([pool[i] for i in rng.choice(len(pool), args.n_train, replace=False)], names)
    queries = pairs(
        [tests[i] for i in rng.choice(len(tests), args.n_queries, replace=False)], names
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "queries.jsonl", queries)

    tokenizer = word_tokenizer([r["prompt"] + r["completion"] for r in train])
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=64, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(config)
    # the task infscope uses: its collate pads and masks the prompt, its loss is the completion's
    task = HFCausalLMTask(tokenizer, max_length=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train))
        for start in range(0, len(train), args.batch_size):
            rows = [train[i] for i in order[start : start + args.batch_size]]
            loss = task.train_loss(model, task.collate(rows)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{args.epochs}: last batch loss {loss.item():.3f}", flush=True)
    model.eval()
    choices = sorted({r["completion"] for r in train + queries})
    correct = 0
    with torch.no_grad():  # the answer type the model finds most probable, among those seen
        for query in queries:
            options = [{"prompt": query["prompt"], "completion": c} for c in choices]
            losses = task.train_loss(model, task.collate(options))
            correct += choices[int(losses.argmin())] == query["completion"]
    model.save_pretrained(args.out / "model")
    tokenizer.save_pretrained(args.out / "model")
    accuracy = correct / len(queries)
    record = {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "query_accuracy": accuracy, "seconds": time.perf_counter() - started}  # fmt: skip
    (args.out / "training.json").write_text(json.dumps(record, indent=2))
    print(f"answer type right for {accuracy:.0%} of {len(queries)} held-out questions; "
          f"model → {args.out / 'model'}")  # fmt: skip


if __name__ == "__main__":
    main()
