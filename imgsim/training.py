"""Learning a collection: train the autoencoder, encode every image, group and map them, save a version.

`train` and `index` are the two writers of a model folder. Both hold its lock, both stream
images in batches, and both finish by writing one complete version (store.write_version).
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .collection import FileInfo, Skipped, encode_files, fingerprint, scan_folder
from .config import Settings
from .errors import ImgsimError
from .fit import fit_autoencoder
from .groups import fit_groups, predict_groups, silhouette_by_k
from .layout import map_2d
from .model import compile_encoder, keras, load_autoencoder

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    pass


@dataclass
class RunReport:
    """What a training or indexing run did, for the CLI and the dashboard to show."""

    version: str | None
    images: int
    skipped: Skipped = field(default_factory=Skipped)
    added: int = 0
    removed: int = 0
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)

    def summary(self) -> str:
        if self.version is None:
            return f"no changes: {self.images} images already indexed; {self.skipped.summary()}"
        parts = [f"version {self.version}: {self.images} images in {self.seconds:.0f} s"]
        if self.added or self.removed:
            parts.append(f"{self.added} added, {self.removed} removed")
        parts.append(self.skipped.summary())
        return "; ".join(parts)


def library_versions() -> dict:
    import sklearn
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__}


def file_records(files: list[FileInfo], positions: list[int], hashes: list[str]) -> list[dict]:
    return [{"path": files[p].path, "size": files[p].size, "mtime_ns": files[p].mtime_ns, "sha1": h}
            for p, h in zip(positions, hashes)]


def train(settings: Settings, progress: Progress = no_progress) -> RunReport:
    """Train a new model version on `settings.images` and make it current."""
    start = time.monotonic()
    with store.writer_lock(settings.model_dir):
        store.clear_staging(settings.model_dir)
        skipped = Skipped()  # the scan's, then the files that fail to decode
        files = scan_folder(settings.images, settings.follow_links, skipped)
        if len(files) < 2:
            raise ImgsimError(f"{settings.images}: found {len(files)} image(s); at least 2 are needed to train "
                              f"({skipped.summary()})")
        paths = [f.path for f in files]
        progress(0.0, f"training on {len(paths)} images")
        autoencoder, history = fit_autoencoder(paths, settings, skipped, progress, share=0.85)
        train_seconds = time.monotonic() - start
        encoder = autoencoder.get_layer("encoder")
        kept, vectors, hashes, failures = encode_files(
            compile_encoder(encoder), paths, settings.image_size, settings.workers, progress, 0.85, 0.1)
        for path, reason in failures.items():
            skipped.add(path, reason)
        if len(vectors) < 2:
            raise ImgsimError(f"{settings.images}: fewer than 2 readable images ({skipped.summary()})")
        progress(0.95, "grouping and mapping")
        centres, groups = fit_groups(vectors, settings.clusters, settings.seed)
        coords = map_2d(vectors, settings.seed)
        silhouette = silhouette_by_k(vectors, [len(centres)], settings.seed).get(len(centres))
        epochs_run = len(history.get("loss", []))
        metrics = {
            "images": len(vectors),
            "skipped": len(skipped),
            "epochs_run": epochs_run,
            "loss": history["loss"][-1] if history.get("loss") else None,
            "val_loss": min(history["val_loss"]) if history.get("val_loss") else None,
            "train_seconds": round(train_seconds, 1),
            "train_images_per_second": round(epochs_run * len(paths) / max(train_seconds, 1e-9), 1),
            "silhouette": silhouette,
        }
        manifest = {
            "kind": "train",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "images_root": str(Path(settings.images).resolve()),
            "fingerprint": fingerprint(files),
            "settings": settings.training_dict(),
            "metrics": metrics,
            "libraries": library_versions(),
            "skipped_files": skipped_records(files, skipped),
        }
        version = store.write_version(
            settings.model_dir,
            manifest=manifest,
            files=file_records(files, kept, hashes),
            arrays={"vectors": vectors, "groups": groups, "centres": centres, "map2d": coords},
            history=history,
            save_model=lambda path: autoencoder.save(path),
        )
        progress(1.0, f"saved version {version}")
        return RunReport(version, len(vectors), skipped, seconds=time.monotonic() - start, metrics=metrics)


def index(settings: Settings, progress: Progress = no_progress) -> RunReport:
    """Encode files added since the current version and drop removed ones, without retraining."""
    start = time.monotonic()
    with store.writer_lock(settings.model_dir):
        store.clear_staging(settings.model_dir)
        version = store.load_version(settings.model_dir)
        scanned = Skipped()
        files = scan_folder(settings.images, settings.follow_links, scanned)
        current = {f.path: f.key for f in files}
        unchanged = [i for i, rec in enumerate(version.files) if current.get(rec["path"]) == record_key(rec)]
        # Unreadable files stay skipped until they change: no new version just to fail on them again.
        still_bad = [rec for rec in version.manifest.get("skipped_files", []) if current.get(rec["path"]) == record_key(rec)]
        known = {version.files[i]["path"] for i in unchanged} | {rec["path"] for rec in still_bad}
        new_files = [f for f in files if f.path not in known]
        removed = len(version.files) - len(unchanged)
        skipped = Skipped({rec["path"]: rec["reason"] for rec in still_bad} | scanned.reasons, scanned.not_images)
        if not new_files and not removed:
            return RunReport(None, len(version.files), skipped, seconds=time.monotonic() - start)
        progress(0.0, f"encoding {len(new_files)} new images")
        size = version.image_size
        encoder = load_autoencoder(version.model_path).get_layer("encoder")
        kept, new_vectors, hashes, failures = encode_files(
            compile_encoder(encoder), [f.path for f in new_files], size, settings.workers, progress, 0.0, 0.8)
        for path, reason in failures.items():
            skipped.add(path, reason)
        new_vectors = new_vectors.reshape(-1, version.vectors.shape[1])
        vectors = np.concatenate([version.vectors[unchanged], new_vectors]).astype(np.float32)
        if len(vectors) < 2:
            raise ImgsimError(f"{settings.images}: fewer than 2 readable images left ({skipped.summary()})")
        groups = np.concatenate([version.groups[unchanged], predict_groups(new_vectors, version.centres) if len(new_vectors) else []]).astype(np.int32)
        progress(0.85, "mapping")
        coords = map_2d(vectors, int(version.manifest["settings"].get("seed", 0)))
        records = [version.files[i] for i in unchanged] + file_records(new_files, kept, hashes)
        metrics = {**version.manifest.get("metrics", {}), "images": len(vectors), "skipped": len(skipped)}
        manifest = {
            **{k: version.manifest[k] for k in ("settings", "libraries", "images_root") if k in version.manifest},
            "kind": "index",
            "parent": version.id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "images_root": str(Path(settings.images).resolve()),
            "fingerprint": fingerprint(files),
            "metrics": metrics,
            "skipped_files": skipped_records(files, skipped),
        }
        new_id = store.write_version(
            settings.model_dir,
            manifest=manifest,
            files=records,
            arrays={"vectors": vectors, "groups": groups, "centres": version.centres, "map2d": coords},
            history=version.history,
            save_model=lambda path: link_or_copy(version.model_path, path),
        )
        progress(1.0, f"saved version {new_id}")
        added = len(new_vectors)
        return RunReport(new_id, len(vectors), skipped, added=added, removed=removed,
                         seconds=time.monotonic() - start, metrics=metrics)


def record_key(record: dict) -> tuple:
    return (record["path"], record["size"], record["mtime_ns"])


def skipped_records(files: list[FileInfo], skipped: Skipped) -> list[dict]:
    """Unreadable files with their size and mtime, so `index` retries them only once they change."""
    by_path = {f.path: f for f in files}
    return [{"path": p, "size": by_path[p].size, "mtime_ns": by_path[p].mtime_ns, "reason": reason}
            for p, reason in skipped.reasons.items() if p in by_path]


def link_or_copy(src: Path, dst: Path) -> None:
    """Versions are immutable, so an unchanged model file can be shared by a hard link."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
