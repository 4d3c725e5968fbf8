"""The typed block layout: one parser of what stores record, laid out contiguously, refusing
malformed entries, and read from a spec written in the format stores have always had."""

from __future__ import annotations

import pytest

from infscope.errors import InputError
from infscope.store import BlockLayout, FeatureStore, StoreSpec


def test_parse_lays_blocks_out_one_after_the_other():
    recorded = [
        {"module": "fc1", "shape": [3, 7], "kronecker": True},
        {"module": "norm", "shape": [2, 5], "kronecker": False},
    ]
    layout = BlockLayout.parse(recorded)
    assert [b.columns for b in layout] == [slice(0, 21), slice(21, 31)]
    assert layout.width == 31 and layout.modules == ("fc1", "norm")
    assert layout.to_json() == recorded
    assert BlockLayout.parse(layout.to_json()) == layout


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [{"module": "a", "shape": [3], "kronecker": True}],
        [{"shape": [1, 2]}],
        [{"module": "a", "shape": [0, 2], "kronecker": True}],
        [{"module": "a", "shape": [1, 2], "kronecker": "yes"}],
        "blocks",
    ],
)
def test_malformed_layouts_are_one_clear_error(entries):
    with pytest.raises(InputError, match="layout"):
        BlockLayout.parse(entries)


def test_a_store_written_before_reads_its_layout_and_measurement(tmp_path):
    """store.json as earlier versions wrote it (the projection's untyped ``blocks`` list, the
    task's ``measurement``): the spec gives the typed layout and the measurement."""
    projection = {
        "kind": "kronecker",
        "dim": 8,
        "blocks": [
            {"module": "0", "shape": [2, 2], "kronecker": True},
            {"module": "2", "shape": [2, 2], "kronecker": True},
        ],
    }
    spec = StoreSpec(feature_dim=8, projection=projection, task={"measurement": "margin"})
    FeatureStore.create(tmp_path / "s", ["a", "b"], spec)
    opened = FeatureStore.open(tmp_path / "s").spec
    assert opened.layout.modules == ("0", "2") and opened.layout.width == 8
    assert opened.measurement == "margin"
    sjlt = StoreSpec(feature_dim=8, projection={"kind": "sjlt", "dim": 8})
    assert sjlt.layout is None and sjlt.measurement is None
