r"""A person's labels from a CSV: rows of path,label, as a person writes them or an export gives them back.

The file is read as a stream, a row at a time (a 200,000-row sheet is never held whole), and the
import is all or nothing: the first bad row (too few cells, a cell over the csv module's limit, a
path not in the version, a label no person could type) stops it with one line naming the row,
before any label changes. An export's CSV imports its own labels only: rows whose source is the
assistant's ("propagated") are skipped. The formula guard imgsim's CSVs add to a cell (an
apostrophe before `=`, `+`, `-`, `@` ...) is undone exactly (`imgsim.core.text.csv_uncell`), so
`'90s` stays `'90s`. So are the escapes `one_line` gives an export's odd names (`\\` for a backslash,
`\xe9` for a byte that is not UTF-8): a path is looked up as typed, then as the name an export escaped
(`imgsim.labelling.paths.rows_for_paths`); a label of an export (a sheet with a `source` column) has its
doubled backslashes made single again (a label holds no control characters, so they are the only escape an
export gives one).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from imgsim.core.errors import ImgsimError
from imgsim.core.text import csv_uncell, one_line
from imgsim.labelling.paths import rows_for_paths
from imgsim.storage import store
from imgsim.storage.annotations import LabelStore, clean_label

COLUMNS = ("path", "label", "source")


@dataclass(frozen=True)
class LabelImport:
    rows: int  # rows imported (a label set, or cleared by an empty one)
    changed: int  # labels that changed
    skipped: int  # an export's propagated rows, left out


def import_labels(file, version: store.Version, labels: LabelStore) -> LabelImport:
    """Set (or with an empty label, clear) the label of every row's image in one change; ImgsimError on a bad row.

    A header naming `path` and `label` (and `source`) is optional; without one the columns are
    path,label. Paths are read as typed, relative to the CSV's folder or the collection's.
    """
    file = Path(file)
    changes, paths, skipped = {}, {}, 0
    cleaned = {}  # label as typed -> as stored: a sheet repeats a few labels many times
    try:
        with open(file, encoding="utf-8-sig", newline="") as fh:
            for number, line, row in data_rows(csv.reader(fh), file):
                cells = {name: csv_uncell(value) for name, value in row.items()}
                if cells.get("source", "").strip() not in ("person", ""):
                    skipped += 1  # an export's propagated rows are the assistant's guesses, not labels to import
                    continue
                if "source" in cells:  # an export's label: one_line doubled its backslashes
                    cells["label"] = cells["label"].replace("\\\\", "\\")
                try:
                    [r] = rows_for_paths(version, [cells["path"]], base=file.parent)
                    if cells["label"] not in cleaned:
                        cleaned[cells["label"]] = clean_label(cells["label"]) if cells["label"].strip() else None
                    label = cleaned[cells["label"]]
                except ImgsimError as exc:
                    raise ImgsimError(f"{one_line(file)}: row {number} (line {line}): {exc}") from None
                image = int(version.ids[r])
                changes[image], paths[image] = label, version.paths[r]
    except (OSError, UnicodeDecodeError) as exc:
        raise ImgsimError(f"{one_line(file)}: cannot be read ({type(exc).__name__})") from None
    changed = labels.change(changes, "import", paths)
    return LabelImport(len(changes), changed, skipped)


def data_rows(reader, file):
    """(row number, line number, {column: cell}) for each row with text, after the header if there is one."""
    columns = None
    number = 0
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns = header_columns(row)
                if columns is not None:
                    continue
                columns = {"path": 0, "label": 1}
            number += 1
            if len(row) <= max(columns.values()):
                raise ImgsimError(f"{one_line(file)}: row {number} (line {reader.line_num}) has {len(row)} cell(s), "
                                  f"too few for its {', '.join(columns)} columns")
            yield number, reader.line_num, {name: row[at] for name, at in columns.items()}
    except csv.Error as exc:  # a cell over the csv module's limit (131,072 characters), a NUL byte ...
        raise ImgsimError(f"{one_line(file)}: row {number + 1} (line {reader.line_num}): not readable as CSV ({exc})") from None


def header_columns(row: list[str]) -> dict[str, int] | None:
    """The columns a header row names (path and label at least), or None when the row is not a header."""
    names = [cell.strip().lower() for cell in row]
    if not {"path", "label"} <= set(names):
        return None
    return {name: names.index(name) for name in COLUMNS if name in names}
