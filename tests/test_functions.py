"""load_function: a function named on the command line that raises is reported as one error
naming it, its exception and the line of the user's code; infscope's own errors pass unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.errors import InputError, UserCodeError
from infscope.functions import load_function

USER_CODE = """\
from infscope.errors import InputError


def broken(train_indices, seed):
    return {}["accuracy"]


def refuses(train_indices, seed):
    raise InputError("bad input")


def fine(train_indices, seed):
    return float(len(train_indices) + seed)
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_fns_module.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "user_fns_module.py"


def test_an_exception_names_the_option_the_error_the_line_and_the_call(user_module):
    broken = load_function("user_fns_module:broken")
    with pytest.raises(UserCodeError) as caught:
        broken(np.arange(7), 3)
    assert str(caught.value) == (
        f"--train-fn user_fns_module:broken raised KeyError: 'accuracy' at {user_module}:5 in "
        "broken (called with (7 indices, 3))"
    )
    assert isinstance(caught.value.__cause__, KeyError)  # the full traceback stays reachable


def test_results_and_infscope_errors_pass_unchanged(user_module):
    assert load_function("user_fns_module:fine")(np.arange(4), 1) == 5.0
    with pytest.raises(InputError, match="^bad input$"):
        load_function("user_fns_module:refuses")(np.arange(4), 1)
