"""EK-FAC wall time and peak memory, infscope vs kronfluence, on the same job.

The job: an MLP with ~64k parameters (64 → 850 (tanh) → 10) trained briefly on synthetic
teacher-labelled data; EK-FAC over every parameter (infscope: identity features, so both sides
compute the same kind of quantity) for ``--train`` training examples and ``--queries`` queries,
each side at its default damping (kronfluence ``0.1 × mean EK-FAC eigenvalue`` per module,
infscope ``0.1 × trace / min(n, dim)`` per module: equal for modules no wider than ``n``, larger
for wider ones — so the score agreement printed is high but not 1). Each side runs in a **fresh
process**; its peak resident memory
(``ru_maxrss``) is reported above the process's RSS just before the job (after imports, data and
model), so neither side is charged for the other's allocations. infscope's job: featurize the
training store with the K-FAC covariances collected in the same pass, build the factors from
them (one streamed read of the store), fit, and score the queries. kronfluence's job:
``fit_all_factors("ekfac")`` + ``compute_pairwise_scores``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/ekfac_memory.py            # 2,000 x 63,760
    OMP_NUM_THREADS=1 .venv/bin/python bench/ekfac_memory.py --train 500 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import cpu_model, git_commit  # noqa: E402

HIDDEN = 850


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _problem(n_train: int, n_query: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_query, 64, generator=generator)
    teacher = torch.randn(64, 10, generator=generator)
    y = (x @ teacher + 0.5 * torch.randn(len(x), 10, generator=generator)).argmax(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        for index in torch.randperm(n_train, generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model.eval(), x, y


def run_infscope(n_train: int, n_query: int, batch: int) -> dict:
    from infscope.attribution.kfac import EKFAC
    from infscope.curvature.covariance import KroneckerCovariances
    from infscope.curvature.kfac import KFACFactors
    from infscope.data import ExampleSet
    from infscope.gradients import GradientExtractor, ProjectionConfig
    from infscope.gradients.featurize import featurize
    from infscope.store import FeatureStore
    from infscope.tasks import ClassificationTask

    model, x, y = _problem(n_train, n_query)
    pairs = [(x[i], y[i]) for i in range(len(y))]
    train = ExampleSet(pairs[:n_train], tuple(f"t{i}" for i in range(n_train)))
    query = ExampleSet(pairs[n_train:], tuple(f"q{i}" for i in range(n_query)))
    root = Path(tempfile.mkdtemp(prefix="ekfac-memory-"))
    base, start = _rss_mb(), time.perf_counter()
    identity = ProjectionConfig(kind="identity", dim=None)
    extractor = GradientExtractor(model, ClassificationTask(), identity)
    covariances = KroneckerCovariances(extractor)
    featurize(
        extractor, train, root / "train", batch_size=batch, progress=False, covariances=covariances
    )
    measure = GradientExtractor(model, ClassificationTask("margin"), identity)
    featurize(measure, query, root / "query", gradient="measurement", progress=False)
    store = FeatureStore.open(root / "train")
    factors = KFACFactors.from_covariances(covariances, store)
    estimator = EKFAC(factors, damping=0.1).fit(store)
    scores = estimator.score(FeatureStore.open(root / "query")).values
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_mb": _peak_mb() - base,
        "feature_dim": store.feature_dim,
        "scores": scores.tolist(),
        "module_damping": estimator.describe()["module_damping"],
    }


def run_kronfluence(n_train: int, n_query: int, batch: int) -> dict:
    import torch.nn.functional as F
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from torch.utils.data import TensorDataset

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample=False):
            inputs, labels = batch
            return F.cross_entropy(model(inputs), labels, reduction="sum")

        def compute_measurement(self, batch, model):
            inputs, labels = batch
            logits = model(inputs)
            correct = logits.gather(1, labels[:, None]).squeeze(1)
            others = logits.scatter(1, labels[:, None], float("-inf"))
            return (torch.logsumexp(others, 1) - correct).sum()

    model, x, y = _problem(n_train, n_query)
    train = TensorDataset(x[:n_train], y[:n_train])
    query = TensorDataset(x[n_train:], y[n_train:])
    root = Path(tempfile.mkdtemp(prefix="ekfac-memory-k-"))
    base, start = _rss_mb(), time.perf_counter()
    task = Classification()
    analyzer = Analyzer(
        analysis_name="memory",
        model=prepare_model(model, task),
        task=task,
        cpu=True,
        output_dir=str(root),
        disable_model_save=True,
        disable_tqdm=True,
    )
    analyzer.fit_all_factors(
        "ekfac",
        train,
        per_device_batch_size=batch,
        factor_args=FactorArguments(strategy="ekfac", use_empirical_fisher=True),
        overwrite_output_dir=True,
    )
    analyzer.compute_pairwise_scores(
        "pairwise",
        "ekfac",
        query,
        train,
        per_device_query_batch_size=n_query,
        per_device_train_batch_size=batch,
        score_args=ScoreArguments(damping_factor=None),
        overwrite_output_dir=True,
    )
    scores = analyzer.load_pairwise_scores("pairwise")["all_modules"].double().numpy()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": _peak_mb() - base, "scores": scores.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--side", choices=("infscope", "kronfluence"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.side:  # child process: one side, results to --out
        run = run_infscope if args.side == "infscope" else run_kronfluence
        args.out.write_text(json.dumps(run(args.train, args.queries, args.batch)))
        return
    results = {}
    for side in ("infscope", "kronfluence"):
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        command = [sys.executable, __file__, "--side", side, "--out", str(out)]
        command += ["--train", str(args.train), "--queries", str(args.queries)]
        command += ["--batch", str(args.batch)]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        results[side] = json.loads(out.read_text())
        print(
            f"{side}: {results[side]['seconds']:.1f} s, peak {results[side]['peak_mb']:.0f} MB "
            f"above the start of the job",
            flush=True,
        )
    ours = np.array(results["infscope"]["scores"])
    theirs = np.array(results["kronfluence"]["scores"])
    from scipy.stats import spearmanr

    rho = float(spearmanr(ours.ravel(), theirs.ravel()).statistic)
    ratio_time = results["infscope"]["seconds"] / results["kronfluence"]["seconds"]
    ratio_memory = results["infscope"]["peak_mb"] / max(results["kronfluence"]["peak_mb"], 1e-9)
    print(
        f"n = {args.train}, features = {results['infscope']['feature_dim']}, queries = "
        f"{args.queries}: time ratio {ratio_time:.2f}, peak-memory ratio {ratio_memory:.2f}, "
        f"score agreement Spearman {rho:.4f}"
    )
    if args.json:
        summary = {
            "command": " ".join([sys.executable, *sys.argv]),
            "machine": {"cpu": cpu_model(), "platform": platform.platform(), "threads": 1},
            "commit": git_commit(),
            "n_train": args.train,
            "n_query": args.queries,
            "feature_dim": results["infscope"]["feature_dim"],
            "infscope": {k: results["infscope"][k] for k in ("seconds", "peak_mb")},
            "kronfluence": {k: results["kronfluence"][k] for k in ("seconds", "peak_mb")},
            "time_ratio": ratio_time,
            "memory_ratio": ratio_memory,
            "spearman": rho,
        }
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
