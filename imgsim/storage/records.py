"""What a model version knows of each image besides its vector: id, path, size, time, hash, group, map place.

Records live in the same content-addressed `segments/` folder as the vector engines' data
(imgsim.storage.engines.segments): each `index` run adds one segment of new records and marks removed
rows dead, so a run writes what changed and never the whole collection. A version's manifest
lists its segments; `Records` is their live rows, concatenated, as columns.

An image's id is stable across runs: a hash of its path and its bytes (`image_id`). The same file
keeps its id through any number of `index` runs and retrainings; a file whose bytes change, or
that moves, is a new image.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from imgsim.core.errors import ModelNotFoundError
from imgsim.core.files import checked_path, fsync_path, open_array, write_array, write_file
from imgsim.storage.folder import ModelFolder

COLUMNS = ("ids", "sizes", "mtimes", "sha1", "groups", "map2d")
# Above this share of dead rows, `compacted` rewrites the live records as one segment.
MAX_DEAD_SHARE = 0.25


def image_id(path: str, sha1: str) -> int:
    """A stable 63-bit id from a file's path (bytes, any encoding) and the sha1 of its content."""
    digest = hashlib.blake2b(os.fsencode(path) + b"\0" + sha1.encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def image_ids(paths, sha1s) -> np.ndarray:
    return np.fromiter((image_id(p, h) for p, h in zip(paths, sha1s)), np.int64, count=len(paths))


@dataclass
class Records:
    """Columns of one row per image: ids, paths, sizes, mtimes (ns), sha1 (hex), groups and map2d (x, y)."""

    ids: np.ndarray
    paths: list[str]
    sizes: np.ndarray
    mtimes: np.ndarray
    sha1: np.ndarray  # fixed-width ASCII bytes (S40)
    groups: np.ndarray
    map2d: np.ndarray

    @classmethod
    def build(cls, paths, sizes, mtimes, sha1s, groups, map2d) -> Records:
        paths = list(paths)
        sha1 = np.asarray([h.encode("ascii") for h in sha1s], dtype="S40").reshape(-1)
        return cls(image_ids(paths, [h.decode() for h in sha1]), paths, np.asarray(sizes, np.int64).reshape(-1),
                   np.asarray(mtimes, np.int64).reshape(-1), sha1, np.asarray(groups, np.int64).reshape(-1),
                   np.asarray(map2d, np.float32).reshape(-1, 2))

    @classmethod
    def empty(cls) -> Records:
        return cls.build([], [], [], [], [], np.zeros((0, 2), np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows) -> Records:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        return Records(self.ids[rows], [self.paths[i] for i in rows], self.sizes[rows], self.mtimes[rows],
                       self.sha1[rows], self.groups[rows], self.map2d[rows])

    @classmethod
    def concat(cls, parts: list[Records]) -> Records:
        parts = [p for p in parts if len(p)] or [cls.empty()]
        return cls(np.concatenate([p.ids for p in parts]), [path for p in parts for path in p.paths],
                   np.concatenate([p.sizes for p in parts]), np.concatenate([p.mtimes for p in parts]),
                   np.concatenate([p.sha1 for p in parts]), np.concatenate([p.groups for p in parts]),
                   np.concatenate([p.map2d for p in parts]))

    def key(self, row: int) -> tuple:
        """(path, size, mtime_ns): what tells `index` that a file is unchanged."""
        return (self.paths[row], int(self.sizes[row]), int(self.mtimes[row]))

    def rows_of(self, ids) -> np.ndarray:
        """Row of each id (-1 where absent), through a sorted index built once."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not len(self.ids):
            return np.full(len(ids), -1, np.int64)
        order, ordered = self._by_id
        at = np.searchsorted(ordered, ids).clip(0, len(self.ids) - 1)
        return np.where(ordered[at] == ids, order[at], -1)

    def has_duplicate_ids(self) -> bool:
        ordered = self._by_id[1]
        return bool(len(self.ids) and (ordered[1:] == ordered[:-1]).any())

    def row_of_path(self, path: str) -> int:
        """The row of a collection path, or -1 (a sorted index over the paths, built once: no dict of a million)."""
        if not len(self.paths):
            return -1
        order, ordered = self._by_path
        at = int(np.searchsorted(ordered, path))
        if at < len(self.paths) and ordered[at] == path:
            return int(order[at])
        return -1

    def rows_with_sha1(self, sha1: str) -> np.ndarray:
        """Rows whose bytes have this sha1 (byte-identical copies)."""
        order, ordered = self._by_sha1
        key = np.bytes_(sha1.encode("ascii"))
        lo, hi = np.searchsorted(ordered, key, "left"), np.searchsorted(ordered, key, "right")
        return np.sort(order[lo:hi])

    # Sorted indexes, each built once on first use and stored as ONE attribute (order, sorted values):
    # threads answering searches share a version's Records, and a reader must never see half an index
    # (two attributes set one after the other did: AttributeError under load in `imgsim api`).
    @cached_property
    def _by_id(self) -> tuple[np.ndarray, np.ndarray]:
        return sorted_index(self.ids)

    @cached_property
    def _by_path(self) -> tuple[np.ndarray, np.ndarray]:
        return sorted_index(np.array(self.paths, dtype=object))

    @cached_property
    def _by_sha1(self) -> tuple[np.ndarray, np.ndarray]:
        return sorted_index(self.sha1)


def sorted_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, values[order]): a stable sort, searched with np.searchsorted."""
    order = np.argsort(values, kind="stable")
    return order, values[order]


# --- persistence ------------------------------------------------------------------------------

def save_segment(model_dir, records: Records) -> dict:
    """Write records as one new segment (content-addressed files); returns its manifest entry."""
    folder = ModelFolder(model_dir).segments
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"rows": len(records), "dead": None}
    for column in COLUMNS:
        entry[column] = write_array(folder, f".rec.{column}.npy", getattr(records, column))
    paths = json.dumps(records.paths, ensure_ascii=True)  # lone surrogates (undecodable names) survive as \udcxx
    entry["paths"] = write_file(folder, ".rec.paths.json", lambda p: Path(p).write_text(paths, encoding="ascii"))
    fsync_path(folder)
    return entry


def save_dead(model_dir, dead: np.ndarray) -> str:
    folder = ModelFolder(model_dir).segments
    return write_array(folder, ".rec.dead.npy", np.flatnonzero(dead).astype(np.int64))


def load_segment(model_dir, entry: dict, verify: bool = True) -> tuple[Records, np.ndarray]:
    """One segment's records and its dead mask; a missing or damaged file is ModelNotFoundError."""
    folder = ModelFolder(model_dir).segments
    if not isinstance(entry, dict) or not isinstance(entry.get("rows"), int):
        raise ModelNotFoundError(f"{model_dir}: a records segment entry is malformed")
    n = entry["rows"]
    shapes = {"ids": (np.int64, (n,)), "sizes": (np.int64, (n,)), "mtimes": (np.int64, (n,)),
              "sha1": (np.dtype("S40"), (n,)), "groups": (np.int64, (n,)), "map2d": (np.float32, (n, 2))}
    columns = {c: open_array(folder, entry.get(c), verify, dtype, shape) for c, (dtype, shape) in shapes.items()}
    try:
        paths = json.loads(checked_path(folder, entry.get("paths"), verify).read_text(encoding="ascii"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{folder}: a records file is unreadable ({exc})") from None
    if not isinstance(paths, list) or len(paths) != n or not all(isinstance(p, str) for p in paths):
        raise ModelNotFoundError(f"{folder}: a records segment's paths do not match its {n} rows")
    dead = np.zeros(n, bool)
    if entry.get("dead") is not None:
        try:
            positions = np.load(checked_path(folder, entry["dead"], verify), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"{folder}: a dead-rows file is unreadable ({exc})") from None
        if positions.ndim != 1 or positions.dtype != np.int64 or (len(positions) and (positions.min() < 0 or positions.max() >= n)):
            raise ModelNotFoundError(f"{folder}: a records segment's dead rows do not match its {n} rows")
        dead[positions] = True
    return Records(paths=paths, **columns), dead


def load_records(model_dir, entries: list, verify: bool = True) -> Records:
    """The live records of a version's segments, in segment order."""
    if not isinstance(entries, list):
        raise ModelNotFoundError(f"{model_dir}: the version's records list is malformed")
    parts = []
    for entry in entries:
        records, dead = load_segment(model_dir, entry, verify)
        parts.append(records.take(np.flatnonzero(~dead)) if dead.any() else records)
    return Records.concat(parts)


def remove_rows(model_dir, entries: list, removed_ids, verify: bool = True) -> list:
    """New segment entries where the rows holding `removed_ids` are dead (writes small dead-row files only)."""
    removed = np.asarray(sorted(set(int(i) for i in removed_ids)), dtype=np.int64)
    if not len(removed):
        return list(entries)
    out = []
    for entry in entries:
        records, dead = load_segment(model_dir, entry, verify=False)
        hit = np.isin(records.ids, removed) & ~dead
        if hit.any():
            entry = {**entry, "dead": save_dead(model_dir, dead | hit)}
        out.append(entry)
    return out


def dead_share(model_dir, entries: list) -> float:
    """The share of dead rows, from the small dead-row files alone (no segment is loaded)."""
    folder = ModelFolder(model_dir).segments
    total = sum(e["rows"] for e in entries)
    dead = sum(len(np.load(checked_path(folder, e["dead"], False), mmap_mode="r")) for e in entries if e.get("dead"))
    return dead / total if total else 0.0


def compacted(model_dir, entries: list, max_dead_share: float = MAX_DEAD_SHARE) -> list:
    """The entries as they are, or one segment of the live records once dead rows pass `max_dead_share`
    (or segments pile up: more than 16)."""
    if dead_share(model_dir, entries) <= max_dead_share and len(entries) <= 16:
        return entries
    return [save_segment(model_dir, load_records(model_dir, entries, verify=False))]


def segment_files(entries: list) -> set[str]:
    """Every file name the entries refer to (to keep them when unreferenced files are cleared)."""
    names = set()
    for entry in entries:
        names.update(entry[c] for c in (*COLUMNS, "paths"))
        if entry.get("dead"):
            names.add(entry["dead"])
    return names
