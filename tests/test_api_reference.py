"""The generated API reference builds offline, covers every public subpackage, and has nothing
to warn about: ``scripts/api_docs.py`` (``make docs``) runs with the network disabled, and every
module and every name a public package exports carries a docstring."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "infscope"

pytest.importorskip("pdoc")

#: Run the build with every way out to the network refused, so a page that needs one fails.
OFFLINE_BUILD = """
import runpy, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network disabled while building the API reference")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = refuse
sys.argv = ["api_docs.py", "--out", sys.argv[1], "--strict"]
runpy.run_path({script!r}, run_name="__main__")
"""


def public_subpackages() -> list[str]:
    """Dotted names of ``infscope`` and its subpackages, found by walking the source tree."""
    names = []
    for init in sorted(SOURCE.rglob("__init__.py")):
        parts = init.parent.relative_to(SOURCE.parent).parts
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return names


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("api")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    script = OFFLINE_BUILD.format(script=str(ROOT / "scripts" / "api_docs.py"))
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, done


def test_builds_offline_without_warnings(reference):
    out, done = reference
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning:" not in done.stderr, done.stderr
    assert (out / "index.html").is_file()
    for page in out.rglob("*.html"):  # no script or style fetched from elsewhere
        html = page.read_text(encoding="utf-8")
        assert '<script src="http' not in html and 'rel="stylesheet" href="http' not in html, page


def test_every_public_subpackage_has_a_page(reference):
    out, _ = reference
    packages = public_subpackages()
    assert "infscope" in packages and len(packages) > 10
    missing = [p for p in packages if not (out / (p.replace(".", "/") + ".html")).is_file()]
    assert missing == []


def test_exported_names_have_docstrings():
    undocumented = []
    for name in public_subpackages():
        module = importlib.import_module(name)
        if not inspect.getdoc(module):
            undocumented.append(name)
        for export in getattr(module, "__all__", ()):
            try:
                obj = getattr(module, export)
            except ImportError:  # a lazy export whose optional dependency is missing
                continue
            is_code = inspect.isclass(obj) or inspect.isfunction(obj)
            if is_code and not (obj.__doc__ or "").strip():
                undocumented.append(f"{name}.{export}")
    assert undocumented == []
