"""Why the eigen projection gives each checkpoint its own basis and rank layout: EK-FAC influence
on the tiny GPT-2 of ``attribution_quality.py`` (same models, same cached LDS ground truth) per
checkpoint of the training run and averaged over them, for three ways of projecting a trajectory:

* ``own`` — each checkpoint on its own basis, cut to its own rank layout (what
  ``ProjectionConfig("eigen", basis=[b_1, …, b_C])`` does);
* ``final layout`` — each checkpoint on its own basis, all cut to the final checkpoint's layout;
* ``one basis`` — one basis fit over all checkpoints (``fit_kronecker_basis(weights=…)``).

Empirical Fisher, k = 4096 (``--dim``), default damping. Prints one line per checkpoint and the
average's LDS. Run from the repository root, after ``attribution_quality.py --tasks gpt2-trec``
has cached the ground truth::

    OMP_NUM_THREADS=1 .venv/bin/python bench/eigen_trajectory.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attribution_quality as aq  # noqa: E402
from quality.ours import train_all  # noqa: E402

from infscope.attribution import EKFAC  # noqa: E402
from infscope.curvature import KroneckerBasis, fit_kronecker_basis  # noqa: E402
from infscope.evaluation import linear_datamodeling_score  # noqa: E402
from infscope.gradients import GradientExtractor, ProjectionConfig  # noqa: E402
from infscope.gradients.featurize import featurize  # noqa: E402
from infscope.store import FeatureStore  # noqa: E402


def scores(task, model, state, basis: KroneckerBasis, root: Path) -> np.ndarray:
    """EK-FAC scores of the LDS queries at one checkpoint, its features on ``basis`` (whole)."""
    model.load_state_dict(state)
    config = ProjectionConfig("eigen", None, basis=basis)
    train = GradientExtractor(model, task.infscope_task("loss"), config)
    query = GradientExtractor(model, task.infscope_task("logprob"), config)
    featurize(train, task.train.examples, root / "train", batch_size=64, progress=False)
    featurize(
        query,
        task.queries.examples,
        root / "query",
        gradient="measurement",
        batch_size=64,
        progress=False,
    )
    estimator = EKFAC(basis).fit(FeatureStore.open(root / "train"))
    return estimator.score(FeatureStore.open(root / "query")).values.astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = aq.build_task("gpt2-trec", 1.0)
    outcomes = aq.ground_truth(task, aq.SUBSETS["gpt2-trec"])[0]
    trajectory = train_all(task, task.train, 1).trajectory
    model = task.make_model(0)
    identity = GradientExtractor(
        model, task.infscope_task("loss"), ProjectionConfig("identity", None)
    )
    own = []
    for checkpoint in trajectory:
        model.load_state_dict(checkpoint.state)
        own.append(
            fit_kronecker_basis(identity, task.train.examples, batch_size=64, progress=False)
        )
    shared = fit_kronecker_basis(
        identity,
        task.train.examples,
        batch_size=64,
        progress=False,
        weights=[c.state for c in trajectory],
    )
    final_layout = own[-1].allocate(args.dim)
    variants = {
        "own": [b.truncate(args.dim) for b in own],
        "final layout": [b.truncate_to(final_layout, args.dim) for b in own],
        "one basis": [shared.truncate(args.dim)] * len(trajectory),
    }
    print(f"torch threads {torch.get_num_threads()}; k = {args.dim}; LDS of EK-FAC (defaults)")
    with tempfile.TemporaryDirectory() as scratch:
        for name, bases in variants.items():
            per_checkpoint = []
            for index, (checkpoint, basis) in enumerate(zip(trajectory, bases)):
                root = Path(scratch) / f"{name}-{index}"
                values = scores(task, model, checkpoint.state, basis, root)
                per_checkpoint.append(values)
                lds = linear_datamodeling_score(values, outcomes).mean
                print(f"  {name:12s} {checkpoint.name:8s} {lds:.3f}", flush=True)
            lds = linear_datamodeling_score(np.mean(per_checkpoint, 0), outcomes).mean
            print(f"  {name:12s} average  {lds:.3f}", flush=True)


if __name__ == "__main__":
    main()
