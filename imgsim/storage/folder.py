"""The model folder's layout: every path under a model folder is named here, and nowhere else.

    CURRENT                     the active version's id (imgsim.storage.store)
    .lock                       the one writer at a time: training, indexing, pruning
    .launch.lock                starting the background job (imgsim.runs.jobs)
    staging/                    versions being written, or removed by prune; anything here is unfinished
    versions/<id>/              one complete version: model.keras, centres.npy, history.json, manifest.json
    segments/                   immutable content-addressed files shared by versions (records, engines, keypoints)
    labels/<id>.json            a version's group names (imgsim.storage.group_names)
    annotations/labels.json     a person's labels, and log.jsonl their undo log, .lock one writer
    annotations/graphs/<id>-k<k>.npz   a version's cached kNN graph (imgsim.labelling)
    duplicates/<id>/            a version's scan for copies: signatures.npz, scan.npz, .scan.lock, scan.log
                                (imgsim.duplicates)
    thumbnails/<id>/<px>/<image id>.jpg   a version's display thumbnails, made at first use (imgsim.inputs.thumbnails)
    training.json               the background run's status; training-settings.json its settings; training.log its output

docs/architecture.md describes what each file holds.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from imgsim.core.ids import is_version_id

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
CENTRES_FILE = "centres.npy"
HISTORY_FILE = "history.json"
VERSION_FILES = (MODEL_FILE, CENTRES_FILE, HISTORY_FILE)  # besides the manifest, which lists their checksums
# A version written by imgsim 0.1 keeps whole arrays in its folder.
LEGACY_FILES = (MODEL_FILE, "files.json", HISTORY_FILE, "vectors.npy", "groups.npy", CENTRES_FILE, "map2d.npy")
SEGMENTS = "segments"


class ModelFolder:
    """Paths under one model folder. Creating one touches nothing on disk."""

    def __init__(self, root):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelFolder({str(self.root)!r})"

    # -- versions --------------------------------------------------------------------------------
    @property
    def current(self) -> Path:
        return self.root / "CURRENT"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    def version(self, version_id: str) -> Path:
        """versions/<id>; the id is not checked here (imgsim.storage.store.version_folder does)."""
        return self.versions / version_id

    @property
    def segments(self) -> Path:
        return self.root / SEGMENTS

    # -- names and labels, outside the immutable versions ------------------------------------------
    def group_names(self, version_id: str) -> Path:
        """labels/<id>.json: a version's group names."""
        if not is_version_id(version_id):
            raise ValueError(f"not a version id: {version_id!r}")
        return self.root / "labels" / f"{version_id}.json"

    @property
    def annotations(self) -> Path:
        return self.root / "annotations"

    @property
    def labels(self) -> Path:
        """annotations/labels.json: a person's labels, replaced whole."""
        return self.annotations / "labels.json"

    @property
    def label_log(self) -> Path:
        """annotations/log.jsonl: one line per change, what undo restores."""
        return self.annotations / "log.jsonl"

    @property
    def labels_lock(self) -> Path:
        return self.annotations / ".lock"

    @property
    def graphs(self) -> Path:
        return self.annotations / "graphs"

    def graph(self, version_id: str, k: int) -> Path:
        """annotations/graphs/<id>-k<k>.npz: a version's cached k-nearest-neighbour graph."""
        return self.graphs / f"{version_id}-k{int(k)}.npz"

    def graphs_of(self, version_id: str) -> list[Path]:
        """The cached graphs of one version (any k), and nothing else that happens to match a glob."""
        pattern = re.compile(rf"{re.escape(version_id)}-k[0-9]+\.npz")
        return [p for p in self.graphs.glob(f"{glob.escape(version_id)}-k*.npz") if pattern.fullmatch(p.name)]

    # -- a version's scan for copies (imgsim.duplicates), outside the immutable versions -------------
    def scan_folder(self, version_id: str) -> Path:
        """duplicates/<id>/: a version's image signatures and its last finished scan; it goes with the version."""
        if not is_version_id(version_id):
            raise ValueError(f"not a version id: {version_id!r}")
        return self.root / "duplicates" / version_id

    # -- a version's display thumbnails (imgsim.inputs.thumbnails), outside the immutable versions ---
    def thumbnail_folder(self, version_id: str) -> Path:
        """thumbnails/<id>/: a version's display thumbnails, a cache made again when damaged; it goes with the version."""
        if not is_version_id(version_id):
            raise ValueError(f"not a version id: {version_id!r}")
        return self.root / "thumbnails" / version_id

    # -- the background run ----------------------------------------------------------------------
    @property
    def launch_lock(self) -> Path:
        return self.root / ".launch.lock"

    @property
    def training_status(self) -> Path:
        return self.root / "training.json"

    @property
    def training_settings(self) -> Path:
        return self.root / "training-settings.json"

    @property
    def training_log(self) -> Path:
        return self.root / "training.log"
