"""A labelled dataset out of a collection: every image's label as rows, or one folder per label.

The folder layout (`DIR/<label>/<file>`) is what Keras' `image_dataset_from_directory`, CVAT's
ImageNet format and YOLO classification read. Originals are never moved or changed: each file is
copied, or hard-linked with `link=True`, and only a regular file inside the collection is read
(imgsim.core.files.open_plain).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import unicodedata
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from imgsim.core.errors import ImgsimError
from imgsim.core.files import NO_FOLLOW, NotAPlainFile, inside, open_folder, open_plain
from imgsim.core.text import one_line
from imgsim.labelling.propagation import Propagation
from imgsim.storage import store

SOURCES = ("person", "propagated", "none")
MAX_FOLDER_BYTES = 120  # well under every file system's 255-byte name limit, with room for a suffix
# Names Windows refuses as a file or folder, whatever the extension (a dataset may travel there).
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def rows(version: store.Version, propagation: Propagation, min_confidence: float = 0.0):
    """One dict per image of the version: path, label (None if none), source, confidence.

    A propagated label below `min_confidence` is reported as no label (source "none").
    """
    for row, path in enumerate(version.paths):
        label, source = propagation.name(row), propagation.source(row)
        confidence = float(propagation.confidence[row]) if label is not None else None
        if source == "propagated" and confidence < min_confidence:
            label, source = None, "none"
        yield {"path": path, "label": label, "source": source,
               "confidence": None if label is None else round(confidence, 4)}


def folder_name(label: str) -> str:
    """A label as one safe folder name on any common file system: no separators, control characters,
    leading dots, trailing dots or spaces, reserved device names, and at most MAX_FOLDER_BYTES bytes."""
    text = unicodedata.normalize("NFC", one_line(label))
    text = re.sub(r'[\\/:*?"<>|\x00-\x1f\x7f]', "_", text).strip().rstrip(". ").lstrip(".")
    while len(text.encode("utf-8")) > MAX_FOLDER_BYTES:
        text = text[:-1]
    text = text.rstrip(". ")
    if not text or text.split(".")[0].lower() in RESERVED:
        text = f"_{text}"
    return text


@dataclass(frozen=True)
class FolderExport:
    folder: Path
    files: int
    labels: int
    unlabelled: int  # images left out: no label, or a propagated one below the minimum confidence
    failed: dict  # path -> why it could not be copied


def export_folders(version: store.Version, propagation: Propagation, dest, *, link: bool = False,
                   force: bool = False, min_confidence: float = 0.0) -> FolderExport:
    """Write DEST/<label>/<file> for every labelled image; refuses a non-empty DEST unless `force`.

    Two labels that make the same folder name get a numbered suffix; two files with one name in
    a label get one too. Files are handled as files: only a regular file inside the collection's
    folder is read (a link planted after indexing, to /dev/zero or to a private file elsewhere, is
    refused), never through a link; a copy never gets wider permissions than its original; nothing
    is written through a link found in DEST, nor over a file already there. A file that cannot be
    exported is reported with the reason, not fatal.
    """
    dest = checked_destination(version, dest, force)
    root = version.files_root
    files = unlabelled = 0
    failed = {}
    with LabelFolders(dest) as folders:
        for item in rows(version, propagation, min_confidence):
            if item["label"] is None:
                unlabelled += 1
                continue
            try:
                folder, used = folders.open(item["label"])
                export_file(item["path"], folder, used, root, link)
            except NotAPlainFile as exc:
                failed[item["path"]] = exc.why
            except OSError as exc:
                failed[item["path"]] = exc.strerror or type(exc).__name__
            else:
                files += 1
        labels = len(folders.names)
    return FolderExport(dest, files, labels, unlabelled, failed)


def checked_destination(version: store.Version, dest, force: bool) -> Path:
    """DEST, created: a folder outside the collection, empty unless `force`."""
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise ImgsimError(f"{dest}: exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise ImgsimError(f"{dest}: not empty; choose an empty folder or pass --force to add to it")
    root = version.manifest.get("images_root")
    if root and inside(dest, root):  # the next `index` would find the copies and add them to the collection
        raise ImgsimError(f"{dest}: inside the collection's folder; export somewhere outside it")
    dest.mkdir(parents=True, exist_ok=True)
    return dest


class LabelFolders:
    """DEST's folder for each label, opened without following a link: one planted there is refused, never written through."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        self.names: dict[str, str] = {}  # label -> folder name
        self.opened: dict[str, tuple[int, set] | NotAPlainFile] = {}  # label -> (descriptor, names in it) or why not

    def __enter__(self) -> "LabelFolders":
        return self

    def __exit__(self, *exc) -> None:
        for entry in self.opened.values():
            if isinstance(entry, tuple):
                os.close(entry[0])
        os.close(self.fd)

    def open(self, label: str) -> tuple[int, set]:
        """The label's folder (descriptor, names already in it, casefolded); raises why it cannot be written."""
        if label not in self.opened:
            base = name = folder_name(label)
            taken, i = {f.casefold() for f in self.names.values()}, 1
            while name.casefold() in taken:
                i += 1
                name = f"{base}-{i}"
            self.names[label] = name
            try:
                with suppress(FileExistsError):
                    os.mkdir(name, dir_fd=self.fd)
                fd = open_folder(name, self.fd)
                self.opened[label] = (fd, {entry.casefold() for entry in os.listdir(fd)})
            except OSError as exc:
                why = ("is a link or not a folder: nothing is written through it" if exc.errno in (errno.ELOOP, errno.ENOTDIR)
                       else f"cannot be made ({exc.strerror or type(exc).__name__})")
                self.opened[label] = NotAPlainFile(self.dest / name, f"{self.dest / name} {why}")
        entry = self.opened[label]
        if isinstance(entry, NotAPlainFile):
            raise entry
        return entry


def export_file(path: str, folder: int, used: set, root, link: bool) -> None:
    """Copy (or hard-link) one collection file into an open label folder, under a name not yet taken there."""
    fd, info = open_plain(path, root)
    try:
        name = unique_name(Path(path).name, used)
        if not (link and linked(path, info, name, folder)):
            copy_open_file(fd, info, name, folder)
    finally:
        os.close(fd)


def linked(path: str, info: os.stat_result, name: str, folder: int) -> bool:
    """Hard-link the file checked as `info` into `folder`; False where the file system cannot (then it is copied)."""
    try:
        os.link(os.path.realpath(path), name, dst_dir_fd=folder, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP):  # another file system, or not allowed: copy
            return False
        raise
    made = os.stat(name, dir_fd=folder, follow_symlinks=False)
    if (made.st_dev, made.st_ino) != (info.st_dev, info.st_ino):  # swapped between the check and the link
        os.unlink(name, dir_fd=folder)
        raise NotAPlainFile(path, "changed while it was being linked: refused")
    return True


def copy_open_file(fd: int, info: os.stat_result, name: str, folder: int) -> None:
    """Write the file's bytes (as large as it was when checked) to a new `name` in `folder`, no wider in permissions."""
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, stat.S_IMODE(info.st_mode) & 0o666,
                  dir_fd=folder)
    try:
        with os.fdopen(out, "wb") as target:
            left = info.st_size
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                target.write(chunk)
                left -= len(chunk)
    except BaseException:
        os.unlink(name, dir_fd=folder)
        raise


def unique_name(name: str, used: set) -> str:
    """`name`, or `stem-2.ext`, `stem-3.ext` … when the folder already holds it (case-insensitively)."""
    stem, suffix = os.path.splitext(name)
    candidate, i = name, 1
    while candidate.casefold() in used:
        i += 1
        candidate = f"{stem}-{i}{suffix}"
    used.add(candidate.casefold())
    return candidate
