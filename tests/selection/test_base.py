import json

import numpy as np
import pytest

from infscope.errors import InputError
from infscope.selection import Pool, RandomSelection, Selection, TopK, resolve_budget


def test_budget_counts_and_fractions():
    assert resolve_budget(3, 10) == 3
    assert resolve_budget(0.15, 100) == 15
    assert resolve_budget(0.001, 100) == 1
    for bad in (0, 11, 1.5, 0.0, "3", True):
        with pytest.raises(InputError):
            resolve_budget(bad, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scores": np.ones(3)}, "shape"),
        ({"scores": [1, np.nan, 2, 3]}, "NaN"),
        ({"influence": np.ones((2, 3))}, "columns"),
        ({"influence": np.ones((2, 4)), "query_tasks": ["a"]}, "one target task per query"),
        ({"query_tasks": ["a"]}, "without an influence"),
        ({"features": np.ones((3, 2))}, "rows"),
        ({"features": np.ones((4, 2)), "target_features": np.ones((5, 3))}, "columns"),
        ({"texts": ["a", "b"]}, "texts for 4"),
        ({"texts": "abcd"}, "strings"),
        ({"tags": {"task": ["x", "y"]}}, "2 values for 4"),
        ({"tags": {"task": ["x", None, "y", "z"]}}, "missing"),
    ],
)
def test_pool_validates_at_the_door(kwargs, message):
    with pytest.raises(InputError, match=message):
        Pool(ids=["a", "b", "c", "d"], **kwargs)


def test_pool_rejects_duplicates_and_empty():
    with pytest.raises(InputError, match="duplicate"):
        Pool(ids=["a", "b", "a"])
    with pytest.raises(InputError, match="empty"):
        Pool(ids=[])


def test_missing_input_names_what_is_needed():
    with pytest.raises(InputError, match="top-k needs scores"):
        TopK().select(Pool(ids=["a", "b"]), 1)


def test_selection_round_trip_and_outputs(tmp_path):
    pool = Pool(
        ids=[f"e{i}" for i in range(6)], scores=np.arange(6.0), tags={"label": list("aabbcc")}
    )
    sel = TopK().select(pool, 3)
    # the label balance turns e4 away until a second label is in (two c's of three: 0.67 > 0.43)
    assert sel.ids == ["e5", "e3", "e4"]
    loaded = Selection.load(sel.save(tmp_path / "s"))
    assert loaded.ids == sel.ids and loaded.reasons == sel.reasons
    np.testing.assert_array_equal(loaded.indices, sel.indices)
    examples = [{"text": f"t{i}"} for i in range(6)]
    rows = [
        json.loads(line)
        for line in sel.write_jsonl(tmp_path / "s.jsonl", examples).read_text().splitlines()
    ]
    assert [r["text"] for r in rows] == ["t5", "t3", "t4"] and rows[0]["selection_rank"] == 0
    assert sel.counts(pool, "label") == {"a": (2, 0), "b": (2, 1), "c": (2, 2)}
    assert "c: 2 -> 2 (100%)" in sel.summary(pool)
    assert sel.mask(6).sum() == 3


def test_to_dataset():
    pytest.importorskip("datasets")
    pool = Pool(ids=["a", "b", "c"])
    ds = RandomSelection(seed=1).select(pool, 2).to_dataset([{"x": 1}, {"x": 2}, {"x": 3}])
    assert len(ds) == 2 and set(ds.column_names) >= {
        "x",
        "id",
        "selection_weight",
        "selection_reason",
    }


def test_load_refuses_foreign_files(tmp_path):
    (tmp_path / "selection.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="not an infscope selection"):
        Selection.load(tmp_path)


def test_plot_renders_pool_and_selection_shares(tmp_path):
    from PIL import Image

    pool = Pool(
        ids=[str(i) for i in range(30)],
        scores=np.arange(30.0),
        tags={"task": ["a"] * 20 + ["b"] * 10},
    )
    path = TopK().select(pool, 10).plot(pool, "task", tmp_path / "counts.png")
    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape[0] > 200 and image.std() > 10  # a drawn figure, not a blank canvas


def test_written_records_keep_the_datas_own_columns():
    """Before: a user's own "weight"/"rank"/"reason" fields were overwritten in the subset."""
    pool = Pool(ids=["a", "b", "c"], scores=[3.0, 2.0, 1.0])
    data = [
        {"id": i, "weight": 10 * n, "rank": "gold", "reason": "mine"} for n, i in enumerate("abc")
    ]
    rows = TopK(seed=0).select(pool, 2).records(data)
    assert [(r["weight"], r["rank"], r["reason"]) for r in rows] == [
        (0, "gold", "mine"),
        (10, "gold", "mine"),
    ]
    assert [r["selection_rank"] for r in rows] == [0, 1] and "selection_reason" in rows[0]
    with pytest.raises(InputError, match="selection_rank"):
        TopK(seed=0).select(pool, 2).records([{**r, "selection_rank": 1} for r in data])
