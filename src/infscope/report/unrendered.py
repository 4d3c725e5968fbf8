"""What a run directory holds that the report does not render, named in a closing note.

A folder is an infscope output when a command wrote its resolved configuration there (a
``*.yaml`` whose first line is ``# `infscope COMMAND` as it ran``) or it holds a file only
infscope writes (a feature store, an unlearned model, an index, streamed top-k scores). Each such
folder without a section of its own is listed as ``not shown: <folder> (<what>)``, so a reader
never takes a missing part for a missing result.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from infscope.report.page import Section

#: files that mark an infscope output the report has no section for (yet), and what they are
KNOWN_OUTPUTS = {
    "store.json": "feature store",
    "unlearn.json": "unlearned model",
    "estimator.json": "influence index",
    "top.json": "top-k scores",
}
#: the first line of a resolved configuration (:mod:`infscope.cli.config`)
CONFIG_HEADER = re.compile(r"^# `(infscope [a-z -]+)` as it ran")
#: commands whose outputs are not results to report (the report itself)
NOT_RESULTS = ("infscope report",)


def _command(path: Path) -> str | None:
    """The command a resolved configuration file records, if it is one."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline(200)
    except (OSError, UnicodeDecodeError):
        return None
    match = CONFIG_HEADER.match(first)
    return match.group(1) if match else None


def _kinds(folder: Path, names: list[str]) -> list[str]:
    """What infscope wrote in ``folder``: commands (from their configurations) and known files."""
    kinds = {KNOWN_OUTPUTS[n] for n in names if n in KNOWN_OUTPUTS}
    for name in names:
        if name.endswith(".yaml"):
            command = _command(folder / name)
            if command is not None and command not in NOT_RESULTS:
                kinds.add(command)
    return sorted(kinds)


def not_shown(run_dir: Path, sections: list[Section]) -> list[tuple[str, list[str]]]:
    """``(folder, kinds)`` for every infscope output folder below ``run_dir`` that no section
    renders; folders are named relative to ``run_dir``'s parent, as sections' sources are."""
    base = run_dir.parent
    covered = set()
    for section in sections:
        source = base / section.source
        covered.add(source if source.is_dir() else source.parent)
    missing = []
    for root, folders, files in os.walk(run_dir):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        here = Path(root)
        if here in covered:
            continue
        kinds = _kinds(here, sorted(files))
        if kinds:
            missing.append((str(here.relative_to(base)), kinds))
    return missing


def not_shown_section(missing: list[tuple[str, list[str]]]) -> Section:
    """The closing note listing the outputs the report does not render."""
    items = "".join(
        f"<li>not shown: {html.escape(folder)} ({html.escape(', '.join(kinds))})</li>"
        for folder, kinds in missing
    )
    body = (
        '<p class="note">These folders hold infscope outputs this report has no section for; '
        f"read them with the command that wrote them or in Python.</p><ul>{items}</ul>"
    )
    return Section("Not shown in this report", "", {}, body, "not-shown")
