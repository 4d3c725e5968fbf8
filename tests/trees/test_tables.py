"""Tables for tree models: numeric features, integer-looking labels as integers, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infscope.errors import InputError
from infscope.trees.tables import load_table


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_features_labels_and_ids(tmp_path):
    rows = [{"id": "a", "x": 1.5, "z": None, "label": "1"}, {"id": "b", "x": 2, "z": 3, "label": 0}]
    table = load_table(write(tmp_path / "t.jsonl", rows))
    assert table.ids == ["a", "b"] and table.columns == ["x", "z"]
    np.testing.assert_array_equal(table.features, [[1.5, np.nan], [2.0, 3.0]])
    assert table.labels.tolist() == [1, 0]
    assert load_table(tmp_path / "t.jsonl", ignore=["z"]).columns == ["x"]
    assert load_table(tmp_path / "t.jsonl", features=["z"]).columns == ["z"]


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"id": "a", "x": "tall", "label": 0}], "'tall' is not a number"),
        ([{"id": "a", "x": 1}], "no label column 'label'"),
        ([{"id": "a", "label": 0}], "no feature columns"),
        ([{"id": "a", "x": 1, "label": 0}, {"id": "b", "x": 1, "label": "cat"}], "mixes"),
        ([{"id": "a", "x": 1, "label": 0}, {"id": "b", "label": 1}], "without feature"),
    ],
)
def test_unusable_tables_are_refused(tmp_path, rows, message):
    with pytest.raises(InputError, match=message):
        load_table(write(tmp_path / "t.jsonl", rows))
