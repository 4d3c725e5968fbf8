"""The consoles commands print to, and the one way any command fails on an expected error.

:class:`Commands` is the root command group: whatever a command raises deliberately
(:class:`~infscope.errors.InfscopeError`) or meets in the file system (``OSError``: a read-only
folder, a full disk) is printed as one ``error:`` line and exits with status 2, and every
:class:`~infscope.errors.InfscopeWarning` is printed as one ``warning:`` line — for commands
added later too.
"""

from __future__ import annotations

import warnings
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from infscope.cli.config import add_config_option, write_resolved
from infscope.errors import InfscopeError, InfscopeWarning
from infscope.terminal import printable

console = Console()
#: errors and warnings: stderr, never wrapped (one line each, paths intact)
err_console = Console(stderr=True, soft_wrap=True)


def describe_os_error(err: OSError) -> str:
    """``path: reason`` for a file-system error, with what to check."""
    where = f"{err.filename}: " if err.filename else ""
    reason = err.strerror or str(err)
    return f"{where}{reason} (check the path, its permissions and the free disk space)"


def fail(err: Exception | str) -> NoReturn:
    """Print an expected error (paths and data escaped: never markup, no control characters)
    and exit with status 2."""
    text = describe_os_error(err) if isinstance(err, OSError) else str(err)
    err_console.print(f"[bold red]error:[/] {escape(printable(text))}")
    raise typer.Exit(code=2)


def progress(message: str) -> None:
    """Print one line saying which long step starts (stderr, so stdout stays the result)."""
    err_console.print(f"[dim]{escape(printable(message))} …[/]")


def warn(message: str) -> None:
    """Print one ``warning:`` line."""
    err_console.print(f"[bold yellow]warning:[/] {escape(printable(message))}")


class Commands(TyperGroup):
    """Root group: expected errors become one line and exit 2; infscope warnings one line each;
    every command takes ``--config FILE`` and writes its resolved configuration beside its
    outputs (:mod:`infscope.cli.config`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_config_option(self)

    def invoke(self, ctx: typer.Context) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("always", InfscopeWarning)
            shown = warnings.showwarning

            def show(message, category, *args, **kwargs):
                if issubclass(category, InfscopeWarning):
                    warn(str(message))
                else:
                    shown(message, category, *args, **kwargs)

            warnings.showwarning = show
            try:
                result = super().invoke(ctx)
                written = write_resolved(ctx)
                if written is not None:
                    err_console.print(f"[dim]configuration → {escape(str(written))}[/]")
                return result
            except (InfscopeError, OSError) as err:
                fail(err)
