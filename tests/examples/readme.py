"""Run an example's README as a newcomer would: the command lines of its first ```bash block,
one by one, in a fresh working directory, and fail on the first that fails.

The working directory holds ``examples`` (a link to the repository's) and ``../shared`` (a link
to the shared data beside the repository), so the commands run exactly as written from the
repository root. They run in this process (the CLI through typer's runner, scripts through
``runpy``), which saves a Python start-up per command. ``NAME=value`` lines set a variable that
later lines use as ``$NAME``. With ``tiny``, ``--tiny`` is added to the first ``python`` command:
each example's first script sets the size of everything after it.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S+)$")


def readme_commands(readme: Path) -> list[str]:
    """The first ```bash block's commands, continuation lines joined, comments dropped."""
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"```bash\n(.*?)```", text, re.S)
    assert match, f"{readme} has no ```bash block"
    joined = match.group(1).replace("\\\n", " ")
    lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def workspace(tmp_path: Path, monkeypatch) -> Path:
    """A working directory that looks like the repository root to the commands."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"no shared data at {SHARED / 'data'}")
    work = tmp_path / "repo"
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    (tmp_path / "shared").symlink_to(SHARED)
    monkeypatch.chdir(work)
    return work


def _script(args: list[str]) -> None:
    path = Path(args[0])
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv, sys.path = [str(path), *args[1:]], [str(path.resolve().parent), *sys.path]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (None, 0), f"{' '.join(args)} exited with {stop.code}"
    finally:
        sys.argv, sys.path = saved_argv, saved_path


def run_readme(readme: Path, monkeypatch, tiny: bool) -> list[str]:
    """Run every command; returns the CLI commands' outputs in order (for checks)."""
    from infscope.cli.main import app

    runner, outputs, sized = CliRunner(), [], False
    for line in readme_commands(readme):
        assigned = ASSIGNMENT.match(line)
        if assigned:
            monkeypatch.setenv(assigned.group(1), assigned.group(2))
            continue
        args = [os.path.expandvars(a) for a in shlex.split(line)]
        if args[0] == "python":
            if tiny and not sized:
                args, sized = [*args, "--tiny"], True
            _script(args[1:])
        elif args[0] == "infscope":
            result = runner.invoke(app, args[1:])
            assert result.exit_code == 0, f"{line}\n{result.output}\n{result.exception!r}"
            outputs.append(result.output)
        else:
            raise AssertionError(f"{readme}: cannot run {line!r} (python or infscope only)")
    assert sized or not tiny, f"{readme}: no python command to make tiny"
    return outputs
