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
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from .errors import BusyError, ModelNotFoundError

log = logging.getLogger(__name__)

ARRAYS = ("vectors", "groups", "centres", "map2d")
MODEL_FILE = "model.keras"


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


@contextlib.contextmanager
def writer_lock(model_dir):
    """Hold the model folder's lock, or raise BusyError at once if a run already holds it."""
    model_dir = Path(model_dir)
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


def set_current(model_dir, version_id: str) -> None:
    """Point CURRENT at a complete version, atomically (write a temporary file, fsync, rename)."""
    model_dir = Path(model_dir)
    if not (model_dir / "versions" / version_id / "manifest.json").is_file():
        raise ModelNotFoundError(f"{model_dir}: no complete version {version_id!r}")
    tmp = model_dir / f".CURRENT.{secrets.token_hex(4)}"
    tmp.write_text(version_id + "\n")
    fsync_path(tmp)
    os.replace(tmp, model_dir / "CURRENT")
    fsync_path(model_dir)


def current_id(model_dir) -> str | None:
    try:
        return (Path(model_dir) / "CURRENT").read_text().strip() or None
    except OSError:
        return None


def list_versions(model_dir) -> list[dict]:
    """Manifests of the complete versions, newest first (damaged ones are marked, not hidden)."""
    root = Path(model_dir) / "versions"
    manifests = []
    for folder in sorted(root.iterdir(), reverse=True) if root.is_dir() else []:
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = {"id": folder.name, "damaged": True}
        manifests.append(manifest)
    return manifests


def verify(folder: Path) -> dict:
    """The version's manifest, after checking every file against its checksum."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{folder}: manifest missing or unreadable ({exc})") from None
    for name, expected in manifest.get("checksums", {}).items():
        path = folder / name
        if not path.is_file() or sha256_of(path) != expected:
            raise ModelNotFoundError(f"{folder}: {name} is missing or damaged")
    return manifest


def read_version(folder: Path) -> Version:
    manifest = verify(folder)
    arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
    return Version(
        id=manifest["id"],
        path=folder,
        manifest=manifest,
        files=json.loads((folder / "files.json").read_text()),
        history=json.loads((folder / "history.json").read_text()),
        **arrays,
    )


def load_version(model_dir, version_id: str | None = None) -> Version:
    """The given version, or the current one; a damaged current version falls back to the newest intact."""
    model_dir = Path(model_dir)
    if version_id:
        return read_version(model_dir / "versions" / version_id)
    wanted = current_id(model_dir)
    if wanted:
        try:
            return read_version(model_dir / "versions" / wanted)
        except ModelNotFoundError as exc:
            log.warning("current version is damaged (%s); falling back to the newest intact one", exc)
    for manifest in list_versions(model_dir):
        if manifest.get("id") == wanted or manifest.get("damaged"):
            continue
        try:
            return read_version(model_dir / "versions" / manifest["id"])
        except ModelNotFoundError as exc:
            log.warning("skipping damaged version: %s", exc)
    raise ModelNotFoundError(f"no trained model in {model_dir} yet: run `imgsim train --images DIR` first")
