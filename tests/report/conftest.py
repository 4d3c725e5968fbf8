"""A run directory with one of everything the report reads, and data whose texts attack it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from infscope.attribution import Scores, SelfInfluence
from infscope.audit import AuditConfig, audit
from infscope.dynamics import DynamicsRecorder
from infscope.evaluation.pruning import PruningResult, PruningRun
from infscope.selection import Selection

INJECTED = "<script>window.__pwned = 1</script>"
IMG = '<img src=x onerror="window.__pwned = 2">'
N, C = 40, 3


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "run"
    rng = np.random.default_rng(0)
    ids = [f"ex{i}" for i in range(N)]
    labels = np.arange(N) % C
    texts = [f"example number {i} about topic {labels[i]}" for i in range(N)]
    texts[3] = f"harmless start {INJECTED} harmless end"
    texts[4] = f"an image {IMG}"
    texts[10] = "the only zebra here"
    records = [{"id": i, "text": t, "label": int(y)} for i, t, y in zip(ids, texts, labels)]
    records.append({"id": "q0", "text": f"query text {INJECTED}", "label": 1})
    data = root.parent / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))

    probs = rng.dirichlet(np.ones(C) * 0.5, size=N)
    features = rng.normal(size=(N, 5))
    result = audit(
        labels,
        ids=ids,
        pred_probs=probs,
        features=features,
        texts=texts,
        class_names=["alpha", "<b>beta</b>", "gamma"],
        config=AuditConfig(neighbours=5),
    )
    result.save(root / "audit")
    SelfInfluence(rng.normal(size=N), ids, "tracin", {"higher_is_harder": True}).save(root / "self")
    Scores(rng.normal(size=(1, N)), ["q0"], ids, "tracin").save(root / "scores")
    recorder = DynamicsRecorder()
    for epoch in range(3):
        recorder.record(ids, torch.as_tensor(rng.normal(size=(N, C))), labels, epoch)
    recorder.save(root / "dynamics")
    runs = [PruningRun("full-data", "full", 1.0, s, 0.8 + 0.01 * s, 1.0) for s in range(2)]
    runs += [
        PruningRun(score, "keep-hard", f, s, 0.7 + 0.1 * f + 0.01 * s, 1.0)
        for score in ("random", "el2n")
        for f in (0.5, 0.7)
        for s in range(2)
    ]
    (root / "prune").mkdir()
    PruningResult(runs, N).to_csv(root / "prune" / "runs.csv")
    Selection(np.array([4, 3, 0]), ["ex4", "ex3", "ex0"], "top-k", reasons=[IMG, "b", "c"]).save(
        root / "select"
    )
    mislabel = {"method": "tracin", "auc": 0.9, "average_precision": 0.5, "found_at": {"0.1": 0.4}}
    (root / "mislabel.json").write_text(json.dumps(mislabel))
    return root, data
