"""``infscope report``: one self-contained HTML file over whatever a run directory holds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import infscope
from infscope.io import check_writable, write_atomic
from infscope.report.page import Section, render
from infscope.report.sections import Lookup, discover
from infscope.report.unrendered import not_shown, not_shown_section

__all__ = ["Lookup", "Section", "build_report", "render"]


def build_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    data: Sequence[str | Path] = (),
    text_field: str = "text",
    label_field: str = "label",
    top: int = 5,
    max_queries: int = 50,
    max_rows: int = 2000,
) -> Path:
    """Write ``out`` (default ``RUN_DIR/report.html``): every audit, score, dynamics recording,
    pruning study, selection and mislabel report below ``run_dir``, with texts and labels of the
    examples from ``data`` files, and a closing note naming the outputs it does not render. No
    server, no network: CSS, script and figures are inline. ``out`` is checked writable first."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    check_writable(out, directory=False)
    lookup = Lookup(data, text_field, label_field)
    sections = list(discover(run_dir, lookup, top, max_queries, max_rows))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (
        f"{run_dir.name}: {len(sections)} parts; built {stamp} by infscope {infscope.__version__}"
    )
    missing = not_shown(run_dir, sections)
    if missing:
        sections.append(not_shown_section(missing))
    page = render(f"infscope report — {run_dir.name}", subtitle, sections)
    write_atomic(out, page.encode("utf-8"))
    return out
