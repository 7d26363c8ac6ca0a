"""Spot-check labels: a fixed blind split by id, and label files that stop on the first bad line with its place."""

from __future__ import annotations

import json

import pytest

from ballast.errors import InputError
from ballast.labels import load_labels, sample_order, split_of
from ballast.records import Record, Source


def _label(record_id: str, **kw) -> dict:
    return {"id": record_id, "usable": False, "problems": ["incoherent"], "split": split_of(record_id), **kw}


def test_blind_split_is_fixed_by_id_and_about_five_in_sixteen():
    ids = [f"r{i}" for i in range(4000)]
    blind = sum(split_of(i) == "blind" for i in ids) / len(ids)
    assert 0.28 < blind < 0.35
    assert [split_of(i) for i in ids] == [split_of(i) for i in ids]


def test_sample_order_extends_without_reordering():
    records = [Record(instruction=f"task {i}", output="x", source=Source.imported) for i in range(50)]
    first = [r.id for r in sample_order(records[:30])]
    assert [r.id for r in sample_order(records) if r.id in set(first)] == first


@pytest.mark.parametrize(
    "row, field, message",
    [
        ({"usable": True, "problems": ["role"]}, "id", "usable but lists problems"),
        ({"usable": False, "problems": []}, "id", "lists no problem"),
        ({"problems": ["rude"]}, "problems.0", "Input should be"),
        ({"problems": ["duplicate"]}, "id", "must name duplicate_of"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_bad_label_line_names_file_line_and_field(tmp_path, row, field, message):
    path = tmp_path / "labels.jsonl"
    good = _label("abc")
    path.write_text(json.dumps(good) + "\n" + json.dumps({**_label("def"), **row}) + "\n")
    with pytest.raises(InputError, match=message) as err:
        load_labels(path)
    assert (err.value.line, err.value.field) == (2, field)
    assert str(err.value).startswith(f"{path}:2: {field}: ")


def test_a_line_that_is_not_json_names_its_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(_label("abc")) + "\n{not json\n")
    with pytest.raises(InputError, match="Invalid JSON") as err:
        load_labels(path)
    assert err.value.line == 2 and str(err.value).startswith(f"{path}:2: Invalid JSON")


def test_wrong_split_and_repeated_id_are_refused(tmp_path):
    path = tmp_path / "labels.jsonl"
    wrong = "blind" if split_of("abc") == "tune" else "tune"
    path.write_text(json.dumps(_label("abc", split=wrong)) + "\n")
    with pytest.raises(InputError, match="the id's hash puts it in"):
        load_labels(path)
    path.write_text(json.dumps(_label("abc")) + "\n" + json.dumps(_label("abc")) + "\n")
    with pytest.raises(InputError, match="labelled twice"):
        load_labels(path)
