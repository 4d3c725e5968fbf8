"""The house's size limits: no source file over 600 lines, no CLI function over 80 lines.

Long files and long command functions are where library logic hides in the wrong room; these
limits keep a command a parser and printer, and a module one concept.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "infscope"
MAX_FILE_LINES = 600
MAX_CLI_FUNCTION_LINES = 80


def test_no_source_file_over_the_line_limit() -> None:
    long_files = {
        str(path.relative_to(SRC)): n
        for path in SRC.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"


def test_no_cli_function_over_the_line_limit() -> None:
    long_functions = {}
    for path in (SRC / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_CLI_FUNCTION_LINES:
                    long_functions[f"{path.name}:{node.name}"] = length
    assert not long_functions, f"CLI functions over {MAX_CLI_FUNCTION_LINES} lines: {long_functions}"
