"""Groups of copies: their members, the suggested keeper of each, and the links (with their evidence) that joined them."""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.cluster.hierarchy import DisjointSet
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from imgsim.duplicates.verifying import MATCHES
from imgsim.inputs.images import ALLOWED_FORMATS

CHUNK = 4096  # vectors per engine batch


@dataclass
class Member:
    path: str
    score: float  # cosine similarity to the group's keeper (1.0 for the keeper and its exact copies)
    keep: bool  # the suggested keeper: most pixels, then largest file, then oldest
    width: int | None
    height: int | None
    bytes: int
    mtime_ns: int
    id: int
    sha1: str = ""  # the bytes' hash recorded at index time (re-checked before an exact copy is moved)
    match: str = ""  # the strongest evidence (MATCHES) among the links that joined it to the group

    def to_dict(self) -> dict:
        return {"path": self.path, "score": self.score, "keep": self.keep, "match": self.match, "width": self.width,
                "height": self.height, "bytes": self.bytes}


@dataclass
class DuplicateGroup:
    group: int
    exact: bool  # every member has the same bytes
    images: list[Member]
    links: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (path, path, match) that joined it

    @property
    def keeper(self) -> Member:
        return next(m for m in self.images if m.keep)

    def to_dict(self) -> dict:
        return {"group": self.group, "exact": self.exact, "images": [m.to_dict() for m in self.images],
                "links": [{"a": a, "b": b, "match": match} for a, b, match in self.links]}



def exact_pairs(records):
    """(row, row) pairs joining every set of byte-identical records, from their sha1 alone."""
    order = np.argsort(records.sha1, kind="stable")
    sha = records.sha1[order]
    same = np.flatnonzero(sha[1:] == sha[:-1])
    return zip(order[same].tolist(), order[same + 1].tolist())


def image_size(path: str) -> tuple[int | None, int | None]:
    """(width, height) from the image's header only (Pillow opens lazily); (None, None) if unreadable."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO put there since indexing would block the open
            return None, None
        with Image.open(path, formats=ALLOWED_FORMATS) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any unreadable file is simply of unknown size
        return None, None


def components(n: int, links: list[tuple[int, int, str]]) -> list[tuple[np.ndarray, list]]:
    """(rows, tree links) of each group the links join (scipy's connected components), two members or more.

    A group's links are a spanning tree of them, the strongest evidence (MATCHES order) first: one fewer than its
    members, each saying why two of them are copies."""
    ends = np.asarray([(a, b) for a, b, _ in links], np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(ends), np.int8), (ends[:, 0], ends[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    found = [rows for rows in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if len(rows) > 1]
    tree, sets = {}, DisjointSet()
    for a, b, match in sorted(links, key=lambda link: MATCHES.index(link[2])):
        sets.add(a)
        sets.add(b)
        if not sets.connected(a, b):
            sets.merge(a, b)
            tree.setdefault(int(labels[a]), []).append((a, b, match))
    return [(rows, tree.get(int(labels[rows[0]]), [])) for rows in found]


def member_vectors(version, rows: set[int]) -> dict[int, np.ndarray]:
    """The vectors of these rows, collected in one streaming pass over the engine."""
    wanted = np.asarray(sorted(version.records.ids[list(rows)].tolist()), np.int64)
    out = {}
    if not len(wanted):
        return out
    for ids, vectors, _ in version.engine().items(CHUNK):
        hit = np.flatnonzero(np.isin(ids, wanted))
        for i, row in zip(hit, version.records.rows_of(ids[hit]).tolist()):
            out[row] = np.asarray(vectors[i], np.float32)
    return out


def keeper_order(member: Member) -> tuple:
    """Sort key: most pixels, then largest file, then oldest, then path (so ties resolve the same way)."""
    return (-((member.width or 0) * (member.height or 0)), -member.bytes, member.mtime_ns, member.path)


def make_group(version, rows: np.ndarray, vectors: dict, sizes: dict | None = None, links=(),
               evidence=()) -> DuplicateGroup:
    """A group's members, the suggested keeper first; scores are cosine similarity to the keeper.

    `sizes` keeps each row's (width, height) from its file's header between calls; `links` are the
    (row, row, match) pairs that joined the group, each member's `match` the strongest of its own links and of
    `evidence` (the group's other links)."""
    records = version.records
    members = {}
    sizes = {} if sizes is None else sizes
    for row in rows.tolist():
        if row not in sizes:
            sizes[row] = image_size(records.paths[row])
        width, height = sizes[row]
        members[row] = Member(records.paths[row], 1.0, False, width, height, int(records.sizes[row]),
                              int(records.mtimes[row]), int(records.ids[row]), sha1_text(records.sha1[row]))
    keeper = min(members, key=lambda r: keeper_order(members[r]))
    members[keeper].keep = True
    exact = len(set(records.sha1[rows].tolist())) == 1
    if not exact:
        for row, member in members.items():
            if records.sha1[row] != records.sha1[keeper]:  # an exact copy of the keeper scores 1.0
                member.score = round(float(np.clip(vectors[row] @ vectors[keeper], -1.0, 1.0)), 4)
    for a, b, match in [*links, *evidence]:
        for row in (a, b):
            if not members[row].match or MATCHES.index(match) < MATCHES.index(members[row].match):
                members[row].match = match
    others = sorted((m for r, m in members.items() if r != keeper), key=lambda m: (-m.score, m.path))
    return DuplicateGroup(0, exact, [members[keeper], *others],
                          [(records.paths[a], records.paths[b], match) for a, b, match in links])


def sha1_text(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
