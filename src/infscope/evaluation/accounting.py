"""Resource accounting: wall time and peak memory of named stages (fit, score, retrain, ...).

``with meter.stage("fit"): ...`` records the stage's wall seconds and its peak resident set size
(RSS), sampled from ``/proc/self/status`` by a daemon thread every ``interval`` seconds while the
stage runs (plus once at entry and exit). Where ``/proc`` is unavailable the peak falls back to
``resource.getrusage`` — the process's lifetime peak, an upper bound. When CUDA is in use (torch
imported and CUDA initialised) the stage's ``torch.cuda.max_memory_allocated`` is reported too.
A repeated stage accumulates time and keeps the largest peak.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.table import Table

from infscope.errors import InputError

_STATUS = Path("/proc/self/status")


def _rss_from_proc() -> float | None:
    try:
        with _STATUS.open("rb") as handle:
            for line in handle:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # kB -> MB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _peak_from_rusage() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes / kB


def current_rss_mb() -> float:
    """Resident memory now (MB), or the lifetime peak where ``/proc`` is unavailable."""
    rss = _rss_from_proc()
    return rss if rss is not None else _peak_from_rusage()


def _cuda_in_use() -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_initialized())
    except Exception:  # a broken CUDA install must not break accounting
        return False


class _Sampler:
    """Daemon thread keeping the maximum RSS seen between ``start`` and ``stop``."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.peak = current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="infscope-meter", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss_mb())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mb())
        return self.peak


class ResourceMeter:
    """Wall time and peak memory per named stage; see :meth:`stage`, :meth:`report`."""

    def __init__(self, interval: float = 0.005) -> None:
        if not interval > 0:
            raise InputError(f"interval must be positive, got {interval}")
        self.interval = interval
        self._stats: dict[str, dict[str, float]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Measure the enclosed block as stage ``name`` (time adds up over repeats, peak is the
        maximum). Stages may nest; each measures its own span. The CUDA peak counter is reset at
        entry, so nested stages' CUDA peaks cover only the innermost reset onward."""
        if not isinstance(name, str) or not name:
            raise InputError(f"stage name must be a non-empty string, got {name!r}")
        cuda = _cuda_in_use()
        if cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        sampler = _Sampler(self.interval)
        sampler.start()
        start = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            peak = sampler.stop()
            entry = self._stats.setdefault(name, {"seconds": 0.0, "peak_mb": 0.0, "calls": 0})
            entry["seconds"] += seconds
            entry["peak_mb"] = max(entry["peak_mb"], peak)
            entry["calls"] += 1
            if cuda or "cuda_peak_mb" in entry:
                cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
                entry["cuda_peak_mb"] = max(entry.get("cuda_peak_mb", 0.0), cuda_peak)

    def report(self) -> dict[str, dict[str, float]]:
        """``{stage: {"seconds", "peak_mb", "calls"[, "cuda_peak_mb"]}}`` in first-use order."""
        return {name: dict(entry) for name, entry in self._stats.items()}

    def table(self, title: str = "resources") -> Table:
        """The report as a rich table."""
        cuda = any("cuda_peak_mb" in e for e in self._stats.values())
        table = Table(title=title)
        for column in ("stage", "calls", "seconds", "peak RSS MB") + (
            ("CUDA peak MB",) if cuda else ()
        ):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for name, entry in self._stats.items():
            row = [
                name,
                str(int(entry["calls"])),
                f"{entry['seconds']:.3f}",
                f"{entry['peak_mb']:.1f}",
            ]
            if cuda:
                row.append(f"{entry.get('cuda_peak_mb', 0.0):.1f}")
            table.add_row(*row)
        return table
