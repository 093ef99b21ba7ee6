"""Model versions on disk: written whole or not at all, verified on load, one writer at a time.

Layout of a model folder::

    CURRENT                 the active version's id, replaced atomically
    .lock                   held by the one training or indexing run allowed at a time
    staging/                versions being written; anything here is unfinished
    versions/<id>/          model.keras, vectors.npy, groups.npy, centres.npy, map2d.npy,
                            files.json, history.json and manifest.json (with checksums)

A version is written in staging/, every file fsynced, then renamed into versions/, and only then
does CURRENT change. A reader resolves CURRENT once and reads that folder, which is never
modified afterwards, so it sees one version whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from .errors import BusyError, ImgsimError, ModelNotFoundError
from .text import one_line

log = logging.getLogger(__name__)

ARRAYS = ("vectors", "groups", "centres", "map2d")
MODEL_FILE = "model.keras"
# What new_version_id makes; CURRENT and `versions --use` must name one of these, never a path.
VERSION_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")


@dataclass
class Version:
    """One complete, verified model version loaded from disk (the model itself loads lazily)."""

    id: str
    path: Path
    manifest: dict
    files: list[dict]
    vectors: np.ndarray
    groups: np.ndarray
    centres: np.ndarray
    map2d: np.ndarray
    history: dict

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def image_size(self) -> int:
        return int(self.manifest["settings"]["image_size"])

    @property
    def paths(self) -> list[str]:
        return [f["path"] for f in self.files]


def new_version_id() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def is_version_id(version_id) -> bool:
    return isinstance(version_id, str) and VERSION_ID.fullmatch(version_id) is not None


@contextlib.contextmanager
def writable(model_dir):
    """Turn a permission error while writing the model folder into one line that names the folder."""
    try:
        yield
    except PermissionError as exc:
        where = Path(exc.filename).parent if exc.filename else Path(model_dir)
        raise ImgsimError(f"{where}: not writable (permission denied); choose another --model-dir "
                          "or fix the folder's permissions") from None


@contextlib.contextmanager
def writer_lock(model_dir):
    """Hold the model folder's lock, or raise BusyError at once if a run already holds it."""
    model_dir = Path(model_dir)
    with writable(model_dir):
        model_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(model_dir / ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise BusyError(f"{model_dir}: another training or indexing run is in progress") from None
    try:
        yield
    finally:
        lock.release()


def is_busy(model_dir) -> bool:
    """Whether a training or indexing run holds the lock now."""
    try:
        with writer_lock(model_dir):
            return False
    except BusyError:
        return True


def clear_staging(model_dir) -> None:
    """Remove versions left unfinished by a killed run (call with the writer lock held)."""
    shutil.rmtree(Path(model_dir) / "staging", ignore_errors=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def write_version(model_dir, *, manifest: dict, files: list[dict], arrays: dict[str, np.ndarray],
                  history: dict, save_model, make_current: bool = True) -> str:
    """Write a complete version and (by default) make it current; returns its id.

    `save_model(path)` writes the `.keras` file (saving it, or linking the parent's). Call with
    the writer lock held. A failure or a kill at any point leaves only a folder in staging/.
    """
    model_dir = Path(model_dir)
    version_id = new_version_id()
    staging = model_dir / "staging" / version_id
    with writable(model_dir):
        staging.mkdir(parents=True)
        try:
            save_model(staging / MODEL_FILE)
            for name in ARRAYS:
                np.save(staging / f"{name}.npy", arrays[name], allow_pickle=False)
            write_json(staging / "files.json", files)
            write_json(staging / "history.json", history)
            checksums = {p.name: sha256_of(p) for p in sorted(staging.iterdir())}
            manifest = {**manifest, "id": version_id, "checksums": checksums}
            write_json(staging / "manifest.json", manifest)
            for p in staging.iterdir():
                fsync_path(p)
            fsync_path(staging)
            (model_dir / "versions").mkdir(exist_ok=True)
            final = model_dir / "versions" / version_id
            os.rename(staging, final)
            fsync_path(model_dir / "versions")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if make_current:
        set_current(model_dir, version_id)
    return version_id


def version_folder(model_dir, version_id) -> Path:
    """The folder of a listed version; anything else (a path, `..`, a link out of versions/) is refused."""
    root = Path(model_dir) / "versions"
    if not is_version_id(version_id):
        raise ModelNotFoundError(f"{root}: {one_line(version_id)!r} is not a version id (see `imgsim versions`)")
    folder = root / version_id
    if folder.is_symlink() or not folder.is_dir():
        raise ModelNotFoundError(f"{root}: no version {version_id}")
    return folder


def set_current(model_dir, version_id: str) -> None:
    """Point CURRENT at a complete, intact version, atomically (write a temporary file, fsync, rename)."""
    model_dir = Path(model_dir)
    verify(version_folder(model_dir, version_id))
    with writable(model_dir):
        tmp = model_dir / f".CURRENT.{secrets.token_hex(4)}"
        tmp.write_text(version_id + "\n")
        fsync_path(tmp)
        os.replace(tmp, model_dir / "CURRENT")
        fsync_path(model_dir)


def current_id(model_dir) -> str | None:
    """The id CURRENT names, or None when there is none or it names no version id (a path, say)."""
    try:
        wanted = (Path(model_dir) / "CURRENT").read_text(errors="replace").strip()
    except OSError:
        return None
    if wanted and not is_version_id(wanted):
        log.warning("%s/CURRENT names %r, not a version id; ignoring it", model_dir, one_line(wanted))
        return None
    return wanted or None


def list_versions(model_dir) -> list[dict]:
    """Manifests of the versions, newest first (damaged ones are marked, not hidden; strays are ignored)."""
    root = Path(model_dir) / "versions"
    manifests = []
    for folder in sorted(root.iterdir(), reverse=True) if root.is_dir() else []:
        if not is_version_id(folder.name) or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            if not isinstance(manifest, dict) or manifest.get("id") != folder.name:
                raise ValueError("manifest does not describe this folder")
        except (OSError, ValueError):
            manifest = {"id": folder.name, "damaged": True}
        manifests.append(manifest)
    return manifests


def verify(folder: Path) -> dict:
    """The version's manifest, after checking it and every file against its checksum.

    Every file in the folder must be listed in `checksums` and match it; a manifest that lacks
    what a version needs, or names another folder, makes the version damaged.
    """
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{folder}: manifest missing or unreadable ({exc})") from None
    checksums = manifest.get("checksums") if isinstance(manifest, dict) else None
    settings = manifest.get("settings") if isinstance(manifest, dict) else None
    if not isinstance(checksums, dict) or not isinstance(settings, dict) or manifest.get("id") != folder.name:
        raise ModelNotFoundError(f"{folder}: manifest is incomplete or names another version")
    size = settings.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 512 or size % 16:
        raise ModelNotFoundError(f"{folder}: manifest has no valid image size")
    try:
        present = {p.name for p in folder.iterdir()} - {"manifest.json"}
    except OSError as exc:
        raise ModelNotFoundError(f"{folder}: cannot be listed ({exc.strerror})") from None
    expected = {MODEL_FILE, "files.json", "history.json", *(f"{name}.npy" for name in ARRAYS)}
    for name in sorted(present | expected | set(checksums)):
        path = folder / name
        if name not in checksums:
            raise ModelNotFoundError(f"{folder}: {one_line(name)} is not covered by the manifest's checksums")
        if name not in present or path.is_symlink() or not path.is_file() or sha256_of(path) != checksums[name]:
            raise ModelNotFoundError(f"{folder}: {one_line(name)} is missing or damaged")
    return manifest


def read_version(folder: Path) -> Version:
    """A verified version whose parts agree with each other; anything else is ModelNotFoundError (damaged)."""
    manifest = verify(folder)
    try:
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
        files = json.loads((folder / "files.json").read_text())
        history = json.loads((folder / "history.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{folder}: unreadable ({exc})") from None
    problem = inconsistency(arrays, files, history)
    if problem:
        raise ModelNotFoundError(f"{folder}: {problem}")
    arrays["groups"] = arrays["groups"].astype(np.int64)
    return Version(id=manifest["id"], path=folder, manifest=manifest, files=files, history=history, **arrays)


def inconsistency(arrays: dict, files, history) -> str | None:
    """What is wrong between a version's arrays and file list, or None when they agree."""
    vectors, groups, centres, coords = (arrays[name] for name in ARRAYS)
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("path"), str) for f in files):
        return "files.json is not a list of files"
    if not isinstance(history, dict):
        return "history.json is not a mapping"
    n = len(files)
    if vectors.ndim != 2 or len(vectors) != n or not np.issubdtype(vectors.dtype, np.floating):
        return f"vectors {vectors.shape} do not match {n} files"
    if groups.shape != (n,) or not np.issubdtype(groups.dtype, np.integer):
        return f"groups {groups.shape} do not match {n} files"
    if centres.ndim != 2 or len(centres) < 1 or centres.shape[1] != vectors.shape[1]:
        return f"group centres {centres.shape} do not match vectors {vectors.shape}"
    if n and (groups.min() < 0 or groups.max() >= len(centres)):
        return "groups refer to centres that do not exist"
    if coords.shape != (n, 2):
        return f"map {coords.shape} does not match {n} files"
    return None


def candidates(model_dir) -> list[str]:
    """Version ids to try, best first: CURRENT, then the others newest first."""
    wanted = current_id(model_dir)
    others = [m["id"] for m in list_versions(model_dir) if m.get("id") != wanted and not m.get("damaged")]
    return ([wanted] if wanted else []) + others


def load_version(model_dir, version_id: str | None = None) -> Version:
    """The given version, or the current one; a damaged current version falls back to the newest intact."""
    model_dir = Path(model_dir)
    if version_id:
        return read_version(version_folder(model_dir, version_id))
    for i, candidate in enumerate(candidates(model_dir)):
        try:
            return read_version(version_folder(model_dir, candidate))
        except ModelNotFoundError as exc:
            what = "current version is damaged" if i == 0 and candidate == current_id(model_dir) else "skipping damaged version"
            log.warning("%s (%s); falling back to the newest intact one", what, exc)
    raise no_model(model_dir)


def no_model(model_dir) -> ModelNotFoundError:
    if list_versions(model_dir):
        return ModelNotFoundError(f"no intact model version in {model_dir}: every version is damaged; "
                                  "run `imgsim train` to make a new one")
    return ModelNotFoundError(f"no trained model in {model_dir} yet: run `imgsim train --images DIR` first")
