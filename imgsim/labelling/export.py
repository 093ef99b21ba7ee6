"""A labelled dataset out of a collection: every image's label as rows, or one folder per label.

The folder layout (`DIR/<label>/<file>`) is what Keras' `image_dataset_from_directory`, CVAT's
ImageNet format and YOLO classification read. Originals are never moved or changed: each file is
copied, or hard-linked with `link=True`.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from imgsim.core.errors import ImgsimError
from imgsim.core.text import one_line
from imgsim.labelling.assistant import Propagation
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
    a label get one too. A file that cannot be read is reported, not fatal.
    """
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise ImgsimError(f"{dest}: exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise ImgsimError(f"{dest}: not empty; choose an empty folder or pass --force to add to it")
    root = version.manifest.get("images_root")
    try:
        inside = root and dest.resolve().is_relative_to(Path(root).resolve())
    except OSError:
        inside = False
    if inside:  # the next `index` would find the copies and add them to the collection
        raise ImgsimError(f"{dest}: inside the collection's folder; export somewhere outside it")
    folders: dict[str, str] = {}
    used_names: dict[str, set] = {}
    files = unlabelled = 0
    failed = {}
    dest.mkdir(parents=True, exist_ok=True)
    for item in rows(version, propagation, min_confidence):
        if item["label"] is None:
            unlabelled += 1
            continue
        if item["label"] not in folders:
            base, name, i = folder_name(item["label"]), folder_name(item["label"]), 1
            while name.casefold() in {f.casefold() for f in folders.values()}:
                i += 1
                name = f"{base}-{i}"
            folders[item["label"]] = name
            used_names[name] = {p.name.casefold() for p in (dest / name).iterdir()} if (dest / name).is_dir() else set()
        folder = dest / folders[item["label"]]
        folder.mkdir(exist_ok=True)
        source = Path(item["path"])
        target = unique_name(source.name, used_names[folders[item["label"]]])
        try:
            if link:
                try:
                    os.link(source, folder / target)
                except OSError as exc:
                    if exc.errno not in (18, 1, 95):  # EXDEV, EPERM, EOPNOTSUPP: another file system, so copy
                        raise
                    shutil.copyfile(source, folder / target)
            else:
                shutil.copyfile(source, folder / target)
        except OSError as exc:
            failed[item["path"]] = exc.strerror or type(exc).__name__
            continue
        files += 1
    return FolderExport(dest, files, len(folders), unlabelled, failed)


def unique_name(name: str, used: set) -> str:
    """`name`, or `stem-2.ext`, `stem-3.ext` … when the folder already holds it (case-insensitively)."""
    stem, suffix = os.path.splitext(name)
    candidate, i = name, 1
    while candidate.casefold() in used:
        i += 1
        candidate = f"{stem}-{i}{suffix}"
    used.add(candidate.casefold())
    return candidate
