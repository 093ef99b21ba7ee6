"""Immutable, content-addressed segment files shared by model versions, and the rows they hold.

Layout inside a store (model) folder::

    segments/<sha256>.ids.npy         int64 image ids, rows sorted by (group, id)
    segments/<sha256>.groups.npy      int64 group per row (sorted, so a group is one slice)
    segments/<sha256>.vectors.npy     float32 unit rows, opened memory-mapped
    segments/<sha256>.dead.npy        int64 positions removed in some version (tombstones)
    segments/<sha256>.<kind>.faiss    an ANN index over one segment (faiss engine)

Every file is named by the sha256 of its bytes, written once (temporary name, fsync, rename,
read-only) and never modified, so any number of versions can share it, a crash leaves at worst an
unreferenced file, and a load can verify each file against its own name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgsim.core.files import checked_path, open_array, write_array  # shared with imgsim.storage.records
from imgsim.storage.folder import ModelFolder

from . import DamagedIndexError

FORMAT = 1


class Segment:
    """Rows sorted by (group, id): ids, groups, unit vectors and a mask of removed rows.

    Files are set once the segment is saved; `tombstones` names the file matching `dead` (None
    when nothing is dead), and `dead_dirty` says the mask changed since it was last written.
    """

    def __init__(self, ids, groups, vectors, dead=None, folder=None, files=None, tombstones=None):
        self.ids, self.groups, self.vectors = ids, groups, vectors
        self.dead = np.zeros(len(ids), bool) if dead is None else dead
        self.folder, self.files, self.tombstones = folder, files, tombstones
        self.dead_dirty = False
        self.index, self.index_info = None, None  # an engine's ANN structure, if any
        self.cache = {}

    @classmethod
    def build(cls, ids, vectors, groups, rows=None) -> Segment:
        """A segment of these rows (all, or the positions in `rows`), sorted by (group, id)."""
        order = np.lexsort((ids, groups)) if rows is None else rows[np.lexsort((ids[rows], groups[rows]))]
        return cls(ids[order], groups[order], vectors[order])  # one gather: the only copy of the vectors

    @property
    def rows(self) -> int:
        return len(self.ids)

    @property
    def dead_count(self) -> int:
        if "dead_count" not in self.cache:
            self.cache["dead_count"] = int(np.count_nonzero(self.dead))
        return self.cache["dead_count"]

    @property
    def live(self) -> int:
        return self.rows - self.dead_count

    def span(self, group) -> tuple[int, int]:
        """The slice of rows in `group` (all rows for None)."""
        if group is None:
            return 0, self.rows
        return int(np.searchsorted(self.groups, group, "left")), int(np.searchsorted(self.groups, group, "right"))

    def live_in(self, lo: int, hi: int) -> int:
        key = ("live", lo, hi)
        if key not in self.cache:
            self.cache[key] = (hi - lo) - int(np.count_nonzero(self.dead[lo:hi]))
        return self.cache[key]

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Sorted positions of the live rows holding these ids."""
        if not len(ids) or not self.rows:
            return np.zeros(0, np.int64)
        if "order" not in self.cache:
            order = np.argsort(self.ids, kind="stable")
            self.cache["order"] = (order, self.ids[order])
        order, sorted_ids = self.cache["order"]
        at = np.minimum(np.searchsorted(sorted_ids, ids), self.rows - 1)
        found = order[at[sorted_ids[at] == ids]]
        return np.sort(found[~self.dead[found]])

    def kill(self, positions: np.ndarray) -> None:
        if len(positions):
            if not self.dead.flags.writeable:
                self.dead = self.dead.copy()
            self.dead[positions] = True
            self.dead_dirty = True
            order = self.cache.get("order")
            self.cache = {"order": order} if order else {}

    def live_rows(self, batch: int):
        for start in range(0, self.rows, batch):
            keep = ~self.dead[start : start + batch]
            yield (
                self.ids[start : start + batch][keep],
                np.asarray(self.vectors[start : start + batch][keep]),
                self.groups[start : start + batch][keep],
            )

    def save(self, folder: Path, write_index=None) -> None:
        """Write what this segment lacks in `folder`: its arrays, its index, its tombstones."""
        if self.folder != folder or self.files is None:
            self.files = {
                "ids": write_array(folder, ".ids.npy", self.ids),
                "groups": write_array(folder, ".groups.npy", self.groups),
                "vectors": write_array(folder, ".vectors.npy", self.vectors),
            }
            self.vectors = np.load(folder / self.files["vectors"], mmap_mode="r")
            self.dead_dirty = True
        if write_index and self.index is not None and not self.files.get("index"):
            self.files["index"] = write_index(self, folder)
        if self.dead_dirty or self.folder != folder:
            dead = np.flatnonzero(self.dead).astype(np.int64)
            self.tombstones = write_array(folder, ".dead.npy", dead) if len(dead) else None
            self.dead_dirty = False
        self.folder = folder

    def state(self) -> dict:
        return {
            "rows": self.rows,
            "dead": self.dead_count,
            **self.files,
            "tombstones": self.tombstones,
            "index_info": self.index_info,
        }

    @classmethod
    def open(cls, folder: Path, entry: dict, dim: int, verify: bool = True) -> Segment:
        try:
            rows = int(entry["rows"])
            files = {k: entry[k] for k in ("ids", "groups", "vectors")}
        except (KeyError, TypeError, ValueError):
            raise DamagedIndexError(f"{folder}: a segment entry in the engine state is incomplete") from None
        if entry.get("index"):
            files["index"] = entry["index"]
            checked_path(folder, entry["index"], verify)
        ids = open_array(folder, files["ids"], verify, np.int64, (rows,))
        groups = open_array(folder, files["groups"], verify, np.int64, (rows,))
        vectors = open_array(folder, files["vectors"], verify, np.float32, (rows, dim), mmap=True)
        if rows and np.any(np.diff(groups) < 0):
            raise DamagedIndexError(f"{folder / files['groups']}: groups are not sorted")
        dead = np.zeros(rows, bool)
        if entry.get("tombstones"):
            positions = open_array(folder, entry["tombstones"], verify, np.int64, (int(entry.get("dead", -1)),))
            if len(positions) and (positions.min() < 0 or positions.max() >= rows):
                raise DamagedIndexError(f"{folder / entry['tombstones']}: positions outside the segment")
            dead[positions] = True
        segment = cls(ids, groups, vectors, dead, folder, files, entry.get("tombstones"))
        segment.index_info = entry.get("index_info")
        return segment


def merge(segments: list[Segment]) -> Segment:
    """One new segment holding the live rows of these."""
    parts = [part for seg in segments for part in seg.live_rows(1 << 20)]
    ids, vectors, groups = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return Segment.build(ids, vectors, groups)


def unreferenced_files(store_dir, states) -> list[Path]:
    """Files in the segment area that none of these engine states names."""
    folder = ModelFolder(store_dir).segments
    wanted = set()
    for state in states:
        for entry in (state or {}).get("segments", []):
            wanted.update(entry.get(k) for k in ("ids", "groups", "vectors", "index", "tombstones"))
    return sorted(p for p in folder.iterdir() if p.name not in wanted) if folder.is_dir() else []
