"""ExampleSet: ids from files and lists, and readable errors for bad data."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infscope.data import ExampleSet
from infscope.errors import InfscopeWarning, InputError

RECORDS = [
    {"id": "a", "text": "first, with a comma", "label": 0},
    {"id": "b", "text": "second", "label": 1},
    {"id": "c", "text": "third", "label": 0},
]


def without_ids(records):
    return [{k: v for k, v in r.items() if k != "id"} for r in records]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_csv(path, records):
    columns = list(records[0])
    lines = [",".join(columns)]
    for r in records:
        lines.append(",".join(f'"{r[c]}"' if "," in str(r[c]) else str(r[c]) for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_json(path, records):
    path.write_text(json.dumps(records))
    return path


WRITERS = {"jsonl": write_jsonl, "json": write_json, "csv": write_csv}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_from_file_with_ids(tmp_path, fmt):
    data = ExampleSet.from_file(WRITERS[fmt](tmp_path / f"data.{fmt}", RECORDS))
    assert data.ids == ("a", "b", "c")
    assert len(data) == 3
    assert list(data) == RECORDS
    assert data[1] == RECORDS[1]


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_from_file_without_ids_uses_row_numbers(tmp_path, fmt):
    records = without_ids(RECORDS)
    with pytest.warns(InfscopeWarning, match="row numbers"):
        data = ExampleSet.from_file(WRITERS[fmt](tmp_path / f"data.{fmt}", records))
    assert data.ids == ("0", "1", "2")
    assert list(data) == records


def test_other_id_field_and_no_id_field(tmp_path):
    records = [{"key": f"k{i}", "id": f"x{i}"} for i in range(3)]
    path = write_jsonl(tmp_path / "data.jsonl", records)
    assert ExampleSet.from_file(path, id_field="key").ids == ("k0", "k1", "k2")
    assert ExampleSet.from_file(path, id_field=None).ids == ("0", "1", "2")


def test_csv_ids_are_kept_as_written(tmp_path):
    """Numeric-looking ids are text: "007" must not become 7 (and then "7")."""
    path = tmp_path / "data.csv"
    path.write_text("id,text,label\n007,a,0\n7,b,1\n1.50,c,0\n")
    data = ExampleSet.from_file(path)
    assert data.ids == ("007", "7", "1.50")
    assert [r["label"] for r in data] == [0, 1, 0]  # other columns keep their types


def test_suffix_is_case_insensitive_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "DATA.JSONL"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n   \n" + json.dumps(RECORDS[1]) + "\n")
    assert ExampleSet.from_file(path).ids == ("a", "b")


def test_non_string_ids_become_strings():
    data = ExampleSet.from_records([{"id": 1}, {"id": 2}])
    assert data.ids == ("1", "2")
    assert ExampleSet(["x", "y"], [10, 11]).ids == ("10", "11")


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n\n"),
        ("empty.json", "[]"),
        ("header.csv", "id,text\n"),
    ],
)
def test_empty_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match="empty dataset|no data"):
        ExampleSet.from_file(path)


@pytest.mark.parametrize("name", ["empty.json", "empty.csv"])
def test_zero_byte_files_are_input_errors(tmp_path, name):
    path = tmp_path / name
    path.write_text("")
    with pytest.raises(InputError, match=name):
        ExampleSet.from_file(path)


@pytest.mark.parametrize(
    "content, line",
    [
        ("id,text,label\na,hello there,1,0\n", 2),  # one field too many: pandas would shift it
        ("id,text,label\na,fine,1\nb,short\n", 3),  # one too few
    ],
)
def test_a_ragged_csv_row_is_an_error_naming_its_line(tmp_path, content, line):
    path = tmp_path / "ragged.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=rf"ragged.csv: line {line} has \d fields, the header 3"):
        ExampleSet.from_file(path)


def test_quoted_commas_are_one_field(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text('id,text,label\na,"hello, there",1\n')
    assert ExampleSet.from_file(path).examples[0]["text"] == "hello, there"


def test_duplicate_ids(tmp_path):
    records = [{"id": "a"}, {"id": "b"}, {"id": "a"}]
    with pytest.raises(InputError, match="duplicate example id 'a'"):
        ExampleSet.from_file(write_jsonl(tmp_path / "dup.jsonl", records))
    with pytest.raises(InputError, match="duplicate"):
        ExampleSet([1, 2], ["1", 1])  # equal once turned into strings


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n" + '{"id": "b", "text": oops}\n')
    with pytest.raises(InputError) as info:
        ExampleSet.from_file(path)
    assert f"{path}:3:" in str(info.value)
    assert "invalid JSON" in str(info.value)


def test_bad_json_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"id": "a"},\n {"id": }]')
    with pytest.raises(InputError, match=r"bad\.json:2: invalid JSON"):
        ExampleSet.from_file(path)
    path.write_text('{"id": "a"}')
    with pytest.raises(InputError, match="JSON list"):
        ExampleSet.from_file(path)


def test_records_must_be_objects(tmp_path):
    path = tmp_path / "lists.jsonl"
    path.write_text("[1, 2]\n[3, 4]\n")
    with pytest.raises(InputError, match="JSON object"):
        ExampleSet.from_file(path)


def test_unsupported_suffix_and_missing_file(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    with pytest.raises(InputError, match=r"unsupported data format '\.txt'"):
        ExampleSet.from_file(path)
    with pytest.raises(InputError, match="no such data file"):
        ExampleSet.from_file(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="no such data file"):
        ExampleSet.from_file(tmp_path)  # a directory is not a data file


def test_length_mismatch_and_empty():
    with pytest.raises(InputError, match="3 examples but 2 ids"):
        ExampleSet([1, 2, 3], ("a", "b"))
    with pytest.raises(InputError, match="empty dataset"):
        ExampleSet([], ())
    with pytest.raises(InputError, match="empty dataset"):
        ExampleSet.from_records([])


def test_from_dataset():
    import datasets

    table = datasets.Dataset.from_list(RECORDS)
    assert ExampleSet.from_dataset(table).ids == ("a", "b", "c")
    no_ids = datasets.Dataset.from_list(without_ids(RECORDS))
    with pytest.warns(InfscopeWarning, match="row numbers"):
        assert ExampleSet.from_dataset(no_ids).ids == ("0", "1", "2")

    class TorchStyle:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return (i, i * i)

    data = ExampleSet.from_dataset(TorchStyle())
    assert data.ids == ("0", "1") and list(data) == [(0, 0), (1, 1)]


def test_ids_must_be_a_sequence_of_non_null_ids():
    with pytest.raises(InputError, match="not one string"):
        ExampleSet(["a", "b", "c"], "abc")
    with pytest.raises(InputError, match="must not be None"):
        ExampleSet(["a", "b"], ("x", None))


def test_one_record_without_an_id_is_an_error_not_row_numbers(tmp_path):
    """Before: a single record lacking "id" silently renumbered every example."""
    records = [{"id": "a", "text": "x"}, {"text": "y"}, {"id": "c", "text": "z"}]
    with pytest.raises(InputError, match=r"record 1 has no 'id' field but others do"):
        ExampleSet.from_file(write_jsonl(tmp_path / "data.jsonl", records))


@pytest.mark.parametrize("bad", [None, 1.0, [1], {"a": 1}, True])
def test_ids_that_are_not_strings_or_integers_are_refused(tmp_path, bad):
    records = [{"id": "a"}, {"id": bad}]
    with pytest.raises(InputError, match="record 1: id="):
        ExampleSet.from_file(write_jsonl(tmp_path / "data.jsonl", records))
    assert ExampleSet.from_records([{"id": 7}, {"id": "8"}]).ids == ("7", "8")


def test_files_that_are_not_utf8_or_not_records(tmp_path):
    binary = tmp_path / "data.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8"):
        ExampleSet.from_file(binary)
    nested = tmp_path / "deep.json"
    nested.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(InputError):
        ExampleSet.from_file(nested)
    scalars = write_jsonl(tmp_path / "scalars.jsonl", [{"id": "a"}, 3])
    with pytest.raises(InputError, match="record 1 is a int"):
        ExampleSet.from_file(scalars)


# ---- fuzzing: no file content gives a traceback ---------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["id", "text", "x"]), inner, max_size=3),
    ),
    max_leaves=8,
)
records = st.lists(
    st.dictionaries(st.sampled_from(["id", "text", "label"]), json_values, max_size=3), max_size=5
)


def _loaded_or_input_error(path):
    try:
        data = ExampleSet.from_file(path)
    except InputError:
        return
    assert len(set(data.ids)) == len(data.ids) == len(data) > 0
    assert all(isinstance(i, str) for i in data.ids)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(rows=st.one_of(records, st.lists(json_values, max_size=4)), garbage=st.text(max_size=20))
def test_any_json_lines_load_or_fail_cleanly(tmp_path_factory, rows, garbage):
    folder = tmp_path_factory.mktemp("fuzz")
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    for name, text in (
        ("a.jsonl", lines),
        ("b.jsonl", lines + garbage),
        ("c.json", json.dumps(rows)),
    ):
        (folder / name).write_text(text)
        _loaded_or_input_error(folder / name)
    (folder / "d.jsonl").write_bytes(garbage.encode("utf-16"))
    _loaded_or_input_error(folder / "d.jsonl")


@settings(derandomize=True, max_examples=20, deadline=None)
@given(
    text=st.one_of(
        st.text(alphabet=st.sampled_from('id,text,label\n"x0 7.'), max_size=40),
        st.just("id,text\n1,a\n1,b\n"),
        st.just("text\n\n"),
    )
)
def test_any_csv_loads_or_fails_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    path.write_text(text)
    _loaded_or_input_error(path)
