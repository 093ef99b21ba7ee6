"""The last finished scan of a version, kept in the model folder so that showing copies never scans.

`<model dir>/duplicates/<version id>/scan.npz` holds the verified pairs (by stable image id), what
proposed them, their verdicts, the members' header sizes and latent vectors, and a summary (when,
how long, what the budget left unchecked). It is written atomically by `scan_and_save` (the
background job after training, `imgsim duplicates`, or a person allowed to write) and checked when
read: a file that is damaged, of another format or version, or names images the version does not
hold is no result. `.scan.lock` beside it keeps one scan of a version at a time.
"""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from dataclasses import asdict

import numpy as np
from filelock import FileLock, Timeout

from imgsim.core.errors import BusyError
from imgsim.core.files import open_npz, write_atomic
from imgsim.duplicates.candidates import Candidates
from imgsim.duplicates.finding import DEFAULT_THRESHOLD, MANIFEST_KEY, DuplicateScan, ScanStats, scan_duplicates
from imgsim.duplicates.signatures import version_folder
from imgsim.duplicates.verifying import Verified

log = logging.getLogger(__name__)

FORMAT = 1
FILE = "scan.npz"
LOCK = ".scan.lock"
KINDS = ("hash", "geometry", "hash+geometry")  # the verdicts a stored pair can hold (only copies are kept); append only
SCAN_FLOOR = 0.90  # the stored scan's lowest threshold: the Duplicates page's slider starts here
MAX_ROW_BYTES = 64 * 1024  # a kept scan's bytes per image at most (its pairs, a latent vector, a size), generously


LOG = "scan.log"  # the output of a scan started in the background


def result_path(model_dir, version_id: str):
    return version_folder(model_dir, version_id) / FILE


def lock_path(model_dir, version_id: str):
    return version_folder(model_dir, version_id) / LOCK


def log_path(model_dir, version_id: str):
    return version_folder(model_dir, version_id) / LOG


def scanning(model_dir, version_id: str) -> bool:
    """Whether a scan of this version holds its lock now."""
    path = lock_path(model_dir, version_id)
    if not path.exists():
        return False
    try:
        with FileLock(path, timeout=0):
            return False
    except Timeout:
        return True
    except OSError:
        return False


def version_floor(version) -> float:
    threshold = (version.manifest.get("metrics") or {}).get(MANIFEST_KEY, version.manifest.get(MANIFEST_KEY))
    threshold = float(threshold) if type(threshold) in (int, float) else DEFAULT_THRESHOLD
    return min(SCAN_FLOOR, max(-1.0, min(1.0, threshold)))


def scan_and_save(version, progress=None, budget_s: float | None = None) -> DuplicateScan:
    """Scan a version (down to SCAN_FLOOR, or its own threshold if lower) and keep the result; BusyError if a scan of it
    is running. Needs write access to the model folder."""
    folder = version_folder(version.model_dir, version.id)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_path(version.model_dir, version.id), timeout=0):
            started = time.time()
            scan = scan_duplicates(version, version_floor(version), progress=progress, budget_s=budget_s)
            save(version, scan, started)
            return load(version) or scan
    except Timeout:
        raise BusyError(f"a scan for copies of version {version.id} is already running") from None


def save(version, scan: DuplicateScan, started: float) -> None:
    c, v = scan.candidates, scan.verified
    copies = np.flatnonzero(np.isin(v.kinds.astype(str), KINDS))
    ids = version.records.ids
    unchecked = np.flatnonzero(v.kinds.astype(str) == "unchecked")
    scan.groups(scan.floor)  # every member's size and vector at the lowest threshold this file serves
    members = np.asarray(sorted(scan.vectors), np.int64)
    sized = np.asarray(sorted(scan.sizes), np.int64)
    meta = {"format": FORMAT, "version": version.id, "started": started, "finished": time.time(), "floor": scan.floor,
            "stats": asdict(scan.stats)}
    vectors = (np.asarray([scan.vectors[r] for r in members.tolist()], np.float32) if len(members)
               else np.zeros((0, 1), np.float32))  # exact copies only: no vector needed
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.asarray(json.dumps(meta)), pairs=ids[c.pairs[copies]].reshape(-1, 2),
             latent=c.latent[copies], bits=c.bits[copies], votes=c.votes[copies],
             kinds=np.asarray([KINDS.index(k) for k in v.kinds[copies].tolist()], np.int8), free=v.free[copies],
             unchecked=ids[c.pairs[unchecked[:10_000]]].reshape(-1, 2),
             vector_ids=ids[members], vectors=vectors,
             size_ids=ids[sized], sizes=np.asarray([[w or -1, h or -1] for w, h in (scan.sizes[r] for r in sized.tolist())],
                                                   np.int64).reshape(-1, 2))
    write_atomic(result_path(version.model_dir, version.id), buffer.getvalue())


class StoredScan(DuplicateScan):
    """A scan read back from the model folder: its groups at any threshold from its floor, with no file read."""

    def __init__(self, version, floor, candidates, verified, stats, started: float, finished: float):
        super().__init__(version, floor, candidates, verified, stats)
        self.started, self.finished = started, finished

    def age(self, now: float | None = None) -> float:
        """Seconds since the scan finished."""
        return max(0.0, (time.time() if now is None else now) - self.finished)


def load(version) -> StoredScan | None:
    """The version's last finished scan, if there is one and it is whole and its own; else None."""
    path = result_path(version.model_dir, version.id)
    try:  # outside the version's checksums: bounded before any array is read (a plain file, nothing compressed)
        with open_npz(path, len(version) * MAX_ROW_BYTES + 16 * 2**20) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        log.warning("%s: not a readable scan (%s); scan again", path, type(exc).__name__)
        return None
    try:
        return checked(version, arrays)
    except (ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError) as exc:
        log.warning("%s: not a scan of this version (%s); scan again", path, exc)
        return None


def rows_of(version, ids: np.ndarray) -> np.ndarray:
    rows = version.records.rows_of(np.asarray(ids, np.int64).ravel())
    if (rows < 0).any():
        raise ValueError("it names images this version does not hold")
    return rows.reshape(np.shape(ids))


def checked(version, a: dict) -> StoredScan:
    meta = json.loads(str(a["meta"]))
    if meta.get("format") != FORMAT or meta.get("version") != version.id:
        raise ValueError("another format or another version")
    n = len(a["pairs"])
    if a["pairs"].shape != (n, 2) or any(len(a[k]) != n for k in ("latent", "bits", "votes", "kinds", "free")):
        raise ValueError("its arrays disagree in length")
    if n and not (0 <= a["kinds"].min() and a["kinds"].max() < len(KINDS)):
        raise ValueError("an unknown verdict")
    stats = ScanStats(**{k: meta["stats"][k] for k in ScanStats.__dataclass_fields__})
    candidates = Candidates(rows_of(version, a["pairs"]), a["latent"].astype(np.float32), a["bits"].astype(np.int16),
                            a["votes"].astype(np.int32))
    verified = Verified(np.asarray([KINDS[k] for k in a["kinds"].tolist()], object), a["free"].astype(bool),
                        float(stats.cpu_s))
    scan = StoredScan(version, float(meta["floor"]), candidates, verified, stats, float(meta["started"]),
                      float(meta["finished"]))
    vectors = a["vectors"]
    if len(vectors) != len(a["vector_ids"]) or not np.isfinite(vectors).all():
        raise ValueError("damaged vectors")
    scan.vectors = dict(zip(rows_of(version, a["vector_ids"]).tolist(), vectors))
    scan.sizes = {row: tuple(None if v < 0 else int(v) for v in size)
                  for row, size in zip(rows_of(version, a["size_ids"]).tolist(), a["sizes"].tolist())}
    return scan
