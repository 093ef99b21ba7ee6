"""A version's local image features by image id, for re-checking search results (imgsim.search.rerank).

They live in the same content-addressed `segments/` folder as the records and vectors: a training run
writes one segment for every image, an `index` run one for the images it adds (or that lack them), and
removed images' features are dropped once they pass a share, as records are. The version's manifest
says which segments hold them and how they were made::

    "keypoints": {"format": 1, "side": 128, "keypoints": 160, "segments": [
        {"rows": N, "ids": F, "counts": F, "points": F, "angles": F, "levels": F, "descriptors": F}]}

Every file is named by its sha256 and verified when opened; each array's type and shape are checked
against the entry's row count from its header alone (memory-mapped, so a file that claims more than
it holds is refused, never read into memory). Features made another way than the reader's `Layout`
(another format, side or keypoint count) are not used: search then keeps the latents' order. This
module only stores arrays; what they mean is imgsim.features.local's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgsim.core.errors import ModelNotFoundError
from imgsim.core.files import fsync_path, open_array, write_array
from imgsim.storage.folder import ModelFolder

MANIFEST_KEY = "keypoints"
COLUMNS = ("ids", "counts", "points", "angles", "levels", "descriptors")
MAX_DEAD_SHARE = 0.25  # above this share of features of removed images, `carried` rewrites the live ones
MAX_SEGMENTS = 16


@dataclass(frozen=True)
class Layout:
    """How features are made: a reader uses stored ones only when they were made the way it makes a query's."""

    format: int
    side: int
    keypoints: int  # per image at most (rows are padded to it)
    descriptor_bytes: int

    def matches(self, value: dict) -> bool:
        return (value.get("format"), value.get("side"), value.get("keypoints"), value.get("descriptor_bytes")) == (
            self.format, self.side, self.keypoints, self.descriptor_bytes)

    def shapes(self, rows: int) -> dict:
        k = self.keypoints
        return {"ids": (np.int64, (rows,)), "counts": (np.uint16, (rows,)), "points": (np.float16, (rows, k, 2)),
                "angles": (np.float16, (rows, k)), "levels": (np.uint8, (rows, k)),
                "descriptors": (np.uint8, (rows, k, self.descriptor_bytes))}


def save_segment(model_dir, layout: Layout, columns: dict) -> dict:
    """Write one segment: `columns` holds ids (n,) and counts, points, angles, levels, descriptors as
    `layout.shapes(n)` describes them (cast to its types). Returns the segment's entry."""
    rows = len(columns["ids"])
    folder = ModelFolder(model_dir).segments
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"rows": rows}
    for name, (dtype, shape) in layout.shapes(rows).items():
        array = np.asarray(columns[name])
        if array.shape != shape:
            raise ValueError(f"keypoints column {name}: shape {array.shape}, expected {shape}")
        entry[name] = write_array(folder, f".kp.{name}.npy", array.astype(dtype, copy=False))
    fsync_path(folder)
    return entry


def manifest_value(layout: Layout, segments: list) -> dict:
    """What a version's manifest holds under MANIFEST_KEY."""
    return {"format": layout.format, "side": layout.side, "keypoints": layout.keypoints,
            "descriptor_bytes": layout.descriptor_bytes, "segments": list(segments)}


def segments_of(manifest: dict, layout: Layout) -> list:
    """The segment entries a version's manifest lists: none for a version made before features, or otherwise."""
    value = manifest.get(MANIFEST_KEY)
    if not isinstance(value, dict) or not layout.matches(value) or not isinstance(value.get("segments"), list):
        return []
    return list(value["segments"])


def segment_files(manifest: dict) -> set[str]:
    """Every file name the version's features use, whatever their layout (prune keeps them)."""
    value = manifest.get(MANIFEST_KEY)
    names = set()
    for entry in value.get("segments", []) if isinstance(value, dict) else []:
        if isinstance(entry, dict):
            names.update(entry.get(c) for c in COLUMNS if isinstance(entry.get(c), str))
    return names


class KeypointStore:
    """A version's stored features, memory-mapped; `gather(ids)` stacks those of any ids."""

    def __init__(self, model_dir, layout: Layout, segments: list, verify: bool = True):
        folder = ModelFolder(model_dir).segments
        self.layout = layout
        self.parts = []
        for entry in segments:
            rows = entry.get("rows") if isinstance(entry, dict) else None
            if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
                raise ModelNotFoundError(f"{model_dir}: a keypoints segment entry is malformed")
            part = {name: open_array(folder, entry.get(name), verify, dtype, shape, mmap=True)
                    for name, (dtype, shape) in layout.shapes(rows).items()}
            if rows and int(part["counts"].max()) > layout.keypoints:
                raise ModelNotFoundError(f"{folder}: a keypoints segment counts more keypoints than it holds")
            self.parts.append(part)
        ids = [np.asarray(part["ids"]) for part in self.parts]
        self.ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        self.segment = np.repeat(np.arange(len(ids), dtype=np.int64), [len(i) for i in ids])
        self.position = np.concatenate([np.arange(len(i), dtype=np.int64) for i in ids]) if ids else self.segment
        self.order = np.argsort(self.ids, kind="stable")
        self.sorted = self.ids[self.order]

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, ids) -> np.ndarray:
        """Each id's row in the store, -1 where it has no features."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        if not len(self.sorted):
            return np.full(len(ids), -1, np.int64)
        at = np.searchsorted(self.sorted, ids).clip(0, len(self.sorted) - 1)
        return np.where(self.sorted[at] == ids, self.order[at], -1)

    def gather(self, ids) -> dict:
        """The columns for these ids, stacked in their order (float32 points and angles); an id without
        features gets a count of 0."""
        rows = self.rows_of(ids)
        n = len(rows)
        out = {name: np.zeros(shape, np.float32 if name in ("points", "angles") else dtype)
               for name, (dtype, shape) in self.layout.shapes(n).items()}
        out["ids"][:] = np.asarray(ids, np.int64).reshape(-1)
        found = rows >= 0
        for number, part in enumerate(self.parts):
            here = np.flatnonzero(found)[self.segment[rows[found]] == number]
            if len(here):
                at = self.position[rows[here]]
                for name in COLUMNS[1:]:
                    out[name][here] = part[name][at]  # reads these rows of the memory-mapped file only
        return out


def open_store(model_dir, manifest: dict, layout: Layout, verify: bool = True) -> KeypointStore | None:
    """The version's features, or None when it has none made this `layout`'s way."""
    segments = segments_of(manifest, layout)
    return KeypointStore(model_dir, layout, segments, verify) if segments else None


def carried(model_dir, layout: Layout, segments: list, live_ids) -> list:
    """The segments as they are, or one segment of the live ids' features once removed images' features pass
    MAX_DEAD_SHARE (or segments pile up)."""
    if not segments:
        return []
    store = KeypointStore(model_dir, layout, segments, verify=False)
    kept = np.isin(store.ids, np.asarray(live_ids, np.int64))
    if (1 - kept.mean() if len(kept) else 0) <= MAX_DEAD_SHARE and len(segments) <= MAX_SEGMENTS:
        return list(segments)
    return [save_segment(model_dir, layout, store.gather(np.unique(store.ids[kept])))]
