"""`imgsim labels`: the contract hidden checks drive (suggest, set, clear, import, review, export, undo)."""

import csv
import json
import os
from pathlib import Path

import pytest

from imgsim.cli import main
from imgsim.storage import store
from imgsim.storage.annotations import LabelStore


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def collection(model_copy, tiny_collection):
    """A private model folder over the tiny real collection: (model dir, its version, true label of each row)."""
    version = store.load_version(model_copy)
    truth = [Path(p).parent.name for p in version.paths]
    return model_copy, version, truth


def test_suggest_json_lines_best_first_never_a_labelled_image(capsys, collection):
    models, version, truth = collection
    code, out, _ = run(capsys, "labels", "suggest", "-n", "4", "--json", "--model-dir", models)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 4
    assert all(set(line) == {"path", "suggested", "confidence", "reason"} for line in lines)
    assert all(line["path"] in version.paths and Path(line["path"]).is_absolute() for line in lines)
    assert all(line["suggested"] is None for line in lines)  # nothing labelled yet: nothing to suggest from
    first = lines[0]["path"]
    assert run(capsys, "labels", "set", "bricks", first, "--model-dir", models)[0] == 0
    code, out, _ = run(capsys, "labels", "suggest", "-n", "30", "--json", "--model-dir", models)
    again = [json.loads(line) for line in out.splitlines()]
    assert first not in [line["path"] for line in again]
    assert all(line["suggested"] == "bricks" and 0 <= line["confidence"] <= 1 for line in again)


def test_set_replaces_clear_removes_and_a_path_not_in_the_version_changes_nothing(capsys, collection, tmp_path):
    models, version, _ = collection
    a, b = version.paths[0], version.paths[1]
    assert run(capsys, "labels", "set", "cats", a, b, "--model-dir", models)[0] == 0
    assert run(capsys, "labels", "set", "dogs", b, "--model-dir", models)[0] == 0
    labels = LabelStore(models).load()
    assert {label.label for label in labels.values()} == {"cats", "dogs"} and len(labels) == 2

    code, out, err = run(capsys, "labels", "set", "birds", a, tmp_path / "nowhere.jpg", "--model-dir", models)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "nowhere.jpg" in err
    assert LabelStore(models).load() == labels  # nothing changed, not even the good path

    assert run(capsys, "labels", "clear", a, "--model-dir", models)[0] == 0
    assert [label.label for label in LabelStore(models).load().values()] == ["dogs"]


def test_an_error_shows_a_typed_name_escaped_once(capsys, collection, tmp_path):
    """A name with a tab or a byte that is not UTF-8 is escaped where the message is printed, and only there (the
    messages held it escaped already, and the printer escaped their backslashes again: `caf\\\\xe9`)."""
    models, version, _ = collection
    code, _, err = run(capsys, "labels", "set", "birds", tmp_path / "caf\udce9\tx.jpg", "--model-dir", models)
    assert code == 2 and f"error: {tmp_path}/caf\\xe9\\tx.jpg: not an image of the active version" in err
    code, _, err = run(capsys, "labels", "set", "a\x1b[31mb", version.paths[0], "--model-dir", models)
    assert (code, err) == (2, "error: label 'a\\x1b[31mb': holds control or unprintable characters\n")


def test_set_takes_the_paths_a_person_types(capsys, collection, monkeypatch):
    models, version, _ = collection
    path = Path(version.paths[2])
    monkeypatch.chdir(path.parent.parent)
    assert run(capsys, "labels", "set", "typed", os.path.join(path.parent.name, ".", path.name), "--model-dir", models)[0] == 0
    assert [label.label for label in LabelStore(models).load().values()] == ["typed"]


def test_export_json_gives_every_image_with_its_source(capsys, collection):
    models, version, truth = collection
    person = version.paths[:2]
    run(capsys, "labels", "set", "first", *person, "--model-dir", models)
    code, out, _ = run(capsys, "labels", "export", "--json", "--model-dir", models)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["path"] for r in rows] == version.paths
    assert all(set(r) == {"path", "label", "source", "confidence"} for r in rows)
    assert [r["source"] for r in rows[:2]] == ["person", "person"] and rows[0]["confidence"] == 1.0
    assert {r["source"] for r in rows[2:]} == {"propagated"} and {r["label"] for r in rows} == {"first"}
    code, out, _ = run(capsys, "labels", "export", "--json", "--min-confidence", "1", "--model-dir", models)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["source"] for r in rows[2:]] == ["none"] * (len(rows) - 2) and rows[2]["label"] is None


def test_export_csv_then_import_round_trips_the_persons_labels_only(capsys, collection, tmp_path):
    models, version, _ = collection
    run(capsys, "labels", "set", "=1+1", version.paths[0], "--model-dir", models)  # a formula as a name stays text
    run(capsys, "labels", "export", "--csv", tmp_path / "out.csv", "--model-dir", models)
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["label"] == "'=1+1" and rows[0]["source"] == "person" and len(rows) == len(version)
    LabelStore(models).clear([int(i) for i in version.ids])
    code, out, _ = run(capsys, "labels", "import", tmp_path / "out.csv", "--model-dir", models)
    assert code == 0 and f"{len(version) - 1} propagated row(s) skipped" in out
    assert [label.label for label in LabelStore(models).load().values()] == ["=1+1"]


def test_import_stops_at_a_bad_row_before_changing_anything(capsys, collection, tmp_path):
    models, version, _ = collection
    sheet = tmp_path / "labels.csv"
    sheet.write_text(f"{version.paths[0]},cats\n{version.paths[1]},\x07bell\n")
    code, _, err = run(capsys, "labels", "import", sheet, "--model-dir", models)
    assert code == 2 and "row 2" in err and LabelStore(models).load() == {}
    sheet.write_text(f"path,label\n{version.paths[0]},cats\n{Path(version.paths[1]).name},dogs\n")
    code, _, err = run(capsys, "labels", "import", sheet, "--model-dir", models)
    assert code == 2 and "row 2" in err and LabelStore(models).load() == {}


def test_export_folders_one_per_label_copies_or_links_and_never_touches_originals(capsys, collection, tmp_path):
    models, version, _ = collection
    before = {p: os.stat(p).st_mtime_ns for p in version.paths}
    run(capsys, "labels", "set", "../../etc", version.paths[0], "--model-dir", models)  # a name that is a path
    run(capsys, "labels", "set", "a/b", version.paths[1], "--model-dir", models)
    out_dir = tmp_path / "dataset"
    code, _, err = run(capsys, "labels", "export", "--folders", out_dir, "--model-dir", models)
    assert code == 0 and "wrote" in err
    folders = sorted(p.name for p in out_dir.iterdir())
    assert all(p.is_dir() and p.parent == out_dir for p in out_dir.iterdir())
    assert "etc" not in folders and not any(name in ("", ".", "..") or "/" in name for name in folders)
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    assert len(files) == len(version)  # every image propagated to one of the two labels
    assert {p: os.stat(p).st_mtime_ns for p in version.paths} == before and all(Path(p).exists() for p in version.paths)

    code, _, err = run(capsys, "labels", "export", "--folders", out_dir, "--model-dir", models)
    assert code == 2 and "not empty" in err
    linked = tmp_path / "linked"
    assert run(capsys, "labels", "export", "--folders", linked, "--link", "--model-dir", models)[0] == 0
    linked_files = [p for p in linked.rglob("*") if p.is_file()]
    assert {os.stat(p).st_ino for p in linked_files} == {os.stat(p).st_ino for p in version.paths}


def test_review_and_undo(capsys, collection):
    models, version, _ = collection
    run(capsys, "labels", "set", "x", *version.paths[:3], "--model-dir", models)
    code, out, _ = run(capsys, "labels", "review", "--json", "--model-dir", models)
    assert code == 0 and all(json.loads(line)["kind"] in ("mistake", "outlier") for line in out.splitlines())
    code, out, _ = run(capsys, "labels", "undo", "--model-dir", models)
    assert code == 0 and "undone" in out and LabelStore(models).load() == {}
    assert "nothing to undo" in run(capsys, "labels", "undo", "--model-dir", models)[1]


def test_status_counts_every_image(capsys, collection):
    models, version, _ = collection
    run(capsys, "labels", "set", "x", version.paths[0], "--model-dir", models)
    code, out, _ = run(capsys, "labels", "status", "--model-dir", models)
    assert code == 0 and out.startswith(f"{len(version)} images: 1 labelled by you")
    assert "probabilities not calibrated yet" in out  # one label: nothing to check it against


def test_status_says_how_well_the_probabilities_are_calibrated(capsys, collection):
    models, version, _ = collection
    # two labels of ten images each: every label has others of its class to be checked against (the tiny
    # collection's photographs are nearly all alone in their class, so labels by photograph check almost nothing)
    for row in range(20):
        run(capsys, "labels", "set", "even" if row % 2 == 0 else "odd", version.paths[row], "--model-dir", models)
    code, out, _ = run(capsys, "labels", "status", "--model-dir", models)
    [line] = [line for line in out.splitlines() if line.startswith("probabilities calibrated on")]
    assert code == 0 and line.startswith("probabilities calibrated on 20 of your labels (")
    assert "expected calibration error about 0." in line, out


def test_accept_makes_sure_propagated_labels_the_persons_and_undo_takes_them_back(capsys, collection):
    models, version, _ = collection
    run(capsys, "labels", "set", "only", version.paths[0], "--model-dir", models)
    code, out, _ = run(capsys, "labels", "accept", "--min-confidence", "0", "--model-dir", models)
    labels = LabelStore(models).load()
    assert code == 0 and len(labels) == len(version) and {label.label for label in labels.values()} == {"only"}
    assert sum(label.via == "accept" for label in labels.values()) == len(version) - 1
    assert run(capsys, "labels", "accept", "--min-confidence", "1.5", "--model-dir", models)[0] == 2
    run(capsys, "labels", "undo", "--model-dir", models)
    assert len(LabelStore(models).load()) == 1


def test_a_reader_that_leaves_early_gets_no_error(tmp_path):
    import subprocess
    import sys

    from tests.helpers import vector_version

    version, _ = vector_version(tmp_path / "models", 3000, 3)  # ~300 kB of JSON lines: more than a pipe holds
    reader = subprocess.Popen([sys.executable, "-m", "imgsim", "labels", "export", "--json", "--model-dir",
                               str(tmp_path / "models")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=Path(__file__).resolve().parent.parent)
    assert json.loads(reader.stdout.readline())["path"] == version.paths[0]
    reader.stdout.close()  # as `| head -1` does
    assert reader.wait(60) == 0 and reader.stderr.read() == b""
