"""The console every command prints to, and the one way a command fails on an expected error."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


def fail(err: Exception) -> None:
    """Print an :class:`~infscope.errors.InfscopeError` (paths and data escaped, never markup)
    and exit with status 2."""
    console.print(f"[bold red]error:[/] {escape(str(err))}")
    raise typer.Exit(code=2)
