"""Progress of unlearning: a bar that counts the solve's Hessian products, and the same result
with or without it."""

from __future__ import annotations

import re

import numpy as np

from infscope.unlearning import GradientConfig, NewtonConfig, finetune_unlearn, newton_unlearn
from tests.unlearning.convex import TASK, WD, data, fit, flat


def test_the_bar_counts_the_hessian_products_and_changes_nothing(capsys):
    examples = data()
    model = fit(examples)
    forget = [f"e{i}" for i in range(0, 240, 40)]
    config = NewtonConfig(weight_decay=WD, max_iter=50)
    quiet = newton_unlearn(model, TASK, examples, forget, config)
    assert capsys.readouterr().err == ""
    shown = newton_unlearn(model, TASK, examples, forget, config, progress=True)
    np.testing.assert_array_equal(flat(quiet.model), flat(shown.model))
    err = capsys.readouterr().err
    iterations = shown.info["steps"][0]["cg_iterations"]
    assert 1 <= iterations < 50
    # one product per CG iteration, as many ticks
    assert re.search(rf"newton step 1/1: CG.* {iterations}/50 ", err), err
    finetune_unlearn(model, TASK, examples, forget, GradientConfig(steps=4), progress=True)
    assert "SGD on the rest" in capsys.readouterr().err
