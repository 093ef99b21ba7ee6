"""Keeping a collection current without retraining: encode what was added, drop what was removed.

`index` writes only what changed: one segment of new records and vectors, small dead-row files
for removals, and a new version folder that refers to the unchanged segments. Segments are
compacted once removals pass a share (imgsim.storage.records.MAX_DEAD_SHARE, the engines' own
max_dead_share). New images keep the groups' centres (their group is the nearest centre) and are
placed on the map beside their nearest neighbours; group names carry over unchanged.
`index(engine=E)` also moves the collection into another vector engine without re-encoding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgsim.core.config import Settings
from imgsim.core.errors import ImgsimError
from imgsim.inputs.collection import Skipped, fingerprint, scan_folder
from imgsim.learning.groups import predict_groups
from imgsim.learning.projection import place_new
from imgsim.runs.encoding import encode_collection
from imgsim.runs.neighbours import keep_checked_graph
from imgsim.runs.report import Progress, RunReport, no_progress, skipped_records
from imgsim.search import rerank
from imgsim.storage import store
from imgsim.storage.group_names import inherit
from imgsim.storage.manifest import Manifest
from imgsim.storage.records import Records, compacted, remove_rows, save_segment


def record_entries(model_dir, version: store.Version) -> list:
    """The version's record segments; a version written by imgsim 0.1 gets its records written as one."""
    if "format" in version.manifest:
        return list(version.manifest["records"])
    return [save_segment(model_dir, version.records)]


@dataclass
class Changes:
    """What a scan found against a version: the files now there, the new ones, the ids of those gone, and which of
    the version's rows are unchanged."""

    files: list
    new_files: list
    removed_ids: np.ndarray
    skipped: Skipped
    unchanged: np.ndarray


def changes_since(version: store.Version, settings: Settings) -> Changes:
    """Scan the folder; files unchanged since the version are not opened again."""
    records = version.records
    scanned = Skipped()
    known = dict(zip(records.paths, zip(records.sizes.tolist(), records.mtimes.tolist())))
    files = scan_folder(settings.images, settings.follow_links, scanned, known)
    current = {f.path: f.key for f in files}
    unchanged = np.fromiter((current.get(p) == records.key(i) for i, p in enumerate(records.paths)), bool,
                            count=len(records))
    # Unreadable files stay skipped until they change: no new version just to fail on them again.
    still_bad = [rec for rec in version.manifest.get("skipped_files", [])
                 if current.get(rec["path"]) == (rec["path"], rec["size"], rec["mtime_ns"])]
    known = {records.paths[i] for i in np.flatnonzero(unchanged)} | {rec["path"] for rec in still_bad}
    skipped = Skipped({rec["path"]: rec["reason"] for rec in still_bad} | scanned.reasons, scanned.not_images)
    return Changes(files, [f for f in files if f.path not in known], records.ids[~unchanged], skipped, unchanged)


def new_records_of(version: store.Version, changes: Changes, settings: Settings, searchable, ray, progress,
                   found: list | None = None):
    """Encode the new files and place them (group: the nearest centre; map: beside their neighbours); with `found`
    (a list), each kept one's local features are appended to it."""
    new_files = changes.new_files
    progress(0.0, f"encoding {len(new_files)} new images")
    kept, vectors, hashes, failures = encode_collection(version.model_path, [f.path for f in new_files],
                                                        version.image_size, workers=settings.workers, ray=ray,
                                                        progress=progress, start=0.0, share=0.8, features=found)
    for path, reason in failures.items():
        changes.skipped.add(path, reason)
    if len(version.records) - len(changes.removed_ids) + len(kept) < 2:
        raise ImgsimError(f"{settings.images}: fewer than 2 readable images left ({changes.skipped.summary()})")
    progress(0.85, "placing new images")
    vectors = vectors.reshape(len(kept), -1) if len(kept) else np.zeros((0, version.centres.shape[1]), np.float32)
    added = [new_files[p] for p in kept]
    records = Records.build([f.path for f in added], [f.size for f in added], [f.mtime_ns for f in added], hashes,
                            predict_groups(vectors, version.centres) if len(vectors) else [],
                            place_new(vectors, searchable, version.records))
    return records, vectors


def features_lacking(settings: Settings, version: store.Version, unchanged: np.ndarray):
    """(the parent's local features, None when it has none usable: made before them, or damaged; the rows of
    unchanged images without any there, which `index` finds too, once: none with re-checking off)."""
    stored = rerank.open_features(version) if rerank.can_describe(version.image_size) else None
    if not settings.recheck or not rerank.can_describe(version.image_size):
        return stored, np.zeros(0, np.int64)
    rows = np.flatnonzero(unchanged)
    return stored, rows if stored is None else rows[stored.rows_of(version.records.ids[rows]) < 0]


def keypoint_segments(settings: Settings, version: store.Version, stored, lacking: np.ndarray, new_ids, found,
                      live_ids, progress: Progress = no_progress) -> dict:
    """The new version's manifest value for local features: the parent's usable segments (compacted once removed
    images' pass a share), the added images' and those the unchanged images lacked (none of either with re-checking
    off)."""
    if not rerank.can_describe(version.image_size):
        return {}
    model_dir = settings.model_dir
    segments = keypoints_carried(model_dir, version, live_ids) if stored is not None else []
    if len(lacking):
        progress(0.9, f"finding the local features of {len(lacking)} images")
        paths = [version.records.paths[r] for r in lacking.tolist()]
        segments.append(rerank.save_features(model_dir, version.records.ids[lacking],
                                             rerank.describe_files(paths, version.image_size, settings.workers)))
    return rerank.manifest_part(model_dir, segments, new_ids, found)


def keypoints_carried(model_dir, version: store.Version, live_ids) -> list:
    """The parent's keypoint segments still worth keeping (none when they are unusable or damaged)."""
    from imgsim.core.errors import ModelNotFoundError
    from imgsim.storage.keypoints import carried, segments_of

    try:
        return carried(model_dir, rerank.LAYOUT, segments_of(version.manifest, rerank.LAYOUT), live_ids)
    except ModelNotFoundError:
        return []  # damaged: the images lacking features get new ones at the next index


def index(settings: Settings, progress: Progress = no_progress, engine: str | None = None,
          ray: str | None = None) -> RunReport:
    """Encode files added since the current version and drop removed ones; `engine` moves it to another engine.

    `ray` (a Ray cluster's HOST:PORT) encodes the new files on that cluster (imgsim.runs.distributed).
    """
    from imgsim.storage.engines import choose_engine

    if ray:  # before the lock: an unreachable cluster or a missing ray package is one line, nothing touched
        from imgsim.runs.distributed import connect

        connect(ray)

    start = time.monotonic()
    model_dir = settings.model_dir
    with store.writer_lock(model_dir):
        store.clear_staging(model_dir)
        version = store.load_version(model_dir)
        changes = changes_since(version, settings)
        old_state = version.manifest.get("engine") or {}
        wanted = choose_engine(engine, len(version)) if engine else old_state.get("engine", "exact")
        moving = wanted != old_state.get("engine")
        stored, lacking = features_lacking(settings, version, changes.unchanged)
        if not changes.new_files and not len(changes.removed_ids) and not moving and not len(lacking):
            return RunReport(None, len(version), changes.skipped, seconds=time.monotonic() - start)
        searchable = version.engine(wanted) if moving else version.engine()
        found = [] if settings.recheck and rerank.can_describe(version.image_size) else None  # their local features
        new_records, vectors = new_records_of(version, changes, settings, searchable, ray, progress, found)
        searchable.remove(changes.removed_ids)
        searchable.add(new_records.ids, vectors, new_records.groups)
        searchable.compact()
        progress(0.9, "saving")
        engine_state = searchable.save(model_dir)
        entries = remove_rows(model_dir, record_entries(model_dir, version), changes.removed_ids)
        if len(new_records):
            entries.append(save_segment(model_dir, new_records))
        entries = compacted(model_dir, entries)
        live_ids = np.concatenate([version.records.ids[changes.unchanged], new_records.ids])
        keypoints = keypoint_segments(settings, version, stored, lacking, new_records.ids, found or [], live_ids,
                                      progress)
        images = len(version) - len(changes.removed_ids) + len(new_records)
        metrics = {**version.manifest.get("metrics", {}), "images": images, "skipped": len(changes.skipped)}
        manifest = Manifest(kind="index", settings=version.manifest["settings"],
                            images_root=str(Path(settings.images).resolve()), parent=version.id,
                            fingerprint=fingerprint(changes.files), metrics=metrics,
                            libraries=version.manifest.get("libraries") or {}, keypoints=keypoints,
                            skipped_files=skipped_records(changes.files, changes.skipped))
        new_id = store.write_version(model_dir, manifest=manifest, records=entries, engine=engine_state,
                                     centres=version.centres, history=version.history, make_current=False,
                                     save_model=lambda path: store.link_or_copy(version.model_path, path))
        inherit(model_dir, version.id, new_id)  # the same groups: names stay as they are
        keep_checked_graph(model_dir, new_id, progress, 0.95, workers=settings.workers)
        store.set_current(model_dir, new_id)
        progress(1.0, f"saved version {new_id}")
        return RunReport(new_id, images, changes.skipped, added=len(new_records), removed=len(changes.removed_ids),
                         seconds=time.monotonic() - start, metrics=metrics)
