"""``infscope index`` (build an approximate nearest-neighbour index over a training store),
``infscope query`` (top-k influence for new queries through it) and ``infscope serve`` (the
same queries answered by a long-running local service)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from infscope.attribution.registry import EstimatorSpec
from infscope.cli.options import estimator_options
from infscope.cli.output import console, progress
from infscope.errors import InputError


@estimator_options
def index(
    train: Annotated[Path, typer.Option(help="Training feature store.")],
    out: Annotated[Path, typer.Option(help="Directory for the index.")],
    estimator: EstimatorSpec,
    kind: Annotated[
        str | None,
        typer.Option(
            help="flat (exact) | ivf-flat | ivf-sq8 (1 byte per dim) | ivf-pq (compressed) | "
            "hnsw (default: IndexConfig's, ivf-pq)."
        ),
    ] = None,
    nlist: Annotated[
        int | None, typer.Option(min=1, help="IVF cells (default 4·sqrt(n), at most 4,096).")
    ] = None,
    pq_bytes: Annotated[
        int | None,
        typer.Option(
            min=1, help="ivf-pq code bytes per vector, two 4-bit codes each (default dim/8)."
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="ip (cells on inner products) | l2 (on lifted vectors; for nearly equal norms) "
            "(default: IndexConfig's, ip)."
        ),
    ] = None,
    nprobe: Annotated[
        int | None,
        typer.Option(min=1, help="IVF cells searched per query (default: IndexConfig's, 32)."),
    ] = None,
    rerank: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Candidates per result re-scored (RERANK x k: in the refine copy, whose best "
            "2k are re-scored exactly, else all exactly; default: IndexConfig's, 10); 0: off.",
        ),
    ] = None,
    refine: Annotated[
        str | None,
        typer.Option(help="ivf-pq copy scoring candidates: sq8 (default, 1 B/dim) | fp16 | none."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling and k-means seed.")] = 0,
) -> None:
    """Index a training store for fast top-k influence queries (FAISS).

    Every score of the estimator is one inner product, so its training side is indexed once;
    `infscope query` then finds each query's most helpful and harmful training examples and
    re-scores the candidates exactly from the store.

    \b
    Example:
      infscope index --train runs/train --method tracin --out runs/index
    """
    from infscope.index import IndexConfig, InfluenceIndex
    from infscope.index.service import write_estimator
    from infscope.io import check_writable
    from infscope.store import FeatureStore

    check_writable(out, directory=True)
    spec = estimator
    given = dict(kind=kind, nlist=nlist, pq_bytes=pq_bytes, metric=metric, nprobe=nprobe)
    given.update(rerank=rerank, refine=refine)
    config = IndexConfig(seed=seed, **{k: v for k, v in given.items() if v is not None})
    store = FeatureStore.open(train)
    progress(f"fitting {spec.method} on {store.n_examples:,} training examples")
    estimator = spec.build().fit(store)
    progress(f"building a {config.kind} index")
    built = InfluenceIndex.build(estimator, config, progress=True)
    built.save(out)
    write_estimator(out, spec, train)
    console.print(
        f"[green]{escape(str(out))}[/]: {built.info['factory']} index of {store.n_examples:,} "
        f"training examples ({built.info['dim']:,} dims, {spec.method})"
    )
    if built.calibration:
        console.print(_calibration_line(built.calibration))


def _calibration_line(calibration: dict) -> str:
    """The recall each direction measured at build, and at how many cells."""
    return f"measured recall@{calibration['k']} on {calibration['queries']} training rows: " + (
        ", ".join(
            f"{d} {calibration[d]['recall']:.3f} at nprobe {calibration[d]['nprobe']}"
            for d in ("helpful", "harmful")
        )
    )


def query(
    index_dir: Annotated[Path, typer.Argument(help="Index directory from `infscope index`.")],
    queries: Annotated[Path, typer.Option("--query", help="Query feature store.")],
    out: Annotated[Path, typer.Option(help="Directory for the top-k scores.")],
    k: Annotated[int, typer.Option(min=1, help="Training examples per query and direction.")] = 10,
    nprobe: Annotated[
        int | None, typer.Option(min=1, help="IVF cells searched (default: the index's).")
    ] = None,
    rerank: Annotated[
        int | None, typer.Option(min=0, help="Exact re-scoring factor (default: the index's).")
    ] = None,
    table: Annotated[str, typer.Option(help="Also write OUT/top.csv | .parquet | none.")] = "csv",
    service: Annotated[
        bool,
        typer.Option(
            help="Ask the `infscope serve` running for this index, when there is one (else, or "
            "with --no-service, load the index here)."
        ),
    ] = True,
) -> None:
    """Top-k most helpful and harmful training examples for each query, through an index.

    When `infscope serve` runs for the index, the query is sent there (milliseconds); otherwise
    the index is loaded and its estimator fitted in this process (seconds). OUT/top.json lists
    the training ids returned, not every training id.

    \b
    Example:
      infscope query runs/index --query runs/test --k 10 --out runs/top
    """
    from infscope.index.client import find_service, search_note, search_service
    from infscope.io import check_writable, write_table

    check_writable(out, directory=True)
    if table not in ("csv", "parquet", "none"):
        raise InputError(f"--table must be csv, parquet or none, got {table!r}")
    url = find_service(index_dir) if service else None
    found = search_service(url, queries, k, nprobe, rerank) if url else None
    if found is None:
        from infscope.index.service import open_index
        from infscope.store import FeatureStore

        progress(f"loading the index {index_dir}")
        loaded = open_index(index_dir)
        found = loaded.search(FeatureStore.open(queries), k, nprobe=nprobe, rerank=rerank)
        found = found.compact()
    else:
        progress(f"answered by the service at {url}")
    found.save(out)
    written = ["top.npz", "top.json"]
    if table != "none":
        rows = found.top_rows()
        write_table(out / f"top.{table}", {name: [r[name] for r in rows] for name in rows[0]})
        written.append(f"top.{table}")
    console.print(
        f"[green]{escape(str(out))}[/]: top {found.k} of {found.metadata['training_examples']:,} "
        f"for {len(found.query_ids):,} queries ({', '.join(written)})"
    )
    console.print(search_note(found.metadata))


def serve(
    index_dir: Annotated[Path, typer.Argument(help="Index directory from `infscope index`.")],
    host: Annotated[str, typer.Option(help="Address to listen on (localhost only by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8765,
) -> None:
    """Answer top-k queries through an index from a long-running local service.

    Loads the index and fits its estimator once; then `GET /health` reports the index and the
    recall measured at build, and `POST /query` with `{"query": "<query store>", "k": 10}`
    returns each query's most helpful and harmful training examples as JSON — in milliseconds,
    where a one-shot `infscope query` spends seconds starting up. While it runs, `infscope
    query` on this index asks it (it records its address in the index directory as
    service.json, removed when it stops). Stop it with Ctrl-C.

    \b
    Example:
      infscope serve runs/index --port 8765
      curl -s localhost:8765/health
      curl -s localhost:8765/query -d '{"query": "runs/test", "k": 10}'
    """
    from infscope.index.service import serve_index

    progress(f"loading the index {index_dir}")

    def ready(url: str) -> None:
        console.print(f"serving {escape(str(index_dir))} on {url} (Ctrl-C stops)")

    serve_index(index_dir, host, port, ready)
