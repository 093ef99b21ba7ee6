import csv
import io

import pytest

from imgsim import store
from imgsim.labels import group_name, labels_csv, labels_path, load_names, save_names


def test_names_round_trip_beside_the_version_never_inside_it(model_copy):
    version_id = store.current_id(model_copy)
    version_files = sorted(p.name for p in (model_copy / "versions" / version_id).iterdir())
    assert load_names(model_copy, version_id) == {}

    save_names(model_copy, version_id, {0: "  brick   walls ", 2: "cats", 1: "   "})

    assert load_names(model_copy, version_id) == {0: "brick walls", 2: "cats"}
    assert labels_path(model_copy, version_id).parent == model_copy / "labels"
    assert [p.name for p in (model_copy / "labels").iterdir()] == [f"{version_id}.json"]  # no temporary file left
    assert sorted(p.name for p in (model_copy / "versions" / version_id).iterdir()) == version_files
    store.load_version(model_copy, version_id)  # checksums still hold


def test_labels_csv_has_every_image_with_its_group_and_name(trained_model_dir):
    version = store.load_version(trained_model_dir)
    rows = list(csv.DictReader(io.StringIO(labels_csv(version, {0: "first"}))))
    assert [r["path"] for r in rows] == version.paths
    assert [int(r["group"]) for r in rows] == version.groups.tolist()
    assert {r["name"] for r in rows if r["group"] == "0"} == {"first"}
    assert {r["name"] for r in rows if r["group"] != "0"} <= {""}


def test_a_version_id_cannot_reach_outside_the_labels_folder(tmp_path):
    for bad in ("../CURRENT", "..", "", "a/b"):
        with pytest.raises(ValueError):
            labels_path(tmp_path, bad)
    assert load_names(tmp_path, "20260101-000000-abcd") == {}
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "v1.json").write_text("{not json")
    assert load_names(tmp_path, "v1") == {}


def test_group_name_shows_the_name_once_given():
    assert group_name(3, {}) == "group 3"
    assert group_name(3, {3: "cats"}) == "group 3 · cats"
