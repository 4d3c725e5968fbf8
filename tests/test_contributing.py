"""CONTRIBUTING.md's worked examples run: each ``## Add ...`` section's python blocks execute in
order, in a temporary directory; the registries and the CLI are restored afterwards."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infscope.attribution.registry import ESTIMATORS
from infscope.cli.main import app
from infscope.gradients.projection import PROJECTIONS
from infscope.selection.registry import SELECTORS

GUIDE = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def _sections() -> dict[str, str]:
    """Section title -> the code of its python blocks, joined."""
    out = {}
    for section in re.split(r"^## ", GUIDE.read_text(encoding="utf-8"), flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.M | re.S)
        if blocks:
            out[title] = "\n".join(blocks)
    return out


SECTIONS = _sections()


def test_the_guide_shows_each_extension_point():
    assert {"Add an estimator", "Add a projection", "Add a selector", "Add a command"} <= set(
        SECTIONS
    )


@pytest.mark.parametrize("title", sorted(SECTIONS))
def test_worked_example_runs(title, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    registries = [(d, dict(d)) for d in (ESTIMATORS, PROJECTIONS, SELECTORS)]
    commands = list(app.registered_commands)
    try:
        exec(compile(SECTIONS[title], f"CONTRIBUTING.md: {title}", "exec"), {"__name__": "guide"})
    finally:
        for registry, saved in registries:
            registry.clear()
            registry.update(saved)
        app.registered_commands[:] = commands
