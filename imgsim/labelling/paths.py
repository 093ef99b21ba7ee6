"""Rows of a version from paths as a person types them (the command line's `labels set`, CSV imports)."""

from __future__ import annotations

import os
from pathlib import Path

from imgsim.core.errors import ImgsimError
from imgsim.core.text import from_one_line
from imgsim.storage import store


def rows_for_paths(version: store.Version, paths, base: Path | None = None) -> list[int]:
    """The rows of paths as a person types them (relative to `base` or the working folder, or to the
    collection's folder), or as imgsim printed them (`imgsim.core.text.one_line`'s escapes: `\\\\` for a
    backslash, `\\xe9` for a byte that is not UTF-8); ImgsimError naming the first path not in the version."""
    rows = []
    for typed in paths:
        text = os.fsdecode(typed)
        found = row_of(version, text, base)
        if found < 0 and (printed := from_one_line(text)) != text:  # a name copied from imgsim's own output
            found = row_of(version, printed, base)
        if found < 0:
            raise ImgsimError(f"{typed}: not an image of the active version (see `imgsim query` for its paths)")
        rows.append(found)
    return rows


def row_of(version: store.Version, text: str, base: Path | None) -> int:
    """The row of one path as typed, or -1."""
    if os.path.isabs(text) and (found := version.records.row_of_path(text)) >= 0:  # as stored: no Path needed
        return found
    root = version.manifest.get("images_root")
    path = Path(text).expanduser()
    tries = [path] if path.is_absolute() else [Path(base or Path.cwd()) / path] + ([Path(root) / path] if root else [])
    for candidate in tries:
        for form in spellings(candidate):
            if (found := version.records.row_of_path(form)) >= 0:
                return found
    return -1


def spellings(path: Path):
    """The forms a collection path may be stored under, cheapest first: as given (made absolute), normalised, and
    with its links resolved (system calls: tried only when the others are not in the version)."""
    absolute = path.absolute()
    yield str(absolute)
    yield os.path.normpath(absolute)
    yield str(path.resolve())
