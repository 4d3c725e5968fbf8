"""``--config FILE`` for every command, and the resolved configuration written beside its outputs.

:func:`add_config_option` gives every leaf command of a group (recursively, commands added later
included, as the root group applies it when it is built) an eager ``--config`` option. Its file is
a YAML mapping (JSON is YAML too) of the command's own option and argument names — ``learning-rate``
or ``learning_rate`` for ``--learning-rate``, ``data`` for the ``DATA`` argument — whose values
become the command's defaults: the command line overrides them, and an unknown name or a value of
the wrong type is one error line naming the file. Paths are read as on the command line, relative
to the working directory.

After a command succeeds, :func:`write_resolved` saves every parameter's value as the command ran
— given on the command line, read from a file, or defaulted — to ``OUT/config.yaml`` when the
command's ``--out`` (or ``--json``) is a directory, to ``<out without suffix>.config.yaml`` beside
it when it is a file, or where the command said with :func:`save_config_to`; nothing is written by
a command without outputs. ``infscope COMMAND --config that-file`` repeats the run.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

import infscope
from infscope.errors import InputError

#: ``ctx.meta`` keys (shared by a command's context and its parents'): the running command's
#: context, and the file its resolved configuration goes to when a command sets one
LEAF = "infscope.config.leaf"
TARGET = "infscope.config.target"
#: parameters naming a command's output, the first one set wins
OUTPUT_PARAMS = ("out", "json_path")


def config_key(param: Any) -> str:
    """A parameter's name in a config file: its first long option without ``--`` (``json`` for
    ``--json``), or the argument's name; dashes as on the command line."""
    longs = [o for o in param.opts if o.startswith("--")]  # an argument has none
    name = longs[0][2:] if longs else param.name
    return name.replace("_", "-")


def command_name(ctx: typer.Context) -> str:
    """``infscope evaluate mislabel``: the command as a user types it (whatever the program is
    called, e.g. ``python -m infscope.cli.main`` under torchrun: the root's name is dropped
    whole)."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["infscope", *reversed(names)])


def _unique_key_loader() -> type:
    """A YAML SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last,
    silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen[key] = key_node
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def read_config(path: Path, ctx: typer.Context) -> dict[str, Any]:
    """The file's values by parameter name, each checked against the command's parameter (an
    :class:`InputError` for an unreadable file, an unknown name or a bad value)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: a config file must be UTF-8 text") from None
    try:
        loaded = yaml.load(text, Loader=_unique_key_loader())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{path}{where}: invalid YAML ({problem})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise InputError(f"{path}: a config file must hold a mapping of option names to values")
    params = {
        config_key(p).replace("-", "_"): p
        for p in ctx.command.params
        if p.expose_value and p.name != "help"
    }
    by_name = {p.name: p for p in params.values()}
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in loaded.items():
        param = params.get(str(key).replace("-", "_")) or by_name.get(str(key).replace("-", "_"))
        if param is not None and param.name in spelled:
            raise InputError(
                f"{path}: {spelled[param.name]!r} and {key!r} set the same option; keep one"
            )
        if param is not None:
            spelled[param.name] = str(key)
        if param is None:
            known = ", ".join(sorted(config_key(p) for p in params.values()))
            raise InputError(
                f"{path}: {key!r} is not an option of `{command_name(ctx)}` (its options: {known})"
            )
        if value is None:
            continue  # null: the command's default
        if (param.multiple or param.nargs == -1) and not isinstance(value, list):
            value = [value]
        try:
            param.process_value(ctx, value)
        except typer.BadParameter as err:
            raise InputError(f"{path}: {err.format_message()}") from None
        values[param.name] = value
    return values


def _load(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> None:
    """The eager ``--config`` callback: remember the command's context; a file's values become
    the defaults of the parameters processed after it."""
    ctx.meta[LEAF] = ctx
    if value is not None:
        ctx.default_map = {**(ctx.default_map or {}), **read_config(value, ctx)}


def _config_param() -> Any:
    """A fresh ``--config`` option, built by typer like any other."""
    probe = typer.Typer()

    @probe.command()
    def _probe(
        config: Annotated[
            Path | None,
            typer.Option(
                metavar="FILE",
                help="YAML file of this command's option values (the command line overrides "
                "them); every run writes its resolved one beside its outputs.",
                is_eager=True,
                expose_value=False,
                callback=_load,
            ),
        ] = None,
    ) -> None:
        """Only a holder of the option."""

    return typer.main.get_command(probe).params[0]


def _leaves(command: Any) -> Iterator[Any]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield command
        return
    for sub in subcommands.values():
        yield from _leaves(sub)


def add_config_option(group: Any) -> None:
    """Give every leaf command below ``group`` the ``--config`` option (once)."""
    for command in _leaves(group):
        if not any(p.name == "config" for p in command.params):
            command.params.append(_config_param())


def save_config_to(ctx: typer.Context, path: Path) -> None:
    """Write the running command's resolved configuration to ``path`` (for commands whose
    outputs the ``--out`` rule does not place)."""
    ctx.meta[TARGET] = Path(path)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def resolved(ctx: typer.Context) -> dict[str, Any]:
    """Every parameter of the command by its config name, as the command ran (a hidden,
    deprecated alias only when it was given)."""
    return {
        config_key(p): _plain(ctx.params.get(p.name))
        for p in ctx.command.params
        if p.expose_value
        and p.name in ctx.params
        and not (getattr(p, "hidden", False) and ctx.params.get(p.name) is None)
    }


def target(ctx: typer.Context) -> Path | None:
    """Where the command's resolved configuration goes (None: the command wrote no outputs)."""
    if TARGET in ctx.meta:
        return ctx.meta[TARGET]
    for name in OUTPUT_PARAMS:
        out = ctx.params.get(name)
        if out is not None:
            out = Path(out)
            return out / "config.yaml" if out.is_dir() else out.with_suffix(".config.yaml")
    return None


def write_resolved(root: typer.Context) -> Path | None:
    """After a command succeeded: its resolved configuration beside its outputs (the path), or
    None for a command without outputs."""
    import yaml

    from infscope.io import write_atomic

    ctx = root.meta.get(LEAF)
    path = None if ctx is None else target(ctx)
    if path is None or not path.parent.is_dir():
        return None
    header = (
        f"# `{command_name(ctx)}` as it ran, infscope {infscope.__version__}.\n"
        f"# Repeat it: {command_name(ctx)} --config {shlex.quote(str(path))}\n"
    )
    body = yaml.safe_dump(resolved(ctx), sort_keys=False, allow_unicode=True)
    write_atomic(path, (header + body).encode("utf-8"))
    return path
