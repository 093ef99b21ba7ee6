"""Labels imported from a CSV (imgsim.labelling.importing): the formula guard undone exactly, one line for a bad row."""

import csv

import pytest

from imgsim.core.errors import ImgsimError
from imgsim.core.text import csv_cell, csv_text, csv_uncell, from_one_line, one_line
from imgsim.labelling.importing import import_labels
from imgsim.labelling.paths import rows_for_paths
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


@pytest.mark.parametrize("text", ["a\\b", "x\udce9y", "n\nl\tt\rr\x1b\x7f", "flag\U000e0067", "lone\ud800", "C:\\new",
                                  "\\x41", "\x80", "bidi\u202e"])
def test_one_line_is_undone_exactly_whatever_the_name(text):
    assert from_one_line(one_line(text)) == text and "\n" not in one_line(text)


def test_an_export_of_odd_names_imports_back_to_the_same_images_and_labels(tmp_path):
    """One folder with a backslash and a byte that is not UTF-8 (kept by os.fsdecode as a surrogate): the
    export escapes both (`\\\\`, `\\xe9`); the import looked the escaped text up and found no image."""
    version = vector_version(tmp_path / "models", 12, 3, folder=str(tmp_path / "ph\\o\udce9tos"))[0]
    wanted = {version.paths[0]: "back\\slash", version.paths[1]: "plain", version.paths[2]: "C:\\new"}
    sheet = tmp_path / "labels.csv"
    sheet.write_text(csv_text(["path", "label", "source"], [(p, name, "person") for p, name in wanted.items()]))
    assert "\\\\o\\xe9tos" in sheet.read_text()  # the escapes the import has to undo
    done = import_labels(sheet, version, LabelStore(tmp_path / "models"))
    assert done.rows == 3 and labels_by_path(tmp_path, version) == wanted


def test_a_sheet_a_person_typed_keeps_its_backslashes(tmp_path, version):
    """Without an export's `source` column a label is taken as typed: `C:\\\\new` stays two backslashes."""
    sheet = tmp_path / "labels.csv"
    sheet.write_text(f"path,label\n{version.paths[0]},C:\\\\new\n")
    import_labels(sheet, version, LabelStore(tmp_path / "models"))
    assert labels_by_path(tmp_path, version) == {version.paths[0]: "C:\\\\new"}


def test_a_path_as_imgsim_printed_it_finds_its_image_for_labels_set_too(tmp_path):
    """`imgsim query` prints `ph\\\\o\\xe9tos/...`; `labels set` given that text found no image (the CSV import's
    fallback now lives in rows_for_paths, which both use). A path that is in neither form is still refused."""
    version = vector_version(tmp_path / "models", 6, 2, folder=str(tmp_path / "ph\\o\udce9tos"))[0]
    printed = [one_line(path) for path in version.paths[:3]]
    assert printed[0] != version.paths[0]  # escaped: looked up as typed it is not there
    assert rows_for_paths(version, printed) == [0, 1, 2]
    with pytest.raises(ImgsimError, match="not an image of the active version"):
        rows_for_paths(version, [printed[0] + "x"])
