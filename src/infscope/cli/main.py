"""The ``infscope`` command line: features → score → top, the actions on scores, and a
one-command demo. Each command lives in its own module; this one registers them, in the order
``--help`` lists them."""

from __future__ import annotations

import typer

from infscope.cli.audit import audit
from infscope.cli.demo import demo
from infscope.cli.evaluate import app as evaluate_app
from infscope.cli.extract import features
from infscope.cli.index import index, query, serve
from infscope.cli.output import Commands
from infscope.cli.prune import prune
from infscope.cli.report import report
from infscope.cli.score import score, top
from infscope.cli.select import select
from infscope.cli.store import app as store_app
from infscope.cli.trees import trees
from infscope.cli.unlearn import unlearn

app = typer.Typer(
    help=(
        "infscope: which training examples matter, for what. Extract per-example gradient "
        "features, score training examples against queries, and inspect the most helpful and "
        "harmful ones. Positive scores mean a training example helps (lowers the query's loss)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    cls=Commands,
)

#: the commands, and the groups of subcommands, in the order ``infscope --help`` lists them
COMMANDS = (
    features,
    score,
    top,
    demo,
    prune,
    select,
    audit,
    report,
    index,
    query,
    serve,
    trees,
    unlearn,
)
GROUPS = {"evaluate": evaluate_app, "store": store_app}

for command in COMMANDS:
    app.command()(command)
for name, group in GROUPS.items():
    app.add_typer(group, name=name)

if __name__ == "__main__":
    app()
