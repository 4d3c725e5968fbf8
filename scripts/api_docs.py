"""Build infscope's API reference with pdoc: one HTML page per public module, offline.

    python scripts/api_docs.py --out build/api [--strict]

(``make docs`` runs this.) The reference is generated, not committed: ``build/`` is git-ignored.
A package's ``__all__`` is its public face, so pdoc documents the names a package exports and
leaves its private submodules out. Names a package exports lazily (through a module
``__getattr__``, so that an optional dependency loads only when used) are resolved first, so that
they are documented where they are exported; one whose optional dependency is missing is left
out with a note (not a warning). Every public subpackage gets a page, even one its parent's
``__all__`` leaves out. ``--strict`` exits with status 1 if pdoc warned about anything.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

PACKAGE = "infscope"


def public_packages(package: str = PACKAGE) -> list[ModuleType]:
    """The package and every subpackage whose dotted name has no ``_``-prefixed part."""
    root = importlib.import_module(package)
    found = [root]
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.ispkg and not any(part.startswith("_") for part in info.name.split(".")):
            found.append(importlib.import_module(info.name))
    return found


def resolve_lazy_exports(module: ModuleType) -> list[str]:
    """Bind the names ``module.__all__`` exports through its ``__getattr__`` (pdoc reads only a
    module's ``__dict__``). Those whose optional dependency is missing are dropped from this
    process's ``__all__`` (pdoc would fail on them) and returned."""
    missing = []
    for name in getattr(module, "__all__", ()):
        if name not in vars(module):
            try:
                setattr(module, name, getattr(module, name))
            except ImportError:
                missing.append(name)
    if missing:
        module.__all__ = [name for name in module.__all__ if name not in missing]
    return [f"{module.__name__}.{name}" for name in missing]


def documented_modules(packages: list[ModuleType]) -> list[str]:
    """What pdoc documents of each package (the package and the submodules its ``__all__``
    lists, or all of them without one), for every public package: a subpackage stays documented
    even when its parent's ``__all__`` does not name it."""
    from pdoc import extract

    names: dict[str, None] = {}
    for package in packages:
        if package.__name__ not in names:
            names.update(dict.fromkeys(extract.walk_specs([package.__name__])))
    return list(names)


def build(output: Path) -> tuple[list[str], list[str]]:
    """Write the reference of the whole package to ``output``. Returns pdoc's warnings, and the
    lazily exported names left out because their optional dependency is not installed."""
    from pdoc import doc, render

    render.configure(docformat="google", footer_text=f"{PACKAGE} API reference")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        packages = public_packages()
        skipped = [name for package in packages for name in resolve_lazy_exports(package)]
        modules = {name: doc.Module.from_name(name) for name in documented_modules(packages)}
        for module in modules.values():  # as pdoc.pdoc, over our list of modules
            page = output / f"{module.fullname.replace('.', '/')}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(render.html_module(module, modules), encoding="utf-8")
        (output / "index.html").write_text(render.html_index(modules), encoding="utf-8")
        (output / "search.js").write_text(render.search_index(modules), encoding="utf-8")
    problems = [str(w.message) for w in caught if "pdoc" in Path(w.filename).parts]
    return problems, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/api"), help="output folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 if pdoc warns")
    args = parser.parse_args(argv)
    problems, skipped = build(args.out)
    for name in skipped:
        print(f"note: {name} not documented: an optional dependency is not installed")
    for message in problems:
        print(f"warning: {message}", file=sys.stderr)
    print(f"API reference: {args.out / 'index.html'}")
    return 1 if args.strict and problems else 0


if __name__ == "__main__":
    sys.exit(main())
