"""A folder of images: scanning it, and streaming it through the loader in decoded batches.

Nothing here holds more than a few batches of decoded images at once, so memory stays flat
as the collection grows; only the file list and, later, the latent vectors grow with it.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageError, ImgsimError
from .images import IMAGE_SUFFIXES, decode, read_bytes


@dataclass(frozen=True)
class FileInfo:
    """One collection file as it was when scanned; size and mtime tell when it changed."""

    path: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple:
        return (self.path, self.size, self.mtime_ns)


@dataclass
class Skipped:
    """Files left out of a run, with the reason for each, for the run's report."""

    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, reason: str) -> None:
        self.reasons[path] = reason

    def __len__(self) -> int:
        return len(self.reasons)

    def summary(self, limit: int = 5) -> str:
        if not self.reasons:
            return "no files skipped"
        names = ", ".join(Path(p).name for p in list(self.reasons)[:limit])
        more = f" and {len(self.reasons) - limit} more" if len(self.reasons) > limit else ""
        return f"skipped {len(self.reasons)} unreadable file(s): {names}{more}"


def scan_folder(root) -> list[FileInfo]:
    """Every image file below `root` (by suffix, recursively, hidden folders skipped), sorted by path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImgsimError(f"{root}: no such folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(dirpath, name).resolve()
            try:
                st = path.stat()
            except OSError:
                continue
            found.append(FileInfo(str(path), st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f.path)
    return found


def fingerprint(files: list[FileInfo]) -> str:
    """A hash of the collection's paths, sizes and modification times."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()


def load_for_model(path: str, size: int) -> tuple[np.ndarray, str]:
    """Decode one file and hash its bytes (the hash recognises a query that is a collection file)."""
    data = read_bytes(path)
    return decode(data, size, path), hashlib.sha1(data).hexdigest()


def iter_decoded(paths: list[str], size: int, batch_size: int = 64, workers: int = 2):
    """Yield (indices, images, hashes, failures) batch by batch, decoding in a thread pool.

    Pillow releases the GIL while decoding, so the pool runs alongside the model; at most two
    batches are decoded ahead. `failures` maps a path to the reason it could not be read.
    """

    def load(i):
        try:
            return i, *load_for_model(paths[i], size), None
        except ImageError as exc:
            return i, None, None, str(exc)

    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = []
        for start in starts:
            pending.append(pool.map(load, range(start, min(start + batch_size, len(paths)))))
            if len(pending) < 2 and start + batch_size < len(paths):
                continue
            yield collect(pending.pop(0), paths, size)
        while pending:
            yield collect(pending.pop(0), paths, size)


def collect(results, paths, size):
    indices, images, hashes, failures = [], [], [], {}
    for i, image, digest, error in results:
        if error is None:
            indices.append(i)
            images.append(image)
            hashes.append(digest)
        else:
            failures[paths[i]] = error
    array = np.stack(images) if images else np.zeros((0, size, size, 3), np.float32)
    return indices, array, hashes, failures


def encode_files(encode, paths: list[str], size: int, workers: int = 2, progress=None, start: float = 0.0, share: float = 1.0):
    """Stream files through `encode` (a batch of images -> latents) batch by batch.

    Returns (positions of the files kept, their L2-normalised vectors, sha1 of their bytes,
    {path: reason} of the unreadable ones). Memory holds two decoded batches at most.
    """
    from .index import normalise

    kept, chunks, hashes, failures = [], [], [], {}
    done = 0
    for indices, images, batch_hashes, batch_failures in iter_decoded(paths, size, batch_size=64, workers=workers):
        if len(images):
            chunks.append(normalise(encode(images)))
        kept.extend(indices)
        hashes.extend(batch_hashes)
        failures.update(batch_failures)
        done += len(indices) + len(batch_failures)
        if progress:
            progress(start + share * done / max(1, len(paths)), f"encoding {done}/{len(paths)} images")
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return kept, vectors, hashes, failures
