"""Labels imported from a CSV (imgsim.labelling.importing): the formula guard undone exactly, one line for a bad row."""

import csv

import pytest

from imgsim.core.errors import ImgsimError
from imgsim.core.text import csv_cell, csv_text, csv_uncell
from imgsim.labelling.importing import import_labels
from imgsim.storage.annotations import LabelStore
from tests.helpers import vector_version

# Labels a spreadsheet would read as formulas, and ones that only look guarded.
TRICKY = ["=1+1", "+plus", "-minus", "@at", "'90s", "'=x", "''=y", "'", "plain"]


@pytest.fixture
def version(tmp_path):
    return vector_version(tmp_path / "models", 30, 3, folder=str(tmp_path / "photos"))[0]


def labels_by_path(tmp_path, version) -> dict[str, str]:
    labels = LabelStore(tmp_path / "models").load()
    return {version.paths[r]: labels[int(i)].label for r, i in enumerate(version.ids.tolist()) if int(i) in labels}


def test_the_formula_guard_is_undone_exactly_and_90s_stays_90s(tmp_path, version):
    """`lstrip("'")` in the old import ate every leading apostrophe: '90s came back as 90s."""
    assert "'90s".lstrip("'") == "90s"  # what the old import did with it
    wanted = dict(zip(version.paths, TRICKY))
    sheet = tmp_path / "labels.csv"
    sheet.write_text(csv_text(["path", "label", "source"], [(p, name, "person") for p, name in wanted.items()]))
    written = {row["path"]: row["label"] for row in csv.DictReader(sheet.open())}
    assert written[version.paths[0]] == "'=1+1" and written[version.paths[4]] == "'90s"  # guarded, and not
    assert written[version.paths[5]] == "''=x"
    done = import_labels(sheet, version, LabelStore(tmp_path / "models"))
    assert done.rows == len(TRICKY) and labels_by_path(tmp_path, version) == wanted


@pytest.mark.parametrize("text", ["", "'", "''", "=", "'=", "''=", "'90s", "a'b", "-", "'-1", "@'", "=='"])
def test_uncell_inverts_cell_for_every_text(text):
    assert csv_uncell(csv_cell(text)) == text


@pytest.mark.parametrize("body, reason", [
    ("path,label,source\n{p0},cats,person\n{p1},dogs\n", r"row 2 \(line 3\) has 2 cell\(s\), too few for its path, "
                                                         r"label, source columns"),  # was "unexpected IndexError"
    ("{p0}\n", r"row 1 \(line 1\) has 1 cell\(s\), too few"),
    ("path,label\n{p0},cats\n{p1}," + "x" * 140_000 + "\n", r"row 2 \(line 3\): not readable as CSV \(field larger"),
    ("path,label\n{p0},ca\0ts\n", r"row 1 \(line 2\): label .*control"),
    ("path,label\n{p0},cats\n/elsewhere/x.jpg,dogs\n", r"row 2 \(line 3\): /elsewhere/x.jpg: not an image"),
    ("path,label\n{p0},\x07bell\n", r"row 1 \(line 2\): label .*control"),
], ids=["short-row", "no-label-column", "oversize-cell", "nul-byte", "unknown-path", "control-character"])
def test_a_bad_row_is_one_line_naming_it_and_nothing_changes(tmp_path, version, body, reason):
    store = LabelStore(tmp_path / "models")
    store.set([int(version.ids[2])], "kept")
    before = store.load()
    sheet = tmp_path / "labels.csv"
    sheet.write_text(body.format(p0=version.paths[0], p1=version.paths[1]))
    with pytest.raises(ImgsimError, match=reason) as refused:
        import_labels(sheet, version, store)
    assert str(refused.value).startswith(f"{sheet}: ") and "\n" not in str(refused.value)
    assert store.load() == before


def test_an_export_s_propagated_rows_are_skipped_and_empty_labels_clear(tmp_path, version):
    store = LabelStore(tmp_path / "models")
    store.set([int(version.ids[0])], "old")
    sheet = tmp_path / "labels.csv"
    sheet.write_text(csv_text(["path", "label", "source", "confidence"],
                              [(version.paths[0], "", "person", 1.0), (version.paths[1], "cats", "person", 1.0),
                               (version.paths[2], "dogs", "propagated", 0.7)]))
    done = import_labels(sheet, version, store)
    assert (done.rows, done.changed, done.skipped) == (2, 2, 1)
    assert labels_by_path(tmp_path, version) == {version.paths[1]: "cats"}
