"""What the public API answers, in one set of shapes for the in-process object and the HTTP one.

`imgsim.open(model_dir)` returns these dataclasses; the HTTP API sends their `to_dict()` as JSON;
`imgsim.Client` turns the JSON back into the same dataclasses with `from_dict`. So a notebook, a
program on another machine and the test that compares them all read one definition.

Image ids are strings of decimal digits: they are 63-bit numbers, and a JSON number past 2**53
loses its last digits in JavaScript. Paths are relative to the folder the version was made from
(never a path of the server).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field


class Answer:
    """`to_dict` / `from_dict` for a dataclass whose fields are plain values, answers, or lists of answers."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value, kind = data[f.name], hints[f.name]
            inner = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
            if isinstance(inner, type) and issubclass(inner, Answer):
                value = [inner.from_dict(item) for item in value]
            values[f.name] = value
        return cls(**values)


@dataclass(frozen=True)
class Hit(Answer):
    id: str
    path: str
    score: float  # cosine similarity, 1.0 for an exact copy
    group: int
    exact: bool = False  # the same bytes as the query
    inliers: int | None = None  # keypoints agreeing by geometry (imgsim.search.rerank); None: not re-checked
    same_scene: bool | None = None  # what they say: the same scene as the query's (imgsim.search.rerank.same_scene)


@dataclass(frozen=True)
class SearchResult(Answer):
    query: str  # the query's name: a file name, a URL, or an image id
    version: str  # the model version that answered
    group: int  # the query's predicted group
    hits: list[Hit] = field(default_factory=list)
    rechecked: int = 0  # the best candidates re-checked by geometry (imgsim.search.rerank); 0: latents alone


@dataclass(frozen=True)
class ImageInfo(Answer):
    id: str
    path: str
    group: int
    bytes: int
    modified_ns: int
    sha1: str


@dataclass(frozen=True)
class Page(Answer):
    """A slice of the collection's images, in the version's order."""

    version: str
    total: int
    offset: int
    images: list[ImageInfo] = field(default_factory=list)


@dataclass(frozen=True)
class Group(Answer):
    group: int
    name: str | None
    images: int


@dataclass(frozen=True)
class VersionInfo(Answer):
    id: str
    active: bool
    kind: str
    created: str | None
    images: int | None
    groups: int | None
    engine: str | None
    damaged: bool = False


@dataclass(frozen=True)
class Suggestion(Answer):
    id: str
    path: str
    suggested: str | None  # the propagated guess, if any
    confidence: float
    reason: str


@dataclass(frozen=True)
class LabelRow(Answer):
    id: str
    path: str
    label: str | None
    source: str  # person, propagated or none
    confidence: float | None


@dataclass(frozen=True)
class LabelChange(Answer):
    changed: int  # images whose label changed
    action: str | None = None  # what an undo reverted (set, clear, import, accept, ...), None when nothing was undone


@dataclass(frozen=True)
class Copy(Answer):
    id: str
    path: str
    score: float
    keep: bool  # the suggested keeper of its group
    match: str | None  # why it is a copy (imgsim.duplicates.MATCHES)


@dataclass(frozen=True)
class CopyGroup(Answer):
    group: int
    exact: bool
    images: list[Copy] = field(default_factory=list)


@dataclass(frozen=True)
class Duplicates(Answer):
    """The copies known for a version without scanning: `near` says whether near copies were scanned for."""

    version: str
    near: bool
    threshold: float | None
    groups: list[CopyGroup] = field(default_factory=list)


@dataclass(frozen=True)
class Status(Answer):
    version: str | None  # the active version, None before the first
    images: int
    job: dict | None  # the background run's status (imgsim.runs.jobs), None when none was started
