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
        path = Path(os.fsdecode(typed)).expanduser()
        tries = [path] if path.is_absolute() else [Path(base or Path.cwd()) / path] + ([Path(root) / path] if root else [])
        found = -1
        for candidate in tries:
            for form in (str(candidate.absolute()), os.path.normpath(candidate.absolute()), str(candidate.resolve())):
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
