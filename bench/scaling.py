"""How top-k influence queries scale with the training set: synthetic stores of 10⁴, 10⁵ and 10⁶
examples × 1024 dims (fp16 on disk), exact streaming top-k against IVF-PQ and IVF-SQ8 indexes
with exact re-scoring, and gradient-feature extraction with one and two processes (torchrun).

Per size ``n``: store size on disk and the seconds to write it; exact top-100 of ``--queries``
queries by :meth:`Estimator.score_top` (the reference: every training row read once); the
index build time per ``--kinds`` (:meth:`InfluenceIndex.build`: ``4·√n`` cells, IVF-PQ with
64-byte codes or IVF-SQ8 with one byte per dimension, trained on a 65,536-row sample) and its
size; then per ``--nprobe``: recall@100 against the exact top-100, latency of one query alone
(median of ``--repeats``) and per query in a batch of all ``--queries``; peak RSS of each stage
(above its start). Then the growth exponent of each cost in ``n`` (slope of log cost on log n) at
the default kind and nprobe.

The synthetic features (:func:`synthetic_rows`) have the structure gradient features have —
a few hundred clusters (classes, tasks) in a low-dimensional subspace plus isotropic noise —
because nearest-neighbour search on isotropic Gaussian data in 1024 dimensions has no neighbours
to find; ``--isotropic`` measures that worst case too.

Extraction: ``infscope features`` on an MLP of 1.3M parameters (256→1024→1024→10, Kronecker
projection to 1024 dims, fp16) over ``--extract-examples`` generated examples, once as one
process and once under ``torchrun --nproc_per_node 2``, examples per second of the whole command (start-up included, reported separately).

Run from the repository root (one heavy job at a time; ~40 minutes and ~3 GB of disk at 10⁶)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/scaling.py --markdown bench/results/scaling.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchutil import cpu_model, csv_list, git_commit, markdown_table, publish

from infscope.attribution.registry import EstimatorSpec
from infscope.data import ExampleSet
from infscope.evaluation import ResourceMeter, current_rss_mb
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.index import IndexConfig, InfluenceIndex, recall_at_k
from infscope.store import FeatureStore, StoreSpec
from infscope.tasks import ClassificationTask

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def synthetic_rows(n: int, dim: int, seed: int, isotropic: bool, offset: int = 0) -> np.ndarray:
    """Rows ``offset .. offset + n`` of sample ``seed`` from one fixed population: 256 cluster
    centres and 64 shared directions (decaying scales), plus isotropic noise — or pure
    isotropic noise. Training rows (seed 0) and queries (seed 1) are different draws from the
    same population; a block depends only on ``(seed, offset)``, so a store is written block by
    block without holding it."""
    basis_rng = np.random.default_rng(12345)
    centres = basis_rng.normal(size=(256, dim)).astype(np.float32) / np.sqrt(dim) * 4
    directions = basis_rng.normal(size=(64, dim)).astype(np.float32) / np.sqrt(dim)
    scales = (2.0 / np.arange(1, 65) ** 0.5).astype(np.float32)
    rng = np.random.default_rng([seed, offset])
    noise = rng.normal(scale=0.3 if not isotropic else 1.0, size=(n, dim)).astype(np.float32)
    if isotropic:
        return noise
    cluster = rng.integers(0, 256, size=n)
    mix = rng.normal(size=(n, 64)).astype(np.float32) * scales
    return centres[cluster] + mix @ directions + noise / np.sqrt(dim) * 8


def write_store(root: Path, n: int, dim: int, seed: int, isotropic: bool, gradient: str) -> float:
    """A one-checkpoint fp16 store of ``n`` synthetic rows; returns the seconds it took."""
    start = time.perf_counter()
    spec = StoreSpec(
        feature_dim=dim,
        dtype="float16",
        gradient=gradient,
        shard_size=8192,
        projection={"kind": "synthetic", "isotropic": isotropic},
        task={"population_seed": seed},
    )
    store = FeatureStore.create(root, [f"{gradient[0]}{i}" for i in range(n)], spec)
    store.add_checkpoint("final")
    for first, stop in store.missing_shards("final"):
        store.write_shard("final", first, synthetic_rows(stop - first, dim, seed, isotropic, first))
    return time.perf_counter() - start


def disk_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def trained_rows(n: int, seed: int, flip: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples of a 20-class Gaussian mixture in 64 dimensions (fixed centres), a
    ``flip`` share of their labels replaced at random."""
    centres = np.random.default_rng(54321).normal(size=(20, 64)).astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 20, size=n)
    x = centres[labels] + rng.normal(scale=1.5, size=(n, 64)).astype(np.float32)
    flipped = rng.random(n) < flip
    labels[flipped] = rng.integers(0, 20, size=int(flipped.sum()))
    return x, labels


def write_trained(roots: dict[str, Path], n: int, queries: int, dim: int) -> float:
    """Gradient features of a trained model: an MLP 64→256→20 trained for 2 epochs (SGD) on
    ``n`` examples of :func:`trained_rows` (10% of labels flipped, so some training examples
    hurt), then the loss gradients of those examples and the measurement gradients of
    ``queries`` fresh clean ones, Kronecker-projected to ``dim`` (fp16). Returns seconds."""
    start = time.perf_counter()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 20))
    task = ClassificationTask()
    x, y = trained_rows(n, 0, 0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(2):
        for batch in torch.randperm(n, generator=torch.Generator().manual_seed(0)).split(128):
            optimizer.zero_grad()
            task.train_loss(model, (xt[batch], yt[batch])).mean().backward()
            optimizer.step()
    extractor = GradientExtractor(model, task, ProjectionConfig(kind="kronecker", dim=dim))
    qx, qy = trained_rows(queries, 1, 0.0)
    for name, (xs, ys), gradient in (
        ("train", (x, y), "loss"), ("query", (qx, qy), "measurement"),
        ("single", (qx[:1], qy[:1]), "measurement"),
    ):  # fmt: skip
        pairs = [(torch.from_numpy(xs[i]), torch.tensor(int(ys[i]))) for i in range(len(ys))]
        data = ExampleSet(pairs, tuple(f"{name[0]}{i}" for i in range(len(ys))))
        featurize(
            extractor, data, roots[name], gradient=gradient, batch_size=512, shard_size=8192,
            dtype="float16", progress=False,
        )  # fmt: skip
    return time.perf_counter() - start


def source_stores(source: str, n: int, args, scratch: Path) -> tuple[dict[str, Path], float]:
    """The training, query and one-query stores of ``source`` at ``n`` rows, and the seconds
    it took to write the training store."""
    roots = {name: scratch / f"{name}-{source}-{n}" for name in ("train", "query", "single")}
    if source == "trained":
        return roots, write_trained(roots, n, args.queries, args.dim)
    isotropic = source == "isotropic"
    seconds = write_store(roots["train"], n, args.dim, 0, isotropic, "loss")
    write_store(roots["query"], args.queries, args.dim, 1, isotropic, "measurement")
    write_store(roots["single"], 1, args.dim, 1, isotropic, "measurement")  # the first query
    return roots, seconds


def measure_source(
    source: str, n: int, args, scratch: Path, meter: ResourceMeter, metrics: list[str]
) -> list[dict]:
    """Per estimator of ``source`` (dot product; also cosine and influence on trained
    features): :func:`measure`."""
    roots, write_seconds = source_stores(source, n, args, scratch)
    methods = ["dot", "cosine", "influence"] if source == "trained" else ["dot"]
    rows = []
    for method in methods:
        row = {"n": n, "dim": args.dim, "features": source, "estimator": method}
        row.update(store_mb=disk_mb(roots["train"]), write_s=write_seconds)
        rows += measure(f"{source} {n} {method}", roots, row, args, scratch, meter, metrics)
    return rows


def measure_real(
    path: Path, args, scratch: Path, meter: ResourceMeter, metrics: list[str]
) -> list[dict]:
    """The same on a gradient store of your own: every 10th row (up to ``--queries``) becomes
    a query, the others the training set; dot product, cosine and influence."""
    source = FeatureStore.open(path)
    values = source.features()
    held = np.arange(len(values)) % 10 == 0
    query_rows = np.flatnonzero(held)[: args.queries]
    train_rows = np.flatnonzero(~held)
    roots = {}
    for name, rows, gradient in (
        ("train", train_rows, "loss"), ("query", query_rows, "measurement"),
        ("single", query_rows[:1], "measurement"),
    ):  # fmt: skip
        roots[name] = scratch / f"real-{name}"
        spec = StoreSpec(feature_dim=values.shape[1], gradient=gradient, shard_size=8192)
        store = FeatureStore.create(roots[name], [f"{name}{i}" for i in rows], spec)
        store.add_checkpoint("final")
        for first, stop in store.missing_shards("final"):
            store.write_shard("final", first, values[rows[first:stop]])
    results = []
    for method in ("dot", "cosine", "influence"):
        row = {"n": len(train_rows), "features": "real", "dim": values.shape[1]}
        row.update(estimator=method, store_mb=disk_mb(roots["train"]), write_s=0.0)
        results += measure(f"real {method}", roots, row, args, scratch, meter, metrics)
    return results


def cli(*arguments: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``infscope`` command (its output captured; a
    failure raises)."""
    command = [sys.executable, "-m", "infscope.cli.main", *map(str, arguments)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output.decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def measure(
    label: str,
    roots: dict[str, Path],
    row: dict,
    args,
    scratch: Path,
    meter: ResourceMeter,
    metrics: list[str],
) -> list[dict]:
    """Exact top-k of both directions; then per index kind and metric: the build (`infscope
    index`, which calibrates each direction's nprobe), and at the calibrated default and each
    ``--nprobe``: recall@k of both directions, latency from Python, and one `infscope query`
    call."""
    estimator = EstimatorSpec(row["estimator"]).build().fit(FeatureStore.open(roots["train"]))
    query, one = FeatureStore.open(roots["query"]), FeatureStore.open(roots["single"])

    def stage(name, fn, *fn_args, **fn_kwargs):
        base = current_rss_mb()
        t0 = time.perf_counter()
        key = f"{label} {name} {len(meter.report())}"  # a new stage each time: its own peak
        with meter.stage(key):
            value = fn(*fn_args, **fn_kwargs)
        return value, time.perf_counter() - t0, meter.report()[key]["peak_mb"] - base

    exact, row["exact_s"], row["exact_peak_mb"] = stage("exact", estimator.score_top, query, args.k)
    rows = []
    for kind, metric in [(k, m) for k in args.kinds for m in metrics]:
        folder = scratch / f"index-{label.replace(' ', '-')}-{kind}-{metric}"
        built = dict(row, kind=kind, metric=metric)
        built["build_s"], built["build_rss_mb"] = cli(
            "index", "--train", roots["train"], "--method", row["estimator"], "--kind", kind,
            "--metric", metric, "--out", folder,
        )  # fmt: skip
        index = InfluenceIndex.load(folder, estimator)
        calibration = index.calibration or {}
        built.update(index=index.info["factory"], index_mb=disk_mb(folder))
        for direction in ("helpful", "harmful"):
            built[f"calibrated_{direction}"] = calibration.get(direction, {}).get("recall")
        for nprobe in [None, *args.nprobe]:
            measured = dict(built, setting="default" if nprobe is None else f"nprobe {nprobe}")
            latencies = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                index.search(one, args.k, nprobe=nprobe)
                latencies.append(time.perf_counter() - t0)
            found, seconds, measured["search_peak_mb"] = stage(
                "search", index.search, query, args.k, nprobe=nprobe
            )
            measured["latency_ms"] = 1000 * float(np.median(latencies))
            measured["batch_ms"] = 1000 * seconds / args.queries
            for direction in ("helpful", "harmful"):
                measured[f"nprobe_{direction}"] = found.metadata["nprobe"][direction]
                measured[f"recall_{direction}"] = recall_at_k(found, exact, direction)
            if nprobe is None:
                measured["cli_query_s"] = float(np.median([
                    cli("query", folder, "--query", roots["single"], "--k", args.k, "--table",
                        "none", "--out", scratch / "cli-query")[0]
                    for _ in range(3)
                ]))  # fmt: skip
            rows.append(measured)
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in measured.items()}
            print("  " + json.dumps(shown), flush=True)
        del index
    return rows


def extraction(args, scratch: Path) -> list[dict]:
    """Examples/second of `infscope features` with 1 and 2 processes on an MLP of 1.3M
    parameters (Kronecker projection to 1024 dims, fp16)."""
    module = scratch / "scaling_factory.py"
    module.write_text(
        "import torch\nfrom torch import nn\nfrom infscope.tasks import ClassificationTask\n\n"
        "class Task(ClassificationTask):\n"
        "    def collate(self, examples):\n"
        "        x = torch.tensor([e['x'] for e in examples], dtype=torch.float32)\n"
        "        return x, torch.tensor([e['label'] for e in examples])\n\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    model = nn.Sequential(\n"
        "        nn.Linear(256, 1024), nn.Tanh(), nn.Linear(1024, 1024), nn.Tanh(),\n"
        "        nn.Linear(1024, 10),\n"
        "    )\n"
        "    return model, Task()\n"
    )
    rng = np.random.default_rng(0)
    with (scratch / "extract.jsonl").open("w") as handle:
        for i in range(args.extract_examples):
            x = rng.normal(size=256).round(3).tolist()
            handle.write(json.dumps({"id": f"e{i}", "x": x, "label": int(i % 10)}) + "\n")
    rows = []
    common = [
        "-m", "infscope.cli.main", "features", "extract.jsonl", "--task", "factory",
        "--model", "scaling_factory:build", "--projection", "kronecker", "--dim", "1024",
        "--batch-size", "64", "--dtype", "float16",
        "--shard-size", "1024",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(scratch)}
    for processes in (1, 2):
        launcher = [sys.executable]
        if processes > 1:
            launcher += [
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={processes}",
            ]
        command = [*launcher, *common, "--out", f"extract-{processes}"]

        seconds = timed(command, scratch, env)
        startup = timed(command, scratch, env)  # start-up alone: the same command, store done
        rows.append(
            {
                "features": "extraction",
                "processes": processes,
                "seconds": seconds,
                "startup_s": startup,
                "examples_per_s": args.extract_examples / seconds,
                "examples_per_s_after_startup": args.extract_examples
                / max(seconds - startup, 1e-9),
            }
        )
        print("  " + json.dumps(rows[-1]), flush=True)
    return rows


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds one run of ``command`` takes (its output captured; a failure raises)."""
    t0 = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(np.maximum(ys, 1e-9)), 1)[0])


def growth(rows: list[dict]) -> str:
    """Growth exponents in n of each cost at the default settings (synthetic, ivf-pq, ip)."""
    default = IndexConfig()
    reference = [
        r for r in rows
        if r["features"] == "synthetic" and r["kind"] == default.kind
        and r["setting"] == "default" and r["metric"] == default.metric
    ]  # fmt: skip
    sizes = [r["n"] for r in reference]
    if len(set(sizes)) < 2:
        return "needs two sizes at the default settings"
    return ", ".join(
        f"{name} n^{slope(sizes, [r[key] for r in reference]):.2f}"
        for name, key in (
            ("store", "store_mb"), ("exact top-k", "exact_s"), ("build", "build_s"),
            ("query latency", "latency_ms"), ("index size", "index_mb"),
            ("`infscope query` call", "cli_query_s"),
        )
    )  # fmt: skip


def report(rows: list[dict], extract: list[dict], args, started: str) -> str:
    header = ["n", "features", "estimator", "store MB", "exact top-100 s", "index", "build s",
              "build peak MB", "index MB", "setting", "nprobe helpful / harmful",
              "recall helpful", "recall harmful", "ms, 1 query", "ms / query, batch",
              "`infscope query` s"]  # fmt: skip
    table = markdown_table(
        header,
        [
            [
                f"{r['n']:,}", r["features"], r["estimator"], f"{r['store_mb']:.0f}",
                f"{r['exact_s']:.1f}", r["index"], f"{r['build_s']:.1f}",
                f"{r['build_rss_mb']:.0f}", f"{r['index_mb']:.1f}", r["setting"],
                f"{r['nprobe_helpful']} / {r['nprobe_harmful']}", f"{r['recall_helpful']:.3f}",
                f"{r['recall_harmful']:.3f}", f"{r['latency_ms']:.1f}", f"{r['batch_ms']:.1f}",
                f"{r['cli_query_s']:.2f}" if "cli_query_s" in r else "",
            ]
            for r in rows
        ],
    )  # fmt: skip
    extract_table = markdown_table(
        ["processes", "seconds", "start-up s", "examples/s", "examples/s after start-up"],
        [
            [str(e["processes"]), f"{e['seconds']:.1f}", f"{e['startup_s']:.1f}",
             f"{e['examples_per_s']:.0f}", f"{e['examples_per_s_after_startup']:.0f}"]
            for e in extract
        ],
    )  # fmt: skip
    default = IndexConfig()
    text = (
        f"{started}, {git_commit()}, {cpu_model()}, {args.threads} thread(s); {args.queries} "
        f"queries, k = {args.k}, rerank {default.rerank} x k; 'default': each direction's nprobe "
        f"as calibrated at build (target recall {default.target_recall})\n\n{table}\n\n"
        f"Growth in n ({default.kind}, {default.metric}, default settings): {growth(rows)}\n"
    )
    if extract:
        text += (
            f"\nExtraction ({args.extract_examples:,} examples, MLP 256→1024→1024→10, "
            f"Kronecker projection to 1024 dims):\n\n{extract_table}\n"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=csv_list(int), default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10, help="single-query searches timed")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument(
        "--nprobe", type=csv_list(int), default=[], help="also these nprobe (both directions)"
    )
    parser.add_argument("--kinds", type=csv_list(str), default=["ivf-pq"])
    parser.add_argument("--metrics", type=csv_list(str), default=["ip"])
    parser.add_argument(
        "--isotropic", type=csv_list(int), default=[], help="sizes also run on isotropic noise"
    )
    parser.add_argument(
        "--trained", type=csv_list(int), default=[100_000],
        help="sizes also run on gradient features of a trained MLP",
    )  # fmt: skip
    parser.add_argument(
        "--real", type=Path, default=None, help="also a gradient store of yours (held-out queries)"
    )
    parser.add_argument("--extract-examples", type=int, default=0, help="0: no extraction run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", type=Path, default=RESULTS / "scaling.md")
    parser.add_argument(
        "--rows", type=Path, default=RESULTS / "scaling-rows.jsonl",
        help="rows, appended as measured",
    )  # fmt: skip
    parser.add_argument(
        "--reuse", action="store_true", help="keep the --rows already measured (by size and data)"
    )
    parser.add_argument(
        "--scratch", type=Path, default=RESULTS, help="folder for the temporary stores"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the `infscope` commands timed
    meter = ResourceMeter()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"threads {args.threads}; {cpu_model()}; {git_commit()}", flush=True)
    if args.real is not None:  # checked before the long runs, not after them
        real = FeatureStore.open(args.real)
        if not real.is_complete(real.checkpoints[-1].id):
            raise SystemExit(f"{args.real}: incomplete store (finish its extraction first)")
    done = []
    if args.reuse and args.rows.exists():  # rows of an older layout are measured again
        done = [json.loads(line) for line in args.rows.read_text().splitlines()]
        done = [r for r in done if "recall_harmful" in r or r["features"] == "extraction"]
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        args.rows.write_text("")

    def measured(group: tuple, run) -> list[dict]:
        """The rows of ``group`` (n, features): those in ``--rows`` reused, the metrics they lack
        measured (``run(metrics)``) and appended."""
        n, features = group
        kept = [r for r in done if r["features"] == features and n in (None, r.get("n"))]
        have = {r.get("metric") for r in kept}
        missing = [m for m in args.metrics if m not in have] if features != "extraction" else []
        if kept:
            print(f"  reusing {len(kept)} rows of {group} from {args.rows}", flush=True)
        if kept and not missing:
            return kept
        fresh = [dict(r, commit=git_commit()) for r in run(missing)]
        with args.rows.open("a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in fresh)
        return kept + fresh

    args.scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        scratch = Path(scratch)
        rows = []
        for source, sizes in (
            ("synthetic", args.sizes), ("isotropic", args.isotropic), ("trained", args.trained)
        ):  # fmt: skip
            for n in sizes:
                run = lambda m, s=source, n=n: measure_source(s, n, args, scratch, meter, m)  # noqa: E731
                rows += measured((n, source), run)
        if args.real is not None:
            run = lambda m: measure_real(args.real, args, scratch, meter, m)  # noqa: E731
            rows += measured((None, "real"), run)
        extract = []
        if args.extract_examples:
            extract = measured((None, "extraction"), lambda m: extraction(args, scratch))
    publish(report(rows, extract, args, started), args.markdown)


if __name__ == "__main__":
    main()
