"""Small helpers shared by the benchmark scripts (argument parsing, machine description)."""

from __future__ import annotations

import argparse
import platform
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def csv_list(kind: type, allowed: Sequence[str] | None = None) -> Callable[[str], list[Any]]:
    """An argparse type for comma-separated values of ``kind``, optionally from ``allowed``."""

    def parse(text: str) -> list[Any]:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        if allowed is not None:
            bad = [v for v in values if v not in allowed]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {list(allowed)}")
        return values

    return parse


def cpu_model() -> str:
    """The CPU model as /proc/cpuinfo names it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    """Short commit of the checkout (``+dirty src`` with uncommitted library changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("+dirty src" if dirty else "")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fit_lbfgs(
    model: Any,
    x: Any,
    y: Any,
    weight_decay: float,
    max_iter: int,
    tolerance_grad: float = 1e-8,
    tolerance_change: float = 1e-12,
) -> float:
    """Full-batch L-BFGS of ``model`` on mean cross-entropy + (wd/2)‖θ‖², in place (a small
    model trained to its optimum: the retraining ground truth of the unlearning and group
    benchmarks); returns the seconds it took."""
    import time

    import torch

    start = time.perf_counter()
    optimiser = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss = loss + weight_decay / 2 * sum((p**2).sum() for p in model.parameters())
        loss.backward()
        return loss

    optimiser.step(closure)
    return time.perf_counter() - start


def publish(text: str, markdown: Path | None) -> None:
    """Print a benchmark's report and, with ``markdown``, write it there atomically."""
    from infscope.io import write_atomic

    print(text)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(markdown, (text.rstrip("\n") + "\n").encode())

