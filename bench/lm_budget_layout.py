"""The eigen budget's layout: ``dim="auto"`` against the same ``k`` given explicitly (laid out
by curvature mass), EK-FAC at ``damping="auto"``, final model, on the tasks of
``bench/lm_defaults.py`` (its cached ground truths and trained models: run its ``--stage truth``
first). Before commit 2caa7aa ``dim="auto"`` laid its ``k`` out by effective dimension per
feature, so at that commit's parent the two rows differ; from 2caa7aa on they agree by
construction. Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python bench/lm_budget_layout.py gpt2-trec lm-agnews
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lm_defaults  # noqa: E402

from infscope.evaluation import ResourceMeter  # noqa: E402


def compare(name: str) -> dict:
    """LDS, seconds and peak MB of ``dim="auto"`` and of its ``k`` given explicitly."""
    task = lm_defaults.build_task(name)
    trained = lm_defaults.train_all(task, task.train, 1)
    outcomes = lm_defaults.aq.ground_truth(task, lm_defaults.subsets(name))[0]
    work = Path(tempfile.mkdtemp(prefix=f"layout-{name}-", dir=lm_defaults.OUT))
    recipe = lm_defaults.Recipe(task, trained, work, ResourceMeter())
    auto, _ = recipe.row("auto", "auto", False, outcomes, "dim auto")
    explicit, _ = recipe.row(int(auto["k"]), "auto", False, outcomes, "same k", tag="explicit")
    return {"task": name, "auto": auto, "explicit": explicit}


def main() -> None:
    lm_defaults.OUT.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:] or (*lm_defaults.DEV, *lm_defaults.TEST):
        result = compare(name)
        print(json.dumps(result), flush=True)
        (lm_defaults.OUT / f"layout-{name}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
