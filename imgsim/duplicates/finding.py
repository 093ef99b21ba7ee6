"""Finding copies: candidate pairs (the same bytes, latent neighbours, pictures alike inside their frames), verified
(imgsim.duplicates.verifying) and joined into groups with one suggested keeper each."""

from __future__ import annotations

import dataclasses
import os
import stat
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.cluster.hierarchy import DisjointSet
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from imgsim.core.errors import ImgsimError
from imgsim.core.text import one_line
from imgsim.duplicates.verifying import MATCHES, Verifier
from imgsim.features import content_hash
from imgsim.inputs.images import ALLOWED_FORMATS

# Chosen by benchmarks/duplicates_eval.py (benchmarks/duplicates-results.txt), on labelled
# collections built from the shipped photographs (exact and near copies; hard negatives: other
# crops of the same photograph, other photographs) with imgsim's default model (128 px, 128-d).
# The threshold only proposes candidates for the pHash check, so it is set for recall: pair F1
# stays at its best from 0.90 to 0.98 and falls from 0.985 on (turned and cropped copies drop
# out); 0.95 is the middle of that plateau, away from the edge, not the best value of one set.
# A model trained otherwise (tiny test models put every pair above 0.9) only costs more
# candidates to hash, while latents alone would need a threshold per model.
DEFAULT_THRESHOLD = 0.95
# Latent neighbours up to this far below the threshold can be proposed too, for geometry alone to
# confirm (a 20 % crop or a turn can fall to cosine 0.86 while its keypoints still agree). Off: 0.10
# lifted the edit sets' recall (set 2: 0.897 -> 0.963, precision still 1.000) but checks every pair
# of a model that puts everything above 0.85 (the suite's tiny models: its tests 328 s, not 186), and makes
# threshold 1.0 more than exact copies. benchmarks/duplicates_eval.py measures it beside the default.
GEOMETRY_MARGIN = 0.0
# Hashes of the pictures inside their frames propose pairs the latents miss; within this many bits
# (distinct photographs came no closer than 12), each still confirmed by geometry.
CONTENT_MAX_DISTANCE = 10
# Proposing pairs by content reads every image once per scan (a few ms each, two threads): done by
# default up to this many images; above, only when asked (scan_duplicates(content=True)).
CONTENT_SCAN_LIMIT = 20_000
# A version's manifest may hold its own threshold under this key (a model trained otherwise may
# need another); find_duplicates uses it when no threshold is given.
MANIFEST_KEY = "duplicate_threshold"
CHUNK = 4096  # query vectors per search_many call


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


def near_pairs(version, threshold: float, k: int, progress=None):
    """Yield (row, row, score) for every image's nearest neighbours scoring at least `threshold`."""
    engine, records = version.engine(), version.records
    total, done = max(len(records), 1), 0
    for ids, vectors, _ in engine.items(CHUNK):
        rows = records.rows_of(ids)
        hits = engine.search_many(np.asarray(vectors, np.float32), k + 1)
        found = [(i, hid, score) for i, row_hits in enumerate(hits) for hid, score in row_hits
                 if score >= threshold and hid != ids[i]]
        if found:
            others = records.rows_of([hid for _, hid, _ in found])
            for (i, _, score), other in zip(found, others.tolist()):
                if rows[i] >= 0 and other >= 0:
                    yield int(rows[i]), other, float(score)
        done += len(ids)
        if progress:
            progress(done / total, f"searched {done:,} of {len(records):,} images for near copies")



def content_pairs(paths, sha1, progress=None) -> np.ndarray:
    """(row, row) pairs whose pictures inside their frames hash within CONTENT_MAX_DISTANCE bits (each file read once)."""
    from concurrent.futures import ThreadPoolExecutor

    first = {}
    for row, digest in enumerate(sha1.tolist()):
        first.setdefault(digest, row)  # byte-identical files are joined as exact copies already
    rows = np.fromiter(first.values(), np.int64, count=len(first))
    with ThreadPoolExecutor(2) as pool:  # decoding releases the GIL
        hashes = list(pool.map(content_hash, [paths[r] for r in rows.tolist()]))
    if progress:
        progress(1.0, f"hashed {len(rows):,} pictures inside their frames")
    readable = [i for i, h in enumerate(hashes) if h is not None]
    rows = rows[readable]
    if len(rows) < 2:
        return np.zeros((0, 2), np.int64)
    packed = np.packbits(np.asarray([hashes[i] for i in readable], np.uint8), axis=1).view(">u8").ravel()
    out = []
    for start in range(0, len(rows), 1024):
        block = packed[start:start + 1024]
        differ = block[:, None] ^ packed[None, :]
        if hasattr(np, "bitwise_count"):  # numpy >= 2.0
            distance = np.bitwise_count(differ)
        else:
            distance = np.unpackbits(differ.astype(">u8").view(np.uint8), axis=-1).reshape(*differ.shape, 64).sum(-1)
        a, b = np.nonzero(distance <= CONTENT_MAX_DISTANCE)
        keep = start + a < b
        out.append(np.c_[rows[start + a[keep]], rows[b[keep]]])
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def image_size(path: str) -> tuple[int | None, int | None]:
    """(width, height) from the image's header only (Pillow opens lazily); (None, None) if unreadable."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO put there since indexing would block the open
            return None, None
        with Image.open(path, formats=ALLOWED_FORMATS) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any unreadable file is simply of unknown size
        return None, None


def keeper_order(member: Member) -> tuple:
    """Sort key: most pixels, then largest file, then oldest, then path (so ties resolve the same way)."""
    return (-((member.width or 0) * (member.height or 0)), -member.bytes, member.mtime_ns, member.path)


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


def find_duplicates(version, threshold: float | None = None, k: int = 10, progress=None,
                    content: bool | None = None) -> list[DuplicateGroup]:
    """Groups of exact copies (same bytes) and near copies (latents >= threshold confirmed by pHash or geometry;
    pictures whose contents inside their frames hash alike, confirmed by geometry) in a version.

    Each group lists its members, the suggested keeper first, then by score; groups come largest
    first, then by their first path. `threshold` is a cosine similarity (default: the manifest's
    MANIFEST_KEY when a version has one, else DEFAULT_THRESHOLD); a near pair whose file cannot be
    read now is not confirmed (exact copies still are, from the records);
    `k` the neighbours searched per image (a picture with more than k near copies is still one
    group, joined through its copies' own neighbours); `content` whether pairs are also proposed by
    the hashes of the pictures inside their frames (every file read once; default: up to
    CONTENT_SCAN_LIMIT images). Each member's `match` and each group's `links` say why (MATCHES).
    """
    if threshold is None:  # a version may carry its own (see MANIFEST_KEY), else the measured default
        threshold = (getattr(version, "manifest", None) or {}).get(MANIFEST_KEY, DEFAULT_THRESHOLD)
    threshold = checked_threshold(threshold)
    return scan_duplicates(version, threshold, k, progress, content).groups(threshold, progress)


def checked_threshold(threshold) -> float:
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ImgsimError(f"the duplicate threshold must be a number, got {one_line(threshold)!r}") from None
    if not -1.0 <= threshold <= 1.0:
        raise ImgsimError(f"the duplicate threshold is a cosine similarity between -1 and 1, got {threshold}")
    return threshold


def scan_duplicates(version, floor: float, k: int = 10, progress=None, content: bool | None = None) -> DuplicateScan:
    """Search every image's k nearest neighbours once, keeping each pair at or above `floor`: the slow part of
    `find_duplicates`, done once for every threshold from `floor` up (`DuplicateScan.groups`)."""
    floor = checked_threshold(floor)
    if int(k) < 1:
        raise ImgsimError(f"k (neighbours searched per image) must be at least 1, got {k}")
    best: dict[tuple[int, int], float] = {}
    for a, b, score in near_pairs(version, max(-1.0, floor - GEOMETRY_MARGIN), int(k), progress):
        pair = (min(a, b), max(a, b))
        best[pair] = max(score, best.get(pair, -2.0))
    pairs = sorted(best.items(), key=lambda item: (-item[1], item[0]))
    records = version.records
    if content is None:
        content = len(records) <= CONTENT_SCAN_LIMIT
    framed = content_pairs(records.paths, records.sha1, progress) if content else np.zeros((0, 2), np.int64)
    return DuplicateScan(version, floor, np.asarray([p for p, _ in pairs], np.int64).reshape(-1, 2),
                         np.asarray([s for _, s in pairs], np.float64), framed)


class DuplicateScan:
    """A version's candidate pairs down to `floor`, from one neighbour search: the groups at any threshold from there.

    What each threshold needs besides (perceptual hashes, header sizes, member vectors) is worked out
    on first use and kept, so moving a threshold slider searches nothing again. Safe to share between
    threads (one `groups` at a time).
    """

    def __init__(self, version, floor: float, pairs: np.ndarray, scores: np.ndarray, content: np.ndarray | None = None):
        self.version, self.floor, self.pairs, self.scores = version, floor, pairs, scores
        self.content = np.zeros((0, 2), np.int64) if content is None else content  # pairs proposed by content hashes
        self.verifier = Verifier(version.records.paths)
        self._sizes: dict[int, tuple] = {}
        self._vectors: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def groups(self, threshold: float, progress=None) -> list[DuplicateGroup]:
        """What `find_duplicates(version, threshold)` finds, from this scan's pairs (threshold >= floor)."""
        threshold = checked_threshold(threshold)
        if threshold < self.floor:
            raise ImgsimError(f"threshold {threshold} is below this scan's {self.floor}; scan again from there")
        with self._lock:
            joined = self.links(threshold)
            groups = self.components(joined)
        groups.sort(key=lambda g: (-len(g.images), min(m.path for m in g.images)))
        for number, group in enumerate(groups):
            group.group = number
        if progress:
            progress(1.0, f"{len(groups)} groups of copies")
        return groups

    def links(self, threshold: float) -> list[tuple[int, int, str]]:
        """(row, row, match) for the pairs that join the groups at `threshold`, strongest source first; a pair whose
        rows are already joined is not verified (every group is a tree of links, one fewer than its members)."""
        records = self.version.records
        joined, sets = [], DisjointSet()
        above = int(np.searchsorted(-self.scores, -threshold, side="right"))
        nearby = int(np.searchsorted(-self.scores, -(threshold - GEOMETRY_MARGIN), side="right"))
        for source, pairs in (("exact", exact_pairs(records)), ("latent", self.pairs[:above].tolist()),
                              ("content", self.content.tolist()), ("nearby", self.pairs[above:nearby].tolist())):
            for a, b in pairs:
                for row in (a, b):
                    sets.add(row)
                if not sets.connected(a, b):
                    match = "exact" if source == "exact" else self.verdict(a, b, source)
                    if match:
                        sets.merge(a, b)
                        joined.append((a, b, match))
        return joined

    def components(self, joined) -> list[DuplicateGroup]:
        """The groups the links join (scipy's connected components), each with its own links."""
        version, records = self.version, self.version.records
        n = len(records)
        ends = np.asarray([(a, b) for a, b, _ in joined], np.int64).reshape(-1, 2)
        graph = coo_matrix((np.ones(len(ends), np.int8), (ends[:, 0], ends[:, 1])), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        order = np.argsort(labels, kind="stable")
        components = [rows for rows in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if len(rows) > 1]
        near = {int(r) for rows in components if len(set(records.sha1[rows].tolist())) > 1 for r in rows}
        self._vectors.update(member_vectors(version, near - set(self._vectors)))
        by_label: dict[int, list] = {}
        for a, b, match in joined:
            by_label.setdefault(int(labels[a]), []).append((a, b, match))
        return [make_group(version, rows, self._vectors, self._sizes, by_label.get(int(labels[rows[0]]), []))
                for rows in components]

    def verdict(self, a: int, b: int, source: str) -> str | None:
        """Why a proposed pair is a copy (verifying.MATCHES), or None (kept by the scan's Verifier)."""
        return self.verifier.verdict(a, b, source)


def make_group(version, rows: np.ndarray, vectors: dict, sizes: dict | None = None, links=()) -> DuplicateGroup:
    """A group's members, the suggested keeper first; scores are cosine similarity to the keeper.

    `sizes` keeps each row's (width, height) from its file's header between calls; `links` are the
    (row, row, match) pairs that joined the group, each member's `match` the strongest of its own."""
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
    for a, b, match in links:
        for row in (a, b):
            if not members[row].match or MATCHES.index(match) < MATCHES.index(members[row].match):
                members[row].match = match
    others = sorted((m for r, m in members.items() if r != keeper), key=lambda m: (-m.score, m.path))
    return DuplicateGroup(0, exact, [members[keeper], *others],
                          [(records.paths[a], records.paths[b], match) for a, b, match in links])


def sha1_text(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
