"""Rows of a version from paths as a person types them (the command line's `labels set`, CSV imports)."""

from __future__ import annotations

import os
from pathlib import Path

from imgsim.core.errors import ImgsimError
from imgsim.storage import store


def rows_for_paths(version: store.Version, paths, base: Path | None = None) -> list[int]:
    """The rows of paths as a person types them (relative to `base` or the working folder, or to the
    collection's folder); ImgsimError naming the first path that is not in the version."""
    root = version.manifest.get("images_root")
    rows = []
    for typed in paths:
        text = os.fsdecode(typed)
        if os.path.isabs(text) and (found := version.records.row_of_path(text)) >= 0:  # as stored: no Path needed
            rows.append(found)
            continue
        path = Path(text).expanduser()
        tries = [path] if path.is_absolute() else [Path(base or Path.cwd()) / path] + ([Path(root) / path] if root else [])
        found = -1
        for candidate in tries:
            for form in spellings(candidate):
                found = version.records.row_of_path(form)
                if found >= 0:
                    break
            if found >= 0:
                break
        if found < 0:
            from imgsim.core.text import one_line

            raise ImgsimError(f"{one_line(typed)}: not an image of the active version (see `imgsim query` for its paths)")
        rows.append(found)
    return rows


def spellings(path: Path):
    """The forms a collection path may be stored under, cheapest first: as given (made absolute), normalised, and
    with its links resolved (system calls: tried only when the others are not in the version)."""
    absolute = path.absolute()
    yield str(absolute)
    yield os.path.normpath(absolute)
    yield str(path.resolve())
