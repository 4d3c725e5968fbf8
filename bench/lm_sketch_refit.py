"""The sketch refit on the dev LM tasks, where the answer is known: each task's LM head is
decomposed at the default settings (exactly up to 4,096 tokens; lm-banking's 11,884-token head
by a 1,024-column sketch that holds 99.9% of its trace), then sketched on purpose at
:data:`NARROW` columns, with and without the refit (``fit_kronecker_basis``'s default). The
default recipe (EK-FAC, ``dim="auto"``, ``damping="auto"``, final model) is scored on each basis:
the refit should recover the default basis's kept share and LDS. Each row also scores the
candidate damping shares on its own fit. Over the cached ground truths of ``bench/lm_defaults.py
--stage truth``; run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python bench/lm_sketch_refit.py gpt2-trec lm-banking
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lm_defaults  # noqa: E402

from infscope.evaluation import ResourceMeter  # noqa: E402

#: the sketch rank the heads are cut to on purpose (below the directions their data occupy)
NARROW = 128


def compare(name: str) -> dict:
    """LDS, k, kept share, seconds and peak MB of the default recipe on the three bases."""
    task = lm_defaults.build_task(name)
    trained = lm_defaults.train_all(task, task.train, 1)
    outcomes = lm_defaults.aq.ground_truth(task, lm_defaults.subsets(name))[0]
    head = task.make_model(0).get_output_embeddings().out_features
    narrow = {"max_exact_dim": min(4096, head - 1), "sketch_rank": NARROW}
    variants = {
        "default basis": {},
        f"head sketched at {NARROW} of {head}": {**narrow, "refit_sketches": False},
        f"head sketched at {NARROW}, refit": narrow,
    }
    work = Path(tempfile.mkdtemp(prefix=f"refit-{name}-", dir=lm_defaults.OUT))
    rows = {}
    try:
        for label, options in variants.items():
            recipe = lm_defaults.Recipe(
                task, trained, work / str(len(rows)), ResourceMeter(), options
            )
            row, fitted = recipe.row("auto", "auto", False, outcomes, label)
            row["refit"] = recipe.basis(False)[0].settings.get("refit")
            row["damping_shares"] = lm_defaults._damping_shares(
                fitted, recipe.store("auto", False)[1], outcomes
            )
            rows[label] = row
            print(f"  {name} {label}: {row}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"task": name, "split": "dev" if name in lm_defaults.DEV else "test", "rows": rows}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    lm_defaults.OUT.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:] or lm_defaults.DEV:
        result = compare(name)
        (lm_defaults.OUT / f"refit-{name}.json").write_text(
            json.dumps(result, indent=1, default=float)
        )


if __name__ == "__main__":
    main()
