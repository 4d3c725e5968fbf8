"""The HTML page around the sections: inline CSS, a few lines of vanilla JS (sortable and
filterable tables), and a Content-Security-Policy that allows nothing from the network and runs
only the page's own script (by nonce) — so that text which escaped escaping still could not run.
"""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass, field

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 1.5em 3em; color: #222; }
header { border-bottom: 2px solid #345; margin-bottom: 1em; }
h1 { margin: .6em 0 .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { margin-bottom: .3em; }
nav ul { columns: 2; padding-left: 1.2em; }
.path, code { font-family: ui-monospace, monospace; font-size: 12px; color: #555; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; vertical-align: top; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
thead th { background: #eef2f6; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-order=asc]::after { content: " \\25B2"; }
table.sortable th[data-order=desc]::after { content: " \\25BC"; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
tbody tr:nth-child(even) { background: #fafafa; }
.wide { max-height: 34em; overflow: auto; border: 1px solid #eee; }
.filter { margin: .4em 0; } .filter input { width: 24em; padding: 3px 6px; }
.filter .count { color: #666; margin-left: .6em; }
details { margin: .4em 0; } summary { cursor: pointer; color: #345; }
pre { background: #f6f8fa; padding: .6em; overflow: auto; font-size: 12px; }
img { max-width: 100%; }
.query { border-left: 3px solid #9ab; padding-left: .8em; margin: 1em 0; }
.note { color: #666; }
.warning { background: #fff4e0; border-left: 4px solid #d98a00; padding: .3em .6em; }
"""

JS = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-value');
    if (v === null) { return cell.textContent.toLowerCase(); }
    var x = parseFloat(v);
    return isNaN(x) ? -Infinity : x;
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.querySelectorAll('thead th');
    heads.forEach(function (th, col) {
      th.addEventListener('click', function () {
        var ascending = th.getAttribute('data-order') !== 'asc';
        heads.forEach(function (h) { h.removeAttribute('data-order'); });
        th.setAttribute('data-order', ascending ? 'asc' : 'desc');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          var order = x < y ? -1 : (x > y ? 1 : 0);
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  document.querySelectorAll('input[data-filter]').forEach(function (input) {
    var table = document.getElementById(input.getAttribute('data-filter'));
    var count = input.closest('.filter').querySelector('.count');
    input.addEventListener('input', function () {
      var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var text = row.textContent.toLowerCase();
        var keep = words.every(function (w) { return text.indexOf(w) >= 0; });
        row.hidden = !keep;
        if (keep) { shown += 1; }
      });
      count.textContent = shown + ' of ' + table.tBodies[0].rows.length + ' rows';
    });
  });
})();
"""


@dataclass
class Section:
    """One part of the report: a title, where it came from, the settings that produced it (shown
    as JSON) and its body (trusted HTML built from escaped values)."""

    title: str
    source: str
    settings: dict = field(default_factory=dict)
    body: str = ""
    anchor: str = ""


def render(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page: a table of contents and one ``<section>`` per part, with inline CSS and
    script allowed by a per-page nonce in a Content-Security-Policy that permits no network."""
    import json

    nonce = secrets.token_urlsafe(16)
    policy = (
        f"default-src 'none'; img-src data:; style-src 'nonce-{nonce}'; "
        f"script-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'"
    )
    toc = "".join(
        f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a> '
        f'<span class="path">{html.escape(s.source)}</span></li>'
        for s in sections
    )
    parts = []
    for s in sections:
        settings = html.escape(json.dumps(s.settings, indent=2, sort_keys=True, default=str))
        parts.append(
            f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>'
            f'<div class="path">{html.escape(s.source)}</div>'
            f"<details><summary>settings and versions</summary><pre>{settings}</pre></details>"
            f"{s.body}</section>"
        )
    empty = "" if sections else '<p class="note">Nothing infscope wrote was found here.</p>'
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        f'<style nonce="{nonce}">{CSS}</style></head><body>'
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>"
        f"<nav><ul>{toc}</ul></nav></header>"
        f"{''.join(parts)}{empty}"
        f'<script nonce="{nonce}">{JS}</script></body></html>\n'
    )


def filterable(table_id: str, table_html: str, rows: int) -> str:
    """A filter box (all words must appear in a row) above a scrolling, sortable table."""
    return (
        f'<div class="filter"><label>filter <input type="search" data-filter="{table_id}" '
        f'placeholder="words that must appear in a row"></label>'
        f'<span class="count">{rows} rows</span></div><div class="wide">{table_html}</div>'
    )
