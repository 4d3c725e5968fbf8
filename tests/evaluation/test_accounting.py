"""ResourceMeter: per-stage wall time and the peak memory reached inside the stage."""

from __future__ import annotations

import time

import numpy as np
import pytest
from rich.console import Console

from infscope.errors import InputError
from infscope.evaluation import ResourceMeter


def test_peak_memory_of_a_stage_that_frees_its_array():
    meter = ResourceMeter()
    with meter.stage("baseline"):
        time.sleep(0.02)
    with meter.stage("allocate"):
        array = np.ones(25_000_000)  # 200 MB, pages touched
        time.sleep(0.1)
        del array  # freed before the stage ends: only the sampling thread can see the peak
    report = meter.report()
    assert report["allocate"]["peak_mb"] - report["baseline"]["peak_mb"] > 150
    with meter.stage("after"):
        time.sleep(0.02)
    assert meter.report()["after"]["peak_mb"] < report["allocate"]["peak_mb"] - 150


def test_times_accumulate_and_add_up():
    meter = ResourceMeter()
    start = time.perf_counter()
    for _ in range(2):
        with meter.stage("fit"):
            time.sleep(0.03)
    with meter.stage("score"):
        time.sleep(0.05)
    total = time.perf_counter() - start
    report = meter.report()
    assert report["fit"]["calls"] == 2
    assert 0.06 <= report["fit"]["seconds"] < 0.06 + 1.0
    assert 0.05 <= report["score"]["seconds"] < 0.05 + 1.0
    assert report["fit"]["seconds"] + report["score"]["seconds"] <= total
    assert list(report) == ["fit", "score"]
    assert set(report["fit"]) == {"seconds", "peak_mb", "calls"}


def test_stage_records_even_when_the_block_raises_and_renders_a_table():
    meter = ResourceMeter()
    with pytest.raises(KeyError), meter.stage("broken"):
        raise KeyError("x")
    assert meter.report()["broken"]["calls"] == 1
    console = Console(record=True, width=120)
    console.print(meter.table())
    text = console.export_text()
    assert "broken" in text and "peak RSS MB" in text
    with pytest.raises(InputError, match="stage name"), meter.stage(""):
        pass
    with pytest.raises(InputError, match="interval"):
        ResourceMeter(interval=0)


def test_falls_back_to_getrusage_without_proc(monkeypatch, tmp_path):
    from infscope.evaluation import accounting

    monkeypatch.setattr(accounting, "_STATUS", tmp_path / "missing")
    lifetime_peak = accounting._peak_from_rusage()
    assert accounting.current_rss_mb() == lifetime_peak > 10
    meter = ResourceMeter()
    with meter.stage("x"):
        pass
    assert meter.report()["x"]["peak_mb"] >= lifetime_peak
