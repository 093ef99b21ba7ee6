"""Every image's signature for the near-copy scan (imgsim.features.signature), as arrays, kept on disk per version.

The cache is `<model dir>/duplicates/<version id>/signatures.npz`, written atomically. Before use it is
checked: a plain file no larger than the version's rows can take, nothing compressed in it (`open_npz`), its
format and feature parameters, and that it holds one row per record of this version,
with the same ids and sha1s in the same order; anything else is read as no cache (and rebuilt). A
version without one borrows the rows of its parent's cache whose bytes (sha1) are the same, so a
scan after `index` reads only the new files.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgsim.core.files import open_npz, write_atomic
from imgsim.features import Keypoints, Signature, signature
from imgsim.features.keypoints import KEYPOINTS, VERIFY_SIDE
from imgsim.storage.folder import ModelFolder

log = logging.getLogger(__name__)

FORMAT = 1
FILE = "signatures.npz"
PARAMS = np.asarray([FORMAT, VERIFY_SIDE, KEYPOINTS], np.int64)  # what the cached features depend on
THREADS = 2  # decoding and ORB release the GIL


def version_folder(model_dir, version_id: str) -> Path:
    """`<model dir>/duplicates/<version id>`: a version's signature cache and its last finished scan."""
    return ModelFolder(model_dir).scan_folder(version_id)


def records_digest(records) -> str:
    """What a cache must have been made for: this version's ids and sha1s, in record order."""
    digest = hashlib.sha256(np.ascontiguousarray(records.ids, np.int64).tobytes())
    digest.update(sha1_array(records).tobytes())
    return digest.hexdigest()


@dataclass
class Signatures:
    """Column arrays of N signatures; row i is record row i. `readable[i]` False: not read (yet), or unreadable."""

    readable: np.ndarray  # (N,) bool
    phash: np.ndarray  # (N, 8) uint8
    content: np.ndarray  # (N, 8) uint8
    thumbs: np.ndarray  # (N, 8, 8, 3) uint8
    sizes: np.ndarray  # (N, 2) int32: the keypoints' content size (0, 0: no keypoints)
    offsets: np.ndarray  # (N + 1,) int64: row i's keypoints are points[offsets[i]:offsets[i + 1]]
    points: np.ndarray  # (K, 2) float32
    descriptors: np.ndarray  # (K, 32) uint8
    read: int = 0  # files decoded to make this table (the rest came from a cache)
    cpu_s: float = 0.0  # CPU seconds reading every row took (rows from a cache: as they took then)

    def __len__(self) -> int:
        return len(self.readable)

    def keypoints(self, row: int) -> Keypoints | None:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        if end == start:
            return None
        return Keypoints(self.points[start:end], self.descriptors[start:end], tuple(int(v) for v in self.sizes[row]))

    def owners(self) -> np.ndarray:
        """The row each keypoint belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))

    @classmethod
    def build(cls, found: list[Signature | None], read: int = 0, cpu_s: float = 0.0) -> Signatures:
        n = len(found)
        points = [s.keypoints for s in found if s is not None and s.keypoints is not None]
        counts = [len(s.keypoints.points) if s is not None and s.keypoints is not None else 0 for s in found]
        blank = np.zeros(8, np.uint8)
        return cls(
            readable=np.asarray([s is not None for s in found], bool).reshape(n),
            phash=np.asarray([s.phash if s is not None else blank for s in found], np.uint8).reshape(n, 8),
            content=np.asarray([s.content if s is not None else blank for s in found], np.uint8).reshape(n, 8),
            thumbs=np.asarray([s.thumb if s is not None else np.zeros((8, 8, 3), np.uint8) for s in found],
                              np.uint8).reshape(n, 8, 8, 3),
            sizes=np.asarray([s.keypoints.size if s is not None and s.keypoints is not None else (0, 0)
                              for s in found], np.int32).reshape(n, 2),
            offsets=np.r_[0, np.cumsum(counts)].astype(np.int64),
            points=np.concatenate([k.points for k in points]).astype(np.float32) if points else np.zeros((0, 2), np.float32),
            descriptors=np.concatenate([k.descriptors for k in points]) if points else np.zeros((0, 32), np.uint8),
            read=read, cpu_s=float(cpu_s))

    def signature(self, row: int) -> Signature | None:
        if not self.readable[row]:
            return None
        return Signature(self.phash[row], self.content[row], self.thumbs[row], self.keypoints(row))


ARRAYS = ("readable", "phash", "content", "thumbs", "sizes", "offsets", "points", "descriptors")


def sha1_array(records) -> np.ndarray:
    return np.asarray([v if isinstance(v, bytes) else str(v).encode() for v in records.sha1.tolist()], "S40")


def save(path: Path, table: Signatures, records) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, params=PARAMS, digest=np.asarray(records_digest(records)), sha1=sha1_array(records),
             cpu_s=np.asarray(table.cpu_s, np.float64), **{name: getattr(table, name) for name in ARRAYS})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


def max_bytes(rows: int) -> int:
    """The most a cache of `rows` images can take: each row's fixed arrays and KEYPOINTS keypoints, and the headers."""
    return rows * (256 + 40 * KEYPOINTS) + 2**20


def load(path: Path, digest: str | None, rows: int) -> tuple[Signatures, np.ndarray] | None:
    """(table, its rows' sha1s) from the cache at `path` if it is whole and was made for these records (`digest`;
    None: for any), else None. Checked before any array is read (`open_npz`): a plain file of at most
    what `rows` images take, nothing compressed in it (it lies outside the version's checksums)."""
    try:
        with open_npz(path, max_bytes(rows)) as data:
            if not np.array_equal(data["params"], PARAMS) or (digest is not None and str(data["digest"]) != digest):
                return None
            table, sha1 = Signatures(**{name: data[name] for name in ARRAYS}), data["sha1"]
            table.cpu_s = max(0.0, float(data["cpu_s"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        log.warning("%s: not a usable signature cache (%s); reading the images again", path, type(exc).__name__)
        return None
    return (table, sha1) if consistent(table, len(sha1)) and sha1.dtype.kind == "S" else None


def consistent(table: Signatures, n: int) -> bool:
    """Whether the arrays have the shapes and types a table of n rows has, and offsets that index its keypoints."""
    shapes = {"readable": (n,), "phash": (n, 8), "content": (n, 8), "thumbs": (n, 8, 8, 3), "sizes": (n, 2),
              "offsets": (n + 1,)}
    if any(getattr(table, k).shape != shape for k, shape in shapes.items()):
        return False
    offsets, k = table.offsets, len(table.points)
    return (table.points.shape == (k, 2) and table.descriptors.shape == (k, 32) and table.descriptors.dtype == np.uint8
            and table.readable.dtype == bool and offsets.dtype.kind == "i" and offsets[0] == 0 and offsets[-1] == k
            and bool((np.diff(offsets) >= 0).all()) and bool(np.isfinite(table.points).all()))


def parent_cache(model_dir, version) -> tuple[dict[bytes, Signature | None], float]:
    """(sha1 -> signature, CPU seconds a row took) from the parent version's cache: a file whose bytes did not
    change needs no reading."""
    from imgsim.core.ids import is_version_id

    parent = (getattr(version, "manifest", None) or {}).get("parent")
    if not isinstance(parent, str) or not is_version_id(parent):
        return {}, 0.0
    found = load(version_folder(model_dir, parent) / FILE, None, 2 * len(version.records) + 1000)
    if found is None:
        return {}, 0.0
    table, sha1 = found
    rows = {digest: table.signature(row) for row, digest in enumerate(sha1.tolist()) if table.readable[row]}
    return rows, table.cpu_s / max(len(table), 1)


def signatures(version, progress=None, deadline: float | None = None, rows=None) -> Signatures:
    """Every record's signature: from the version's cache when it is valid, else read (two threads) and cached.

    Files whose bytes the parent version's cache holds are not read again. `deadline` (time.process_time)
    stops reading: rows not read by then count as unreadable in this scan, and the table is not cached.
    `rows`: only these are needed (the others stay unread, and nothing is cached), unless a cache has all."""
    records = version.records
    model_dir = getattr(version, "model_dir", None)
    path = version_folder(model_dir, version.id) / FILE if model_dir is not None else None
    found = load(path, records_digest(records), len(records)) if path is not None else None
    if found is not None:
        return found[0]
    known, per_row = parent_cache(model_dir, version) if model_dir is not None else ({}, 0.0)
    sha1 = sha1_array(records).tolist()
    needed = range(len(sha1)) if rows is None else sorted(set(np.asarray(rows, np.int64).ravel().tolist()))
    wanted = [row for row in needed if sha1[row] not in known]
    start = time.process_time()
    fresh, read, stopped = read_all([records.paths[row] for row in wanted], progress, deadline)
    spent = time.process_time() - start
    got = dict(zip(wanted, fresh))
    per_row = spent / read if read else per_row
    table = Signatures.build([got[row] if row in got else known.get(digest) for row, digest in enumerate(sha1)], read,
                             spent + per_row * (len(needed) - read))
    if path is not None and not stopped and rows is None:
        try:
            save(path, table, records)
        except OSError as exc:  # a read-only model folder: the scan still works, uncached
            log.warning("%s: cannot keep the signatures (%s)", path, exc.strerror or exc)
    return table


def read_all(paths, progress=None, deadline: float | None = None) -> tuple[list, int, bool]:
    """Signatures of `paths` in order (None: unreadable or not read before `deadline`); (found, read, stopped)."""
    found: list = [None] * len(paths)
    read, stopped = 0, False
    with ThreadPoolExecutor(THREADS) as pool:
        for start in range(0, len(paths), 256):
            if deadline is not None and time.process_time() > deadline:
                stopped = True
                break
            chunk = list(range(start, min(start + 256, len(paths))))
            for row, value in zip(chunk, pool.map(signature, [paths[r] for r in chunk])):
                found[row] = value
            read += len(chunk)
            if progress:
                progress(read / max(len(paths), 1), f"read {read:,} of {len(paths):,} images for copies")
    return found, read, stopped
