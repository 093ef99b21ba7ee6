"""A version's manifest: what the run that wrote it says about it, in one type with one constructor.

`imgsim.storage.store.write_version` adds what only the store knows (STORE_FIELDS: the format, the
new id, the record segments, the engine state and the checksums) and writes manifest.json.
Training and indexing both build a `Manifest`; readers get the written JSON back as a dict
(`Version.manifest`), whose keys are the fields named here and in STORE_FIELDS.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

KINDS = ("train", "preview", "index")
# Written by the store, never by a run: the format, the version's id, its record segments, its
# engine state (VectorEngine.save) and the SHA-256 of every file in the version folder.
STORE_FIELDS = ("format", "id", "records", "engine", "checksums")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Manifest:
    """What a training or indexing run records about the version it writes."""

    kind: str  # "train", "preview" (an early version of a first training) or "index"
    settings: dict  # Settings.training_dict(): every knob that shapes the model
    images_root: str = ""  # the folder the version was made from (where `index` looks by default)
    parent: str | None = None  # the version this one follows (its group names carry over from it)
    fingerprint: str = ""  # of the files scanned (imgsim.inputs.collection.fingerprint)
    metrics: dict = field(default_factory=dict)  # images, twin measures, silhouette, steps, timings, ...
    libraries: dict = field(default_factory=dict)  # Python, the Keras backend and the libraries, with versions
    skipped_files: list = field(default_factory=list)  # unreadable files, retried by `index` once they change
    # the images' local features for re-checking search results (imgsim.storage.keypoints); empty when none
    keypoints: dict = field(default_factory=dict)
    created: str = field(default_factory=utc_now)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"a version's kind is one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.settings, dict) or "image_size" not in self.settings:
            raise ValueError("a manifest needs the training settings, the image size among them")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(Manifest)) + STORE_FIELDS
