import csv
import io

import pytest

from imgsim.core.errors import ImgsimError
from imgsim.storage import store
from imgsim.storage.group_names import carry_over, group_name, labels_csv, labels_path, load_names, save_names, set_name


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


@pytest.mark.parametrize("name", ["caf\udce9", "a\u200bb", "red\x1b[31m"])
def test_a_typed_group_name_keeps_the_rules_of_a_persons_label(model_copy, name):
    """Refused in one line, nothing written: a byte that is not UTF-8 (typed through the command line), a zero-width
    space (pasted), an escape sequence. The first failed as the file was written; the others were stored."""
    version_id = store.current_id(model_copy)
    save_names(model_copy, version_id, {0: "cats"})
    with pytest.raises(ImgsimError, match="holds control or unprintable characters"):
        set_name(model_copy, version_id, 1, name)
    with pytest.raises(ImgsimError, match="holds control or unprintable characters"):
        save_names(model_copy, version_id, {2: name})
    assert load_names(model_copy, version_id) == {0: "cats"}
    set_name(model_copy, version_id, 0, "  ")  # blank still un-names
    assert load_names(model_copy, version_id) == {}


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


def ids_in(*sizes):
    """Consecutive image ids for groups of these sizes: ([ids of group 0], [ids of group 1], ...)."""
    out, start = [], 0
    for size in sizes:
        out.append(list(range(start, start + size)))
        start += size
    return out


def test_carry_over_names_survive_when_groups_merge_and_unnamed_groups_do_not_compete():
    # The fresh-clone failure: old 0 "brick walls" (8), 1 "skies" (8) and unnamed 2 (9) all fell into new group 1.
    bricks, skies, other = ids_in(8, 8, 9)
    old_ids, old_groups = bricks + skies + other, [0] * 8 + [1] * 8 + [2] * 9
    new_ids, new_groups = old_ids, [1] * 25
    mapping = carry_over(old_ids, old_groups, new_ids, new_groups, named={0, 1})
    assert mapping == {0: 1, 1: 1}  # the unnamed group 2 took nothing, and no name was dropped


def test_a_name_that_loses_its_first_choice_takes_its_next_best_group():
    bricks, skies = ids_in(10, 10)
    old_ids, old_groups = bricks + skies, [0] * 10 + [1] * 10
    # new group 5 holds 9 bricks and 6 skies; new group 7 holds the other 4 skies and 1 brick
    new_groups = [5] * 9 + [7] + [5] * 6 + [7] * 4
    assert carry_over(old_ids, old_groups, old_ids, new_groups, named={0, 1}) == {0: 5, 1: 7}


def test_inherit_keeps_both_names_on_a_merged_group(model_copy):
    from imgsim.storage.group_names import Label, inherit, load_labels, save_labels

    parent = store.current_id(model_copy)
    child = parent[:-4] + "beef"
    save_labels(model_copy, parent, {0: Label("brick walls"), 1: Label("skies")})
    bricks, skies = ids_in(8, 5)
    mapping = carry_over(bricks + skies, [0] * 8 + [1] * 5, bricks + skies, [2] * 13, named={0, 1})
    labels = inherit(model_copy, parent, child, mapping)
    assert labels == load_labels(model_copy, child)  # written as returned
    assert labels == {2: Label("brick walls", carried=True, merged=("skies",))}  # the larger name leads
