"""Score containers: saved with a checksum, non-finite values named, directions honoured."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infscope.attribution import Scores, SelfInfluence, load_scores
from infscope.errors import InputError, NonFiniteError


def test_values_left_by_another_run_are_not_read_as_these_scores(tmp_path):
    """A run killed between writing values.npy and scores.json leaves the old JSON beside new
    values: the recorded checksum tells them apart."""
    Scores(np.ones((2, 3), np.float32), ["q0", "q1"], ["a", "b", "c"], "dot").save(tmp_path)
    np.save(tmp_path / "values.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(InputError, match="does not match"):
        load_scores(tmp_path)


def test_saved_scores_round_trip(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    Scores(values, ["q0", "q1"], ["a", "b", "c"], "dot", {"k": 1}).save(tmp_path / "m")
    loaded = load_scores(tmp_path / "m")
    np.testing.assert_array_equal(loaded.values, values)
    assert (loaded.query_ids, loaded.train_ids, loaded.metadata) == (
        ["q0", "q1"],
        list("abc"),
        {"k": 1},
    )


@pytest.mark.parametrize(
    "meta",
    [
        {"format": "infscope.scores"},
        {"format": "infscope.scores", "kind": "other", "method": "x"},
        [],
    ],
)
def test_malformed_metadata_is_a_clear_error(tmp_path, meta):
    SelfInfluence(np.ones(2, np.float32), ["a", "b"], "dot").save(tmp_path)
    (tmp_path / "scores.json").write_text(json.dumps(meta))
    with pytest.raises(InputError):
        load_scores(tmp_path)


def test_non_finite_scores_name_the_examples():
    values = np.zeros((2, 3), np.float32)
    values[1, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"query 'q1' x train 'c'"):
        Scores(values, ["q0", "q1"], ["a", "b", "c"], "influence")
    with pytest.raises(NonFiniteError, match=r"train 'b'"):
        SelfInfluence(np.array([0.0, np.inf], np.float32), ["a", "b"], "datainf")


def test_orientation_follows_the_recorded_direction():
    easy_high = SelfInfluence(
        np.array([3.0, -1.0, 2.0]), ["a", "b", "c"], "aum", {"higher_is_harder": False}
    )
    oriented = easy_high.oriented()
    np.testing.assert_array_equal(oriented.values, [-3.0, 1.0, -2.0])
    assert oriented.train_ids[oriented.ranking()[0]] == "b" and oriented.higher_is_harder
    with pytest.raises(InputError, match="oriented automatically"):
        easy_high.oriented(negate=True)
    unmarked = SelfInfluence(np.array([1.0, 2.0]), ["a", "b"], "mine")
    assert unmarked.oriented() is unmarked
    np.testing.assert_array_equal(unmarked.oriented(negate=True).values, [-1.0, -2.0])


meta_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=4),
    st.lists(st.text(max_size=2), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)  # fmt: skip


@settings(derandomize=True, max_examples=100, deadline=None)
@given(
    meta=st.dictionaries(
        st.sampled_from(
            ["format", "kind", "method", "train_ids", "query_ids", "metadata", "values_sha256"]
        ),
        meta_values,
    ),
    keep_format=st.booleans(),
)
def test_any_scores_metadata_loads_or_fails_cleanly(tmp_path_factory, meta, keep_format):
    folder = tmp_path_factory.mktemp("scores")
    SelfInfluence(np.ones(2, np.float32), ["a", "b"], "dot").save(folder)
    if keep_format:
        meta["format"] = "infscope.scores"
    (folder / "scores.json").write_text(json.dumps(meta))
    try:
        loaded = load_scores(folder)
    except InputError:
        return
    assert np.isfinite(loaded.values).all()
