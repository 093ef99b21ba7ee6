"""A folder of images: scanning it, and streaming it through the loader in decoded batches.

Nothing here holds more than a few batches of decoded images at once, so memory stays flat
as the collection grows; only the file list and, later, the latent vectors grow with it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgsim.core.errors import ImageError, ImgsimError
from imgsim.core.text import one_line
from imgsim.inputs.images import IMAGE_LIKE_SUFFIXES, decode, read_bytes, sniff


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
    """Files left out of a run, with the reason for each, and how many files were not images at all."""

    reasons: dict[str, str] = field(default_factory=dict)
    not_images: int = 0

    def add(self, path: str, reason: str) -> None:
        self.reasons[path] = reason

    def __len__(self) -> int:
        return len(self.reasons)

    def summary(self, limit: int = 5) -> str:
        """One line: the files skipped (names escaped, the first few) and the count of files that are not images."""
        if self.reasons:
            names = ", ".join(one_line(Path(p).name) for p in list(self.reasons)[:limit])
            more = f" and {len(self.reasons) - limit} more" if len(self.reasons) > limit else ""
            text = f"skipped {len(self.reasons)} file(s): {names}{more}"
        else:
            text = "no files skipped"
        return text + (f"; {self.not_images} file(s) are not images" if self.not_images else "")


def collection_folder(root) -> Path:
    """`root` as a collection's folder (a leading ~ expanded); ImgsimError where no folder is there. Cheap: a
    background run asks before it loads Keras, so a mistyped folder fails in a second, not after the import."""
    top = Path(root).expanduser()
    if not top.is_dir():
        raise ImgsimError(f"{top}: no such folder")
    return top


def scan_folder(root, follow_links: bool = False, skipped: Skipped | None = None,
                known: dict[str, tuple[int, int]] | None = None) -> list[FileInfo]:
    """Every image below `root`, recognised by its content, sorted by path; hidden files and folders left out.

    Paths are absolute, under `root` resolved once, so a linked file keeps its own name. Into
    `skipped` go, with the reason: files with an image's name that cannot be read (SVG, PNM,
    HEIC, a corrupt header...), links that loop or lead nowhere, and, unless `follow_links`,
    links to folders and links that leave `root`; every other file is counted as not an image.
    Each folder is scanned once, so links that lead back up end. `known` maps paths to the
    (size, mtime_ns) they had when last read as images: those files are not opened again while
    unchanged, so scanning a large collection that grew a little reads only the new headers.
    """
    skipped = Skipped() if skipped is None else skipped
    top = os.path.realpath(collection_folder(root))
    found = []
    visited = {folder_key(os.stat(top))}
    pending = [top]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            skipped.add(folder, f"{folder}: cannot list the folder ({exc.strerror or exc})")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, link = entry.path, entry.is_symlink()
            try:
                info = os.stat(path)  # through the link, if it is one
            except OSError as exc:
                skipped.add(path, f"{path}: {link_problem(exc) if link else 'cannot read'} ({exc.strerror or exc})")
                continue
            is_folder = stat.S_ISDIR(info.st_mode)
            refused = link_refused(path, top, is_folder) if link and not follow_links else None
            if refused:
                skipped.add(path, refused)
            elif is_folder:
                if folder_key(info) in visited:
                    skipped.add(path, f"{path}: a link to a folder already scanned (a loop or a second link to it)")
                else:
                    visited.add(folder_key(info))
                    pending.append(path)
            elif image_file(path, info, known, skipped):
                found.append(FileInfo(path, info.st_size, info.st_mtime_ns))
    found.sort(key=lambda f: f.path)
    return found


def link_refused(path: str, top: str, is_folder: bool) -> str | None:
    """Why a link is not followed without --follow-links (it leaves the collection, or leads to a folder), or None."""
    target = os.path.realpath(path)
    kind = "folder" if is_folder else "file"
    if os.path.commonpath([top, target]) != top:
        return f"{path}: a link to a {kind} outside the collection folder, not followed (--follow-links follows it)"
    if is_folder:
        return f"{path}: a link to a folder, not followed (--follow-links follows it)"
    return None


def image_file(path: str, info: os.stat_result, known, skipped: Skipped) -> bool:
    """Whether a scanned file is an image (its header sniffed unless `known` says it is unchanged); if not, why."""
    if not stat.S_ISREG(info.st_mode):
        skip_non_image(path, f"{path}: not a regular file", skipped)
        return False
    if not known or known.get(path) != (info.st_size, info.st_mtime_ns):
        try:
            sniff(path)
        except ImageError as exc:
            skip_non_image(path, str(exc), skipped)
            return False
    return True


def folder_key(info: os.stat_result) -> tuple[int, int]:
    return (info.st_dev, info.st_ino)


def link_problem(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a link loop"
    if exc.errno == errno.ENOENT:
        return "a link to nothing (its target does not exist)"
    return "a link that cannot be followed"


def skip_non_image(path: str, reason: str, skipped: Skipped) -> None:
    """A file that is not a readable image: listed with its reason if its name promises one, else counted."""
    if os.path.splitext(path)[1].lower() in IMAGE_LIKE_SUFFIXES:
        skipped.add(path, reason)
    else:
        skipped.not_images += 1


def fingerprint(files: list[FileInfo]) -> str:
    """A hash of the collection's paths (their bytes on disk, whatever the encoding), sizes and modification times."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(os.fsencode(f.path) + f"\0{f.size}\0{f.mtime_ns}\n".encode())
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
