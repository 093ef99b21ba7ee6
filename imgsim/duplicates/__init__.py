"""Near-duplicates: the copies in a collection, grouped, with one suggested keeper each; moving, never deleting.

Exact copies (the same bytes) are found from the records' sha1 alone, without the model. Near
copies (re-encoded, resized, slightly cropped or turned, lighter or darker) are pairs of images
whose latents are at least `threshold` cosine-similar among each image's k nearest neighbours in
the version's vector engine, searched a chunk at a time (never an N x N matrix), and whose
perceptual hashes then agree (PHASH_MAX_DISTANCE): the latents find the candidates at any
collection size, the hash rejects look-alikes that are not copies. Edits that move the whole
picture's hash (a border or letterbox, a caption bar, a screenshot's window, a 20 % crop) are
caught two ways: a latent pair the hash rejects may still be confirmed by its geometry (ORB
keypoints agree on one similarity transform, under which one picture's content lies inside the
other's: a crop, never two overlapping views), and the pictures inside their frames (uniform
borders and caption bars trimmed) are hashed too, so a framed copy whose latent is far away is
still proposed, then confirmed the same way. Each link says why (MATCHES). Pairs are joined
into groups (union-find), so an exact group with a near copy of it becomes one near group that
holds the exact copies too: a person deciding what to keep sees every copy of a picture at once.
A group whose members all share one sha1 is reported as exact.

Moving is undoable: `move_duplicates` writes its JSON log of every (from, to) before it moves a
file, and `undo_moves` reads that log back, so even a run killed half-way can be undone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import filecmp
import hashlib
import json
import os
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgsim.core.errors import ImgsimError
from imgsim.core.files import fsync_path
from imgsim.core.text import csv_text, one_line
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
# Latent neighbours propose, a perceptual hash confirms: a near pair must also lie within this many
# of the 64 bits of imagehash.phash. Latents alone confuse two halves of one texture (gravel,
# grass) and lose turned copies before they reject those; pHash alone must stay tight (its best
# was 15 and 17 bits on the two sets) and then misses some crops and turns; checked only on latent
# neighbours it can be looser (18: between pHash's own best and the pair's, 21 and 19), and the
# two together beat either (benchmarks/duplicates-results.txt). Only images with a latent neighbour above the
# threshold are read again, once each.
PHASH_MAX_DISTANCE = 18
# Within 18 bits two views of one scene can still meet (a burst shot shifted by a third, another crop of
# the photograph: 18 bits apart in the tests). So the hash alone confirms a latent pair only within
# PHASH_SURE_DISTANCE; from there to PHASH_MAX_DISTANCE the keypoints must agree too, unless a picture
# has none to compare (tiny, flat), where the hash decides as in imgsim 0.3.0.
PHASH_SURE_DISTANCE = 10
# Geometry (benchmarks/duplicates_eval.py --edits, on benchmarks/make_edit_set.py's set): ORB keypoints
# of each picture's content (its frame trimmed, long side VERIFY_SIDE px) matched and fitted by RANSAC
# to one similarity transform. Copies kept 6-400 inliers, distinct photographs at most 3 among the
# closest pairs; a copy's content then lies inside the other picture (cover 0.89-1.00), a burst
# shot shifted by 30-40 % or another crop of the same photograph does not (0.61-0.71 and less).
VERIFY_SIDE = 256
MIN_INLIERS = 10
MIN_COVER = 0.85
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
# Why two images were called copies, strongest first: the same bytes; latent neighbours whose whole
# pictures' pHashes agree; latent neighbours whose keypoints agree (one inside the other); pictures
# whose hashes agree once their frames are trimmed, and whose keypoints agree.
MATCHES = ("exact", "latent+hash", "latent+geometry", "content+geometry")
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


class UndoIncomplete(ImgsimError):
    """`undo_moves` restored what it could; `conflicts` lists the files it left where they are, and why."""

    def __init__(self, message: str, restored: int, conflicts: list[tuple[str, str]]):
        super().__init__(message)
        self.restored = restored
        self.conflicts = conflicts


# --- finding ----------------------------------------------------------------------------------

class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


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


def picture_hash(path: str) -> np.ndarray | None:
    """The image's 64-bit perceptual hash (imagehash.phash) as 64 booleans; None if it cannot be read now."""
    import imagehash

    from imgsim.inputs.images import open_image, read_bytes

    try:
        img = open_image(read_bytes(path), path, draft_size=64)
    except ImgsimError:
        return None
    return imagehash.phash(img).hash.reshape(-1)


def hash_distance(paths, a: int, b: int, hashes: dict) -> int | None:
    """Bits between two images' perceptual hashes (kept in `hashes`); None if either cannot be read now."""
    for row in (a, b):
        if row not in hashes:
            hashes[row] = picture_hash(paths[row])
    if hashes[a] is None or hashes[b] is None:
        return None  # a file gone or unreadable since indexing cannot be confirmed
    return int(np.count_nonzero(hashes[a] != hashes[b]))


def same_picture(paths, a: int, b: int, hashes: dict, within: int | None = None) -> bool:
    """Whether two latent neighbours are the same picture by their perceptual hashes (within PHASH_MAX_DISTANCE bits)."""
    distance = hash_distance(paths, a, b, hashes)
    return distance is not None and distance <= (PHASH_MAX_DISTANCE if within is None else within)


# --- verifying by content and geometry ---------------------------------------------------------

def read_pixels(path: str, side: int) -> np.ndarray | None:
    """The image as float32 RGB, its long side at most `side`; None if it cannot be read now."""
    from imgsim.inputs.images import open_image, read_bytes

    try:
        img = open_image(read_bytes(path), path, draft_size=side)
        img.thumbnail((side, side), Image.Resampling.BILINEAR)
        return np.asarray(img.convert("RGB"), np.float32)
    except (ImgsimError, OSError, ValueError):
        return None


def frame_run(lines: np.ndarray, limit: int, tol: float = 6.0) -> int:
    """How many lines from this edge are a frame.

    Solid lines (98 % of pixels within `tol` of one colour) are frame; so are the lines between two
    solid ones that are at most an eighth of the picture apart (a caption's text, a window's title),
    but a frame must start with a solid line at the edge.
    """
    def solid(i):
        line = lines[i]
        return (np.abs(line - np.median(line, axis=0)).max(-1) <= tol).mean() >= 0.98

    limit = min(limit, len(lines) - 1)  # never the whole picture: trimming stops short of its last line
    gap = max(2, len(lines) // 8)
    n, last = 0, 0
    while n < limit:
        if solid(n):
            last = n + 1
            n += 1
            continue
        if not last:
            break  # no frame at this edge
        n = next((m for m in range(n + 1, min(n + gap, limit)) if solid(m)), limit)
    return last


def content_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the picture inside its frame (borders, letterbox, caption bars, window chrome)."""
    h, w = rgb.shape[:2]
    left, top, right, bottom = 0, 0, w, h
    for _ in range(2):  # rows, then columns inside them, and again (a window's title bar spans its columns)
        rows = rgb[top:bottom, left:right]
        top, bottom = top + frame_run(rows, int(h * 0.45)), bottom - frame_run(rows[::-1], int(h * 0.45))
        across = rgb[top:bottom, left:right].transpose(1, 0, 2)
        if bottom - top < 8:
            break
        left, right = left + frame_run(across, int(w * 0.45)), right - frame_run(across[::-1], int(w * 0.45))
        if right - left < 8:
            break
    if bottom - top < 8 or right - left < 8:
        return 0, 0, w, h  # all frame (one colour): nothing to trim to
    return left, top, right, bottom


def content_hash(path: str) -> np.ndarray | None:
    """imagehash.phash of the picture inside its frame, as 64 booleans; None if unreadable."""
    import imagehash

    rgb = read_pixels(path, 128)
    if rgb is None or min(rgb.shape[:2]) < 2:
        return None
    left, top, right, bottom = content_box(rgb)
    return imagehash.phash(Image.fromarray(rgb[top:bottom, left:right].astype(np.uint8))).hash.reshape(-1)


@dataclass
class Keypoints:
    points: np.ndarray  # (n, 2) x, y in the content's own pixels (long side VERIFY_SIDE)
    descriptors: np.ndarray  # (n, 256) booleans
    size: tuple[int, int]  # the content's (width, height)


def keypoints(path: str) -> Keypoints | None:
    """ORB keypoints of the picture inside its frame; None if unreadable or too small or flat to have any."""
    import warnings

    from skimage.feature import ORB

    rgb = read_pixels(path, 2 * VERIFY_SIDE)
    if rgb is None or min(rgb.shape[:2]) < 8:
        return None
    left, top, right, bottom = content_box(rgb)
    content = Image.fromarray(rgb[top:bottom, left:right].astype(np.uint8))
    scale = VERIFY_SIDE / max(content.size)
    content = content.resize((max(1, round(content.width * scale)), max(1, round(content.height * scale))),
                             Image.Resampling.BILINEAR)
    if min(content.size) < 32:  # a sliver (a huge aspect ratio): ORB needs room round each keypoint
        return None
    grey = np.asarray(content.convert("L"), np.float32)
    low, high = np.percentile(grey, [1, 99])
    if high - low < 8:
        return None  # one colour, or nearly
    grey = np.clip((grey - low) / (high - low), 0, 1)  # faded or darkened copies keep their corners
    orb = ORB(n_keypoints=400, fast_threshold=0.05)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            orb.detect_and_extract(grey)
    except (RuntimeError, ValueError, IndexError):
        return None
    if len(orb.keypoints) < MIN_INLIERS:
        return None
    return Keypoints(orb.keypoints[:, ::-1].astype(np.float64), orb.descriptors, content.size)


def cover(transform, size_from: tuple[int, int], size_to: tuple[int, int]) -> float:
    """The share of a grid over one content that `transform` puts inside the other (3 % leeway)."""
    (w, h), (tw, th) = size_from, size_to
    xs, ys = np.meshgrid(np.linspace(0, w, 12), np.linspace(0, h, 12))
    mapped = transform(np.c_[xs.ravel(), ys.ravel()])
    slack = 0.03 * max(tw, th)
    inside = ((mapped[:, 0] >= -slack) & (mapped[:, 0] <= tw + slack) & (mapped[:, 1] >= -slack)
              & (mapped[:, 1] <= th + slack))
    return float(inside.mean())


def same_scene(a: Keypoints | None, b: Keypoints | None) -> bool:
    """Whether one picture is a copy of the other by geometry: at least MIN_INLIERS keypoint matches agree on one
    similarity transform (scale, turn, shift), under which one content lies inside the other (MIN_COVER)."""
    import warnings

    from skimage.feature import match_descriptors
    from skimage.measure import ransac
    from skimage.transform import SimilarityTransform

    if a is None or b is None:
        return False
    matches = match_descriptors(a.descriptors, b.descriptors, cross_check=True, max_ratio=0.85)
    if len(matches) < MIN_INLIERS:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inliers = ransac((b.points[matches[:, 1]], a.points[matches[:, 0]]), SimilarityTransform,
                                min_samples=3, residual_threshold=3, max_trials=300, stop_probability=0.99, rng=0)
    if not model or inliers is None or int(inliers.sum()) < MIN_INLIERS:
        return False
    try:
        return max(cover(model, b.size, a.size), cover(model.inverse, a.size, b.size)) >= MIN_COVER
    except (ValueError, np.linalg.LinAlgError):
        return False


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
        self._hashes: dict[int, np.ndarray | None] = {}
        self._keypoints: dict[int, Keypoints | None] = {}
        self._verdicts: dict[tuple, str | None] = {}
        self._thumbs: dict[int, np.ndarray | None] = {}
        self._sizes: dict[int, tuple] = {}
        self._vectors: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def groups(self, threshold: float, progress=None) -> list[DuplicateGroup]:
        """What `find_duplicates(version, threshold)` finds, from this scan's pairs (threshold >= floor)."""
        threshold = checked_threshold(threshold)
        if threshold < self.floor:
            raise ImgsimError(f"threshold {threshold} is below this scan's {self.floor}; scan again from there")
        version, records = self.version, self.version.records
        with self._lock:
            links, joined = UnionFind(len(records)), []
            above = int(np.searchsorted(-self.scores, -threshold, side="right"))
            nearby = int(np.searchsorted(-self.scores, -(threshold - GEOMETRY_MARGIN), side="right"))
            for source, pairs in (("exact", exact_pairs(records)), ("latent", self.pairs[:above].tolist()),
                                  ("content", self.content.tolist()), ("nearby", self.pairs[above:nearby].tolist())):
                for a, b in pairs:
                    if links.find(a) != links.find(b):
                        match = "exact" if source == "exact" else self.verdict(a, b, source)
                        if match:
                            links.union(a, b)
                            joined.append((a, b, match))
            roots = np.fromiter((links.find(i) for i in range(len(records))), np.int64, count=len(records))
            order = np.argsort(roots, kind="stable")
            components = [rows for rows in np.split(order, np.flatnonzero(np.diff(roots[order])) + 1) if len(rows) > 1]
            near = {int(r) for rows in components if len(set(records.sha1[rows].tolist())) > 1 for r in rows}
            self._vectors.update(member_vectors(version, near - set(self._vectors)))
            by_root: dict[int, list] = {}
            for a, b, match in joined:
                by_root.setdefault(links.find(a), []).append((a, b, match))
            groups = [make_group(version, rows, self._vectors, self._sizes, by_root.get(int(roots[rows[0]]), []))
                      for rows in components]
        groups.sort(key=lambda g: (-len(g.images), min(m.path for m in g.images)))
        for number, group in enumerate(groups):
            group.group = number
        if progress:
            progress(1.0, f"{len(groups)} groups of copies")
        return groups

    def verdict(self, a: int, b: int, source: str) -> str | None:
        """Why a proposed pair is a copy (MATCHES), or None; worked out once per pair and kept."""
        key = (a, b, source, PHASH_SURE_DISTANCE, PHASH_MAX_DISTANCE)
        if key not in self._verdicts:
            paths = self.version.records.paths
            hashed = source == "latent"  # "nearby" (below the threshold): geometry alone confirms
            source = "latent" if source == "nearby" else source
            distance = hash_distance(paths, a, b, self._hashes) if hashed else None
            if hashed and distance is None:
                verdict = None  # unreadable now: not confirmed
            elif distance is not None and distance <= min(PHASH_SURE_DISTANCE, PHASH_MAX_DISTANCE):
                verdict = "latent+hash" if self.colours_agree(a, b, flat_only=True) else None
            else:
                for row in (a, b):
                    if row not in self._keypoints:
                        self._keypoints[row] = keypoints(paths[row])
                if same_scene(self._keypoints[a], self._keypoints[b]):
                    verdict = f"{source}+geometry"
                elif distance is not None and distance <= PHASH_MAX_DISTANCE and (
                        self._keypoints[a] is None or self._keypoints[b] is None) and self.colours_agree(a, b):
                    verdict = "latent+hash"  # nothing to compare by geometry: the hash decides, with the colours
                else:
                    verdict = None
            self._verdicts[key] = verdict
        return self._verdicts[key]


    def colours_agree(self, a: int, b: int, flat_only: bool = False) -> bool:
        """Whether two pictures' 8 x 8 colour thumbnails agree (within 24 levels on average): a hash cannot tell one
        flat colour from another (every flat picture hashes alike). `flat_only`: asked only when one of them is flat
        (a recoloured copy of a photograph keeps its hash, not its colours)."""
        for row in (a, b):
            if row not in self._thumbs:
                pixels = read_pixels(self.version.records.paths[row], 64)
                self._thumbs[row] = None if pixels is None or min(pixels.shape[:2]) < 1 else np.asarray(
                    Image.fromarray(pixels.astype(np.uint8)).resize((8, 8), Image.Resampling.BOX), np.float32)
        ta, tb = self._thumbs[a], self._thumbs[b]
        if ta is None or tb is None:
            return False
        if flat_only and ta.mean(-1).std() >= 8 and tb.mean(-1).std() >= 8:
            return True
        return float(np.abs(ta - tb).mean()) <= 24


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


def duplicates_csv(groups: list[DuplicateGroup], name=str) -> str:
    """One row per member: group, path, role ("keep" or "duplicate"), score, exact, match (why: MATCHES); safe for
    spreadsheets.

    `name` turns a path into what the CSV shows: the CLI writes it whole, the dashboard relative to the collection.
    """
    rows = ([g.group, name(m.path), "keep" if m.keep else "duplicate", m.score, "true" if g.exact else "false", m.match]
            for g in groups for m in g.images)
    return csv_text(["group", "path", "role", "score", "exact", "match"], rows)


# --- moving and undoing -----------------------------------------------------------------------

def check_target(target_folder, root) -> None:
    """Refuse a target folder inside the collection `root`: the next index would find the moved copies again."""
    target, root = Path(target_folder).expanduser().resolve(), Path(root).expanduser().resolve()
    if target == root or root in target.parents:
        raise ImgsimError(f"{one_line(target)}: inside the collection {one_line(root)}; the moved copies would be "
                          "indexed again. Choose a folder outside it")


def sha1_text(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def file_sha1(path) -> str | None:
    """The sha1 of a file's bytes now (None if it cannot be read)."""
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def inside(source, root: Path) -> bool:
    """Whether `source` is a plain file (not a link) that is inside the collection `root` once every link on its way is followed."""
    path = Path(source)
    try:
        return not path.is_symlink() and path.is_file() and root in path.resolve(strict=True).parents
    except (OSError, RuntimeError):  # a link loop on the way
        return False


def plan_moves(groups, target: Path, keep: dict | None, root: Path) -> list[tuple[str, str]]:
    """(from, to) for every member not kept, checked before anything moves.

    Every source must be a plain file inside the collection `root` with every link on its way
    followed (a folder linked to somewhere else is not the collection), and a file moved as an
    exact copy of the one kept must still hold the same bytes: the hash was recorded at index time.
    """
    keep = dict(keep or {})
    by_number = {g.group: g for g in groups}
    for number, path in keep.items():
        group = by_number.get(number)
        if group is None:
            raise ImgsimError(f"no duplicate group {one_line(number)} to keep {one_line(path)} in")
        if path not in {m.path for m in group.images}:
            raise ImgsimError(f"{one_line(path)}: not a member of duplicate group {number}")
    sources, exact = [], []
    for group in groups:
        kept = keep.get(group.group) or group.keeper.path
        kept_sha1 = next(m.sha1 for m in group.images if m.path == kept)
        for m in group.images:
            if m.path != kept:
                sources.append(m.path)
                if kept_sha1 and m.sha1 == kept_sha1:
                    exact.append((m.path, kept))
    if len(set(sources)) != len(sources):
        raise ImgsimError("the same file is listed in two duplicate groups; find the duplicates again")
    for source in sources:
        path = Path(source)
        if path.is_symlink() or not path.is_file():
            raise ImgsimError(f"{one_line(source)}: no longer there (or not a plain file); find the duplicates "
                              "again before moving")
        if not inside(path, root):
            raise ImgsimError(f"{one_line(source)}: not inside the collection {one_line(root)} once links are "
                              "followed; nothing was moved")
        folder = path.parent.resolve()
        if target == folder or folder in target.parents or target in path.resolve().parents:
            raise ImgsimError(f"{one_line(target)}: inside or next to the copies' own folder {one_line(folder)}; "
                              "moving there would put them back into the collection. Choose a folder outside it")
    for source, kept in exact:
        if file_sha1(source) != file_sha1(kept) or file_sha1(source) is None:
            raise ImgsimError(f"{one_line(source)}: no longer the same bytes as {one_line(kept)}; find the "
                              "duplicates again before moving")
    if not sources:
        return []
    common = Path(os.path.commonpath([str(Path(s).resolve().parent) for s in sources]))
    planned, moves = set(), []
    for source in sources:
        dest = unique_name(target / Path(source).resolve().relative_to(common), planned)
        planned.add(dest)
        moves.append((source, str(dest)))
    return moves


def unique_name(path: Path, taken: set) -> Path:
    """`path`, or `name (1).ext`, `name (2).ext` ... : the first that neither exists nor is planned."""
    candidate, n = path, 0
    while candidate in taken or os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
    return candidate


def partial_path(dest) -> Path:
    """Where a copy to `dest` is written until it is whole: a hidden name beside it, the same for every try."""
    dest = Path(dest)
    return dest.parent / f".imgsim-partial-{hashlib.sha1(os.fsencode(dest.name)).hexdigest()[:16]}"


def move_file(source: str, dest: str) -> None:
    """Move without ever overwriting: a hard link (fails if dest exists) then unlink, or a copy across file systems.

    The copy is written to `partial_path(dest)`, fsynced, then linked to dest (which fails if dest
    exists; renamed where hard links are not supported) and only then is the source unlinked. So a
    kill leaves the source whole and at worst a partial file under that name, which `undo_moves` removes.
    """
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except FileExistsError:
        raise
    except OSError:  # another file system, or one without hard links
        copy_into_place(source, Path(dest))
    os.unlink(source)


def copy_into_place(source: str, dest: Path) -> None:
    partial = partial_path(dest)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)  # a killed move's leftover, ours by its name
    try:
        with open(source, "rb") as src, open(partial, "xb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        shutil.copystat(source, partial)
        try:
            os.link(partial, dest)
            os.unlink(partial)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links (FAT, exFAT): a rename, after checking
            if os.path.lexists(dest):
                raise FileExistsError(17, "File exists", str(dest)) from None
            os.rename(partial, dest)
        fsync_path(dest.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def same_bytes(a: str, b: str) -> bool:
    try:
        return os.path.getsize(a) == os.path.getsize(b) and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def write_log(path: Path, data: dict) -> None:
    """Create the log (never over an existing file) and make it durable before any file moves."""
    with open(path, "x", encoding="ascii") as fh:
        json.dump(data, fh, indent=1, ensure_ascii=True)  # undecodable names survive as \\udcxx
        fh.flush()
        os.fsync(fh.fileno())


def move_duplicates(groups: list[DuplicateGroup], target_folder, keep: dict[int, str] | None = None, log=None, *,
                    root) -> Path:
    """Move every member but each group's keeper (or `keep[group]`) out of the collection `root` into
    `target_folder`; returns the undo log.

    Files keep their folders relative to the copies' common folder; a name already taken gets
    " (1)", " (2)" ... Nothing is overwritten or deleted, and nothing outside `root` is touched
    (`plan_moves`). The log (default `target_folder/imgsim-moves-<time>.json`) lists every move
    and is written before the first.
    """
    root = Path(root).expanduser().resolve()
    check_target(Path(target_folder).expanduser(), root)
    target = Path(target_folder).expanduser()
    if target.exists() and not target.is_dir():
        raise ImgsimError(f"{one_line(target)}: not a folder")
    target = target.resolve()
    moves = plan_moves(groups, target, keep, root)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    log_path = Path(log).expanduser() if log else unique_name(target / f"imgsim-moves-{stamp}.json", set())
    created = not target.exists()
    try:
        target.mkdir(parents=True, exist_ok=True)
        write_log(log_path, {"format": 1, "created": stamp, "target": str(target),
                             "moves": [{"from": a, "to": b} for a, b in moves]})
    except FileExistsError:
        raise ImgsimError(f"{one_line(log_path)}: already exists; choose another log file") from None
    except OSError as exc:
        if created:
            shutil.rmtree(target, ignore_errors=True)  # only what this call made: an empty folder
        where = exc.filename or target
        raise ImgsimError(f"{one_line(where)}: cannot write there ({exc.strerror or exc}); nothing was moved") from None
    for done, (source, dest) in enumerate(moves):
        try:
            if not inside(source, root):  # checked again: a folder may have been swapped for a link since
                raise OSError(f"no longer a plain file inside the collection {one_line(root)}")
            move_file(source, dest)
        except OSError as exc:
            raise ImgsimError(f"{one_line(source)}: could not move it ({exc.strerror or exc}); {done} of {len(moves)} "
                              f"files were moved, undo with the log {one_line(log_path)}") from None
    return log_path


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents while they are empty, up to (not including) `top`."""
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def undo_moves(log) -> int:
    """Put every file a move log lists back where it was; returns how many were put back.

    A file that now exists at its original path is left alone (never overwritten): the rest are
    restored, then UndoIncomplete names what was left. Running it twice restores nothing twice. A
    move (or undo) killed half-way is understood: a partial copy under `partial_path` is removed (the
    file it was copying is still whole), and a copy that was finished before its source was
    unlinked (the same bytes in both places) is removed, leaving the original.
    """
    log = Path(log).expanduser()
    try:
        data = json.loads(log.read_text(encoding="ascii"))
        moves = [(str(m["from"]), str(m["to"])) for m in data["moves"]]
        target = Path(data["target"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImgsimError(f"{one_line(log)}: not a readable imgsim move log ({type(exc).__name__})") from None
    restored, conflicts = 0, []
    for source, dest in reversed(moves):
        for leftover in (partial_path(dest), partial_path(source)):  # a copy killed half-way
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        here, there = os.path.lexists(source), os.path.lexists(dest)
        if here and there:
            if os.path.samefile(source, dest) or same_bytes(source, dest):  # killed between copy (or link) and unlink
                os.unlink(dest)
                restored += 1
                remove_empty_folders(Path(dest).parent, target)
            else:
                conflicts.append((source, "a file is at the original path again"))
        elif there:
            try:
                move_file(dest, source)
                restored += 1
                remove_empty_folders(Path(dest).parent, target)
            except OSError as exc:
                conflicts.append((source, f"could not move it back ({exc.strerror or exc})"))
        elif not here:
            conflicts.append((source, f"missing from {one_line(dest)}"))
    if conflicts:
        listed = "; ".join(f"{one_line(p)}: {why}" for p, why in conflicts[:5])
        more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
        raise UndoIncomplete(f"put {restored} file(s) back; left {len(conflicts)}: {listed}{more}", restored, conflicts)
    return restored


__all__ = ["DEFAULT_THRESHOLD", "MANIFEST_KEY", "MATCHES", "DuplicateGroup", "DuplicateScan", "Member", "UndoIncomplete", "check_target",
           "duplicates_csv", "find_duplicates", "move_duplicates", "scan_duplicates", "undo_moves"]
