"""Removing old versions, and the files only they used, in an order a kill cannot hurt."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from imgsim.core.errors import ImgsimError
from imgsim.core.files import fsync_path
from imgsim.storage.folder import ModelFolder
from imgsim.storage.group_names import load_names
from imgsim.storage.store import clear_staging, current_id, list_versions, writable, writer_lock

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    removed: list  # version ids removed (or that would be, on a dry run)
    kept: list  # version ids kept, newest first
    files: int  # segment files and cached graphs removed besides the version folders
    before: int  # bytes the model folder held (each file once, however many links it has)
    after: int


def disk_use(folder) -> int:
    """Bytes of the files under `folder`, a file with several hard links counted once."""
    seen, total = set(), 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def versions_to_keep(model_dir, manifests: dict, keep: int) -> list[str]:
    """The `keep` newest intact versions, the current one, and the ancestors holding names not yet carried over."""
    current = current_id(model_dir)
    kept = [i for i, m in manifests.items() if not m.get("damaged")][:keep]
    if current in manifests and current not in kept:
        kept.append(current)
    for child in list(kept):  # names not carried over yet stay with the version that has them
        parent = manifests[child].get("parent")
        while parent in manifests and parent not in kept and load_names(model_dir, parent) \
                and not load_names(model_dir, child):
            kept.append(parent)
            child, parent = parent, manifests[parent].get("parent")
    return sorted(kept, reverse=True)


def unneeded_segments(model_dir, kept: list[dict]) -> list[Path]:
    """Segment files no kept version refers to; refuses (ImgsimError) when a kept one does not say what it needs."""
    from imgsim.storage.engines import unreferenced_files
    from imgsim.storage.keypoints import segment_files as keypoint_files
    from imgsim.storage.records import segment_files

    states, wanted = [], set()
    for m in kept:
        if "format" not in m and not m.get("damaged"):
            continue  # imgsim 0.1: everything is in the version folder
        try:  # a kept version whose segments are not known keeps every segment: nothing is pruned
            if m.get("damaged") or not isinstance(m.get("engine"), dict):
                raise TypeError
            wanted |= segment_files(m["records"]) | keypoint_files(m)
        except (KeyError, TypeError, AttributeError):
            raise ImgsimError(f"{model_dir}: version {m.get('id')} is kept but its manifest does not say which "
                              "segments it needs (damaged?); make another version current first. Nothing was "
                              "pruned") from None
        states.append(m["engine"])
    return [p for p in unreferenced_files(model_dir, states) if p.name not in wanted]


def prune(model_dir, keep: int = 2, dry_run: bool = False) -> PruneReport:
    """Remove all but the `keep` newest intact versions, and the segment files no kept version refers to.

    Never removed: the current version; a version whose group names a kept one descends from and
    does not have itself (they have not been carried over); group names (labels/) and a person's
    labels (annotations/labels.json, log.jsonl). A version goes with its cached neighbour graphs
    (annotations/graphs/<id>-k*.npz) and its scan for copies (duplicates/<id>/). Under the writer lock, in an
    order a kill cannot hurt:
    each version folder is first renamed into staging/ (which the next run clears), so a reader sees
    it whole or not at all, and only then are files no kept version refers to deleted.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ImgsimError(f"--keep must be a whole number of versions, at least 1; got {keep}")
    model_dir = Path(model_dir)
    layout = ModelFolder(model_dir)
    with writer_lock(model_dir):
        clear_staging(model_dir)
        manifests = {m["id"]: m for m in list_versions(model_dir)}  # newest first
        kept = versions_to_keep(model_dir, manifests, keep)
        removed = [i for i in manifests if i not in kept]
        orphans = unneeded_segments(model_dir, [manifests[i] for i in kept])
        graphs = [p for version_id in removed for p in layout.graphs_of(version_id)]
        before = disk_use(model_dir)
        if dry_run:
            return PruneReport(removed, kept, len(orphans) + len(graphs), before, before)
        with writable(model_dir):
            trash = layout.staging
            for version_id in removed:
                trash.mkdir(exist_ok=True)
                os.rename(layout.version(version_id), trash / f"pruned-{version_id}")
                if layout.scan_folder(version_id).is_dir():  # its scan for copies goes with it
                    os.rename(layout.scan_folder(version_id), trash / f"pruned-scan-{version_id}")
                if layout.thumbnail_folder(version_id).is_dir():  # and its display thumbnails
                    os.rename(layout.thumbnail_folder(version_id), trash / f"pruned-thumbnails-{version_id}")
            if removed:
                fsync_path(layout.versions)
            for path in [*graphs, *orphans]:
                path.unlink()
            clear_staging(model_dir)
        log.info("pruned %d version(s) and %d file(s) from %s", len(removed), len(orphans) + len(graphs), model_dir)
        return PruneReport(removed, kept, len(orphans) + len(graphs), before, disk_use(model_dir))
