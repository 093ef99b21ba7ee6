"""Finding copies: candidate pairs from three bounded sources (imgsim.duplicates.candidates), verified in order of
promise within a CPU budget (imgsim.duplicates.verifying), joined into groups with one suggested keeper each."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from imgsim.core.errors import ImgsimError
from imgsim.duplicates import candidates as sources
from imgsim.duplicates.groups import DuplicateGroup, components, exact_pairs, make_group, member_vectors
from imgsim.duplicates.signatures import signatures
from imgsim.duplicates.verifying import UNCHECKED, Verified, evidence, verify

# Chosen by benchmarks/duplicates_eval.py (benchmarks/duplicates-results.txt), on labelled
# collections built from the shipped photographs (exact and near copies; hard negatives: other
# crops of the same photograph, other photographs) with imgsim's default model (128 px, 128-d).
# The threshold only proposes candidates for the checks, so it is set for recall: pair F1
# stays at its best from 0.90 to 0.98 and falls from 0.985 on (turned and cropped copies drop
# out); 0.95 is the middle of that plateau, away from the edge, not the best value of one set.
DEFAULT_THRESHOLD = 0.95
# A version's manifest may hold its own threshold under this key (a model trained otherwise may
# need another); find_duplicates uses it when no threshold is given.
MANIFEST_KEY = "duplicate_threshold"
# Proposing pairs by content (hashes, keypoints) reads every image once per version (the signatures are
# kept on disk): done by default up to this many images; above, only when asked (content=True).
CONTENT_SCAN_LIMIT = 20_000
# The CPU verification may spend, linear in the images whatever they hold: as much as reading their signatures took
# (so a crafted collection costs at most about twice a normal one, on any machine), and never less than a floor per
# image; what it leaves unchecked is counted and said. Reading is once per image and version (bounded by the decoder's
# own limits, as at indexing); a verdict costs 1-5 ms, a signature 10-30 ms on a quiet core.
BUDGET_BASE_S = 2.0
BUDGET_PER_IMAGE_S = 0.02


def scan_budget(images: int, reading_s: float = 0.0) -> float:
    """CPU seconds the verification of a scan over this many images may spend, reading them having taken `reading_s`."""
    return BUDGET_BASE_S + max(BUDGET_PER_IMAGE_S * images, reading_s)


def checked_threshold(threshold) -> float:
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ImgsimError(f"the duplicate threshold must be a number, got '{threshold}'") from None
    if not -1.0 <= threshold <= 1.0:
        raise ImgsimError(f"the duplicate threshold is a cosine similarity between -1 and 1, got {threshold}")
    return threshold


def find_duplicates(version, threshold: float | None = None, k: int = sources.LATENT_K, progress=None,
                    content: bool | None = None, budget_s: float | None = None) -> list[DuplicateGroup]:
    """Groups of exact copies (same bytes) and near copies in a version, scanned now (`scan_duplicates`).

    Each group lists its members, the suggested keeper first, then by score; groups come largest
    first, then by their first path. `threshold` is a cosine similarity (default: the manifest's
    MANIFEST_KEY when a version has one, else DEFAULT_THRESHOLD). Each member's `match` and each
    group's `links` say why (MATCHES).
    """
    if threshold is None:  # a version may carry its own (see MANIFEST_KEY), else the measured default
        threshold = (getattr(version, "manifest", None) or {}).get(MANIFEST_KEY, DEFAULT_THRESHOLD)
    threshold = checked_threshold(threshold)
    return scan_duplicates(version, threshold, k, progress, content, budget_s).groups(threshold, progress)


def scan_duplicates(version, floor: float, k: int = sources.LATENT_K, progress=None, content: bool | None = None,
                    budget_s: float | None = None) -> DuplicateScan:
    """Propose and verify every candidate pair down to the cosine `floor`: the groups at any threshold from there.

    Candidates: every image's `k` latent neighbours at or above `floor`, and (`content`, default up to
    CONTENT_SCAN_LIMIT images) its nearest by perceptual hash and by shared keypoints, each bounded per
    image. Each is verified (hash, keypoint geometry, colours), most promising first, until `budget_s`
    CPU seconds of verifying (default `scan_budget`) are spent; the rest are counted as unchecked, never as copies."""
    floor = checked_threshold(floor)
    if int(k) < 1:
        raise ImgsimError(f"k (neighbours searched per image) must be at least 1, got {k}")
    records = version.records
    start = time.process_time()
    if content is None:
        content = len(records) <= CONTENT_SCAN_LIMIT
    latent, scores = sources.latent_pairs(version, floor, int(k), progress)
    parts = [(latent, "latent", scores)]
    if content:
        table = signatures(version, progress)
        usable = table.readable & first_of_each_sha1(records)  # byte-identical files are joined as exact copies
        for codes in (table.phash, table.content):
            pairs, bits = sources.hash_pairs(codes, usable)
            parts.append((pairs, "hash", bits))
        pairs, votes = sources.keypoint_pairs(table)
        parts.append((pairs, "keypoints", votes))
    else:
        table = signatures(version, progress, rows=np.unique(latent))
    found = sources.merge(parts, len(records))
    if progress:
        progress(0.0, f"checking {len(found):,} candidate pairs")
    budget = scan_budget(len(records), table.cpu_s) if budget_s is None else float(budget_s)
    verified = verify(found, table, floor, time.process_time() + budget, progress)
    stats = ScanStats(images=len(records), read=table.read, budget_s=budget, cpu_s=time.process_time() - start,
                      candidates=found.counts(), checked=len(found) - verified.unchecked, unchecked=verified.unchecked,
                      content=bool(content))
    return DuplicateScan(version, floor, found, verified, stats)


def first_of_each_sha1(records) -> np.ndarray:
    _, first = np.unique(records.sha1, return_index=True)
    mask = np.zeros(len(records), bool)
    mask[first] = True
    return mask


@dataclass
class ScanStats:
    images: int
    read: int  # files decoded (the rest came from the signature cache)
    budget_s: float  # CPU seconds the checking might spend
    cpu_s: float
    candidates: dict = field(default_factory=dict)  # pairs proposed by each source (a pair may have several)
    checked: int = 0
    unchecked: int = 0  # candidate pairs the budget left: never called copies
    content: bool = True

    def summary(self) -> str:
        left = (f"; {self.unchecked:,} candidate pair(s) left unchecked: the CPU budget of {self.budget_s:.0f} s for "
                "checking ran out" if self.unchecked else "")
        return f"{self.images:,} images, {self.checked:,} candidate pairs checked in {self.cpu_s:.1f} s of CPU{left}"


class DuplicateScan:
    """A version's verified candidate pairs down to `floor`: the groups at any threshold from there, without reading a
    file again once the members' sizes and vectors are known. Safe to share between threads."""

    def __init__(self, version, floor: float, candidates, verified: Verified, stats: ScanStats | None = None):
        self.version, self.floor, self.candidates, self.verified = version, floor, candidates, verified
        self.stats = stats or ScanStats(len(version.records), 0, 0.0, verified.seconds)
        self.sizes: dict[int, tuple] = {}
        self.vectors: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    @classmethod
    def exact_only(cls, version) -> DuplicateScan:
        """A scan with no candidate pairs: its groups are the exact copies (the same bytes) alone, and nothing is read."""
        from imgsim.duplicates.candidates import Candidates

        none = Candidates(np.zeros((0, 2), np.int64), np.zeros(0, np.float32), np.zeros(0, np.int16),
                          np.zeros(0, np.int32))
        return cls(version, 1.0, none, Verified(np.zeros(0, object), np.zeros(0, bool), 0.0))

    def links(self, threshold: float) -> list[tuple[int, int, str]]:
        """(row, row, match) of every verified pair that holds at `threshold`, exact copies included."""
        c, v = self.candidates, self.verified
        found = [(a, b, "exact") for a, b in exact_pairs(self.version.records)]
        latent = np.nan_to_num(c.latent, nan=-2.0) >= threshold
        otherwise = (c.bits >= 0) | (c.votes > 0)
        copies = np.asarray([k not in (None, UNCHECKED) for k in v.kinds.tolist()], bool).reshape(-1)
        for i in np.flatnonzero(copies & (latent | (otherwise & v.free))).tolist():
            a, b = c.pairs[i]
            found.append((int(a), int(b), evidence(v.kinds[i], bool(latent[i]), bool(c.bits[i] >= 0))))
        return found

    def groups(self, threshold: float, progress=None) -> list[DuplicateGroup]:
        """What `find_duplicates(version, threshold)` finds, from this scan's verdicts (threshold >= floor)."""
        threshold = checked_threshold(threshold)
        if threshold < self.floor:
            raise ImgsimError(f"threshold {threshold} is below this scan's {self.floor}; scan again from there")
        records = self.version.records
        with self._lock:
            links = self.links(threshold)
            found = components(len(records), links)
            near = {int(r) for rows, _ in found if len(set(records.sha1[rows].tolist())) > 1 for r in rows}
            if near - set(self.vectors):
                self.vectors.update(member_vectors(self.version, near - set(self.vectors)))
            by_row: dict[int, list] = {}
            for link in links:
                by_row.setdefault(link[0], []).append(link)
            groups = [make_group(self.version, rows, self.vectors, self.sizes, tree,
                                 [link for r in rows.tolist() for link in by_row.get(r, [])]) for rows, tree in found]
        groups.sort(key=lambda g: (-len(g.images), min(m.path for m in g.images)))
        for number, group in enumerate(groups):
            group.group = number
        if progress:
            progress(1.0, f"{len(groups)} groups of copies")
        return groups
