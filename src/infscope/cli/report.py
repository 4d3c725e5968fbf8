"""``infscope report``: a self-contained HTML report over a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infscope.cli.config import save_config_to
from infscope.cli.output import console, progress


def report(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="Directory holding infscope outputs.")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write (default RUN_DIR/report.html).")
    ] = None,
    data: Annotated[
        list[Path] | None,
        typer.Option(help="Data file(s) with the examples' texts and labels, by id; repeatable."),
    ] = None,
    text_field: Annotated[str, typer.Option(help="Field holding the text.")] = "text",
    label_field: Annotated[str, typer.Option(help="Field holding the label.")] = "label",
    top: Annotated[int, typer.Option(help="Helpful/harmful examples shown per query.")] = 5,
    max_queries: Annotated[int, typer.Option(help="Queries shown per score matrix.")] = 50,
    max_rows: Annotated[int, typer.Option(help="Rows per table.")] = 2000,
) -> None:
    """Write one HTML file (no server, no network; figures inline) over every audit,
    attribution score, training-dynamics recording, pruning study and selection found in
    RUN_DIR, with the settings and versions behind each part.

    Example: infscope report runs/ --data train.jsonl --data test.jsonl
    """
    from infscope.report import build_report

    progress(f"reading what {run_dir} holds")
    path = build_report(
        run_dir, out, data or [], text_field, label_field, top, max_queries, max_rows
    )
    save_config_to(ctx, path.with_suffix(".config.yaml"))
    console.print(f"wrote {path}", markup=False)
