"""Model versions on disk: written whole or not at all, verified on load, one writer at a time.

The folder's layout is imgsim.storage.folder's (ModelFolder); a version folder holds model.keras,
centres.npy, history.json and manifest.json, which lists the version's record segments and its
engine state, with checksums.

Segments are written first (a crash leaves only unreferenced files), then the version folder in
staging/, every file fsynced, renamed into versions/, and only then does CURRENT change. A
reader resolves CURRENT once and reads that version, whose files are never modified afterwards,
so it sees one version whole. An `index` run writes one segment of new records and vectors and
small dead-row files, never the collection again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from imgsim.core.errors import BusyError, ImgsimError, ModelNotFoundError
from imgsim.core.files import fsync_path, sha256_of, write_atomic
from imgsim.core.ids import is_version_id, new_version_id  # CURRENT and `versions --use` name one, never a path
from imgsim.core.text import one_line
from imgsim.storage.folder import (
    CENTRES_FILE,
    HISTORY_FILE,
    LEGACY_FILES,
    MANIFEST_FILE,
    MODEL_FILE,
    VERSION_FILES,
    ModelFolder,
)
from imgsim.storage.manifest import Manifest
from imgsim.storage.records import Records

log = logging.getLogger(__name__)

FORMAT = 2


@dataclass
class Version:
    """One complete, verified model version loaded from disk; its model and engine load lazily."""

    id: str
    path: Path
    manifest: dict
    records: Records
    centres: np.ndarray
    history: dict
    engine_: object = None  # a loaded VectorEngine, once `engine()` was called (or a legacy version's)

    @property
    def model_dir(self) -> Path:
        return self.path.parent.parent

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def image_size(self) -> int:
        return int(self.manifest["settings"]["image_size"])

    @property
    def paths(self) -> list[str]:
        return self.records.paths

    @property
    def files_root(self) -> str | None:
        """The folder this version's files are read inside (imgsim.core.files.open_plain): its images folder; None
        (anywhere, regular files only) when it was made following links out of it (--follow-links) or names none."""
        settings = self.manifest.get("settings")
        if isinstance(settings, dict) and settings.get("follow_links") is True:
            return None
        root = self.manifest.get("images_root")
        return root if isinstance(root, str) and root else None

    @property
    def ids(self) -> np.ndarray:
        return self.records.ids

    @property
    def groups(self) -> np.ndarray:
        return self.records.groups

    @property
    def map2d(self) -> np.ndarray:
        return self.records.map2d

    def __len__(self) -> int:
        return len(self.records)

    def engine(self, name: str | None = None):
        """The version's vector engine (the one it was saved with, or `name` over the same data)."""
        from imgsim.storage.engines import can_open, load_engine

        if self.engine_ is not None and name in (None, self.engine_.name):
            return self.engine_
        state = self.manifest.get("engine")
        if name is not None and state is not None and not can_open(name, state):  # no shared files: move the vectors
            return copy_engine(self.engine(), name)
        engine = load_engine(self.model_dir, state, name)
        if name is None:
            self.engine_ = engine
        return engine

    @property
    def vectors(self) -> np.ndarray:
        """Every live vector in record order, (n, d) float32: for whole-collection work (KMeans, evaluation)."""
        if not hasattr(self, "_vectors"):
            ids, parts = [], []
            for batch_ids, batch_vectors, _ in self.engine().items():
                ids.append(batch_ids)
                parts.append(np.asarray(batch_vectors, np.float32))
            ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
            vectors = np.concatenate(parts) if parts else np.zeros((0, self.centres.shape[1]), np.float32)
            rows = self.records.rows_of(ids)
            if len(ids) != len(self.records) or (rows < 0).any():
                raise ModelNotFoundError(f"{self.path}: the vector engine and the records disagree")
            out = np.empty_like(vectors)
            out[rows] = vectors
            self._vectors = out
        return self._vectors


def copy_engine(source, name: str, **options):
    """A new engine of another kind holding the same ids, vectors and groups (no re-encoding)."""
    from imgsim.storage.engines import make_engine

    engine = make_engine(name, **options)
    for ids, vectors, groups in source.items():
        engine.add(ids, vectors, groups)
    return engine


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
        lock = FileLock(ModelFolder(model_dir).lock)
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
    shutil.rmtree(ModelFolder(model_dir).staging, ignore_errors=True)


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def write_version(model_dir, *, manifest: Manifest, records: list, engine: dict, centres: np.ndarray,
                  history: dict, save_model, make_current: bool = True) -> str:
    """Write a complete version over segments already written, and (by default) make it current.

    `manifest` is what the run says of the version (imgsim.storage.manifest); `records` are the record segment entries (imgsim.storage.records), `engine` the engine state
    (VectorEngine.save); `save_model(path)` writes the `.keras` file (saving it, or linking the
    parent's). Call with the writer lock held. A failure or a kill at any point leaves only a
    folder in staging/ and unreferenced segment files.
    """
    model_dir = Path(model_dir)
    folder = ModelFolder(model_dir)
    version_id = new_version_id()
    staging = folder.staging / version_id
    with writable(model_dir):
        staging.mkdir(parents=True)
        try:
            save_model(staging / MODEL_FILE)
            np.save(staging / CENTRES_FILE, np.asarray(centres, np.float32), allow_pickle=False)
            write_json(staging / HISTORY_FILE, history)
            checksums = {p.name: sha256_of(p) for p in sorted(staging.iterdir())}
            written = {**manifest.as_dict(), "format": FORMAT, "id": version_id, "records": records, "engine": engine,
                       "checksums": checksums}
            write_json(staging / MANIFEST_FILE, written)
            for p in staging.iterdir():
                fsync_path(p)
            fsync_path(staging)
            folder.versions.mkdir(exist_ok=True)
            os.rename(staging, folder.version(version_id))
            fsync_path(folder.versions)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if make_current:
        set_current(model_dir, version_id)
    return version_id


def save_collection(model_dir, engine_name: str, records: Records, vectors: np.ndarray, options=None) -> tuple[list, dict]:
    """Write records and vectors as new segments; returns (record entries, engine state) for `write_version`."""
    from imgsim.storage.engines import make_engine
    from imgsim.storage.records import save_segment

    engine = make_engine(engine_name, **(options or {}))
    engine.add(records.ids, vectors, records.groups)
    state = engine.save(model_dir)
    return [save_segment(model_dir, records)], state


def version_folder(model_dir, version_id) -> Path:
    """The folder of a listed version; anything else (a path, `..`, a link out of versions/) is refused."""
    root = ModelFolder(model_dir).versions
    if not is_version_id(version_id):
        raise ModelNotFoundError(f"{root}: '{version_id}' is not a version id (see `imgsim versions`)")
    folder = root / version_id
    if folder.is_symlink() or not folder.is_dir():
        raise ModelNotFoundError(f"{root}: no version {version_id}")
    return folder


def set_current(model_dir, version_id: str) -> None:
    """Point CURRENT at a complete, intact version, atomically (write a temporary file, fsync, rename)."""
    model_dir = Path(model_dir)
    verify(version_folder(model_dir, version_id))
    with writable(model_dir):
        write_atomic(ModelFolder(model_dir).current, version_id + "\n")


def current_id(model_dir) -> str | None:
    """The id CURRENT names, or None when there is none or it names no version id (a path, say)."""
    try:
        wanted = ModelFolder(model_dir).current.read_text(errors="replace").strip()
    except OSError:
        return None
    if wanted and not is_version_id(wanted):
        log.warning("%s/CURRENT names %r, not a version id; ignoring it", model_dir, one_line(wanted))
        return None
    return wanted or None


def list_versions(model_dir) -> list[dict]:
    """Manifests of the versions, newest first (damaged ones are marked, not hidden; strays are ignored)."""
    root = ModelFolder(model_dir).versions
    manifests = []
    for folder in sorted(root.iterdir(), reverse=True) if root.is_dir() else []:
        if not is_version_id(folder.name) or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text())
            if not isinstance(manifest, dict) or manifest.get("id") != folder.name:
                raise ValueError("manifest does not describe this folder")
        except (OSError, ValueError):
            manifest = {"id": folder.name, "damaged": True}
        manifests.append(manifest)
    return manifests


def verify(folder: Path) -> dict:
    """The version's manifest, after checking it and every file against its checksum.

    Every file in the folder must be listed in `checksums` and match it; a manifest that lacks
    what a version needs, or names another folder, makes the version damaged. (Segment files are
    named by their own sha256 and checked when they are opened.)
    """
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{folder}: manifest missing or unreadable ({exc})") from None
    checksums = manifest.get("checksums") if isinstance(manifest, dict) else None
    settings = manifest.get("settings") if isinstance(manifest, dict) else None
    if not isinstance(checksums, dict) or not isinstance(settings, dict) or manifest.get("id") != folder.name:
        raise ModelNotFoundError(f"{folder}: manifest is incomplete or names another version")
    size = settings.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 512 or size % 16:
        raise ModelNotFoundError(f"{folder}: manifest has no valid image size")
    if manifest.get("format") == FORMAT:
        expected = set(VERSION_FILES)
        if not isinstance(manifest.get("records"), list) or not isinstance(manifest.get("engine"), dict):
            raise ModelNotFoundError(f"{folder}: manifest lists no records or no engine")
    elif "format" not in manifest:
        expected = set(LEGACY_FILES)  # a version written by imgsim 0.1
    else:
        raise ModelNotFoundError(f"{folder}: format {manifest.get('format')} is not one this imgsim reads")
    try:
        present = {p.name for p in folder.iterdir()} - {MANIFEST_FILE}
    except OSError as exc:
        raise ModelNotFoundError(f"{folder}: cannot be listed ({exc.strerror})") from None
    for name in sorted(present | expected | set(checksums)):
        path = folder / name
        if name not in checksums:
            raise ModelNotFoundError(f"{folder}: {name} is not covered by the manifest's checksums")
        if name not in present or path.is_symlink() or not path.is_file() or sha256_of(path) != checksums[name]:
            raise ModelNotFoundError(f"{folder}: {name} is missing or damaged")
    return manifest


def read_version(folder: Path, verify_segments: bool = True) -> Version:
    """A verified version whose parts agree with each other; anything else is ModelNotFoundError (damaged)."""
    manifest = verify(folder)
    if "format" not in manifest:
        return read_legacy_version(folder, manifest)
    try:
        centres = np.load(folder / CENTRES_FILE, allow_pickle=False)
        history = json.loads((folder / HISTORY_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{folder}: unreadable ({exc})") from None
    model_dir = folder.parent.parent
    from imgsim.storage.records import load_records

    records = load_records(model_dir, manifest["records"], verify=verify_segments)
    problem = inconsistency(records, centres, history)
    if problem:
        raise ModelNotFoundError(f"{folder}: {problem}")
    if manifest["engine"].get("rows") not in (None, len(records)):
        raise ModelNotFoundError(f"{folder}: the engine holds {manifest['engine'].get('rows')} vectors "
                                 f"for {len(records)} images")
    return Version(id=manifest["id"], path=folder, manifest=manifest, records=records, centres=centres, history=history)


def read_legacy_version(folder: Path, manifest: dict) -> Version:
    """A version written by imgsim 0.1 (whole arrays in the folder), served through an in-memory exact engine."""
    from imgsim.storage.engines import make_engine
    from imgsim.storage.records import Records

    try:
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in ("vectors", "groups", "centres", "map2d")}
        files = json.loads((folder / "files.json").read_text())
        history = json.loads((folder / HISTORY_FILE).read_text())
        records = Records.build([f["path"] for f in files], [f["size"] for f in files], [f["mtime_ns"] for f in files],
                                [f["sha1"] for f in files], arrays["groups"], arrays["map2d"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(f"{folder}: unreadable ({type(exc).__name__}: {exc})") from None
    problem = inconsistency(records, arrays["centres"], history, arrays["vectors"])
    if problem:
        raise ModelNotFoundError(f"{folder}: {problem}")
    engine = make_engine("exact").add(records.ids, arrays["vectors"], records.groups)
    return Version(id=manifest["id"], path=folder, manifest=manifest, records=records, centres=arrays["centres"],
                   history=history, engine_=engine)


def inconsistency(records, centres, history, vectors=None) -> str | None:
    """What is wrong between a version's parts, or None when they agree."""
    if not isinstance(history, dict):
        return "history.json is not a mapping"
    n, groups = len(records), records.groups
    if centres.ndim != 2 or len(centres) < 1 or not np.issubdtype(centres.dtype, np.floating):
        return f"group centres {centres.shape} are not a table"
    if vectors is not None and (vectors.ndim != 2 or len(vectors) != n or vectors.shape[1] != centres.shape[1]):
        return f"vectors {vectors.shape} do not match {n} files"
    if n and (groups.min() < 0 or groups.max() >= len(centres)):
        return "groups refer to centres that do not exist"
    if records.has_duplicate_ids():
        return "an image id appears twice"
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


def link_or_copy(src: Path, dst: Path) -> None:
    """Versions are immutable, so an unchanged model file can be shared by a hard link."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def version_table(model_dir) -> list[dict]:
    """One row per version, newest first, for the CLI's `versions` and the Train page: what a person compares."""
    current = current_id(model_dir)
    rows = []
    for m in list_versions(model_dir):
        metrics, settings = m.get("metrics") or {}, m.get("settings") or {}
        rows.append({"active": m.get("id") == current, "id": m.get("id"), "kind": m.get("kind", "damaged"),
                     "created": m.get("created"), "images": metrics.get("images"), "groups": settings.get("clusters"),
                     "size": settings.get("image_size"), "latent": settings.get("latent_dim"),
                     "engine": (m.get("engine") or {}).get("engine", "exact" if "format" not in m else None),
                     "twin recall@1": metrics.get("twin_recall@1"), "silhouette": metrics.get("silhouette"),
                     "damaged": bool(m.get("damaged"))})
    return rows


def images_root(model_dir) -> Path:
    """The folder the current version was made from: where `index` looks by default."""
    root = load_version(model_dir).manifest.get("images_root")
    if not root:
        raise ImgsimError(f"{model_dir}: the current version does not say which folder it was made from; pass --images")
    return Path(root)
