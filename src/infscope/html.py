"""Escaped HTML tables: the one way infscope turns rows of values into HTML (notebook
``_repr_html_`` and the report). Every cell is escaped — training data is untrusted input."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """A value as escaped text: floats to 4 significant digits, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    return html.escape(str(value))


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    caption: str | None = None,
    attributes: str = "",
) -> str:
    """``<table>`` with a header row; numeric cells carry ``data-value`` (for sorting) and the
    ``num`` class. ``attributes`` is trusted markup added to the ``<table>`` tag."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<td class="num" data-value="{float(value)!r}">{cell(value)}</td>')
            else:
                cells.append(f"<td>{cell(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    space = " " if attributes else ""
    return (
        f"<table{space}{attributes}>{title}<thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )
