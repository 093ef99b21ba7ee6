"""Candidate pairs for the near-copy scan, each source bounded per image, so that no content can make their number grow
faster than the collection.

Three sources, each keeping at most a few best partners per image by a cheap score:
- latent: an image's k nearest neighbours in the version's vector engine at or above a cosine floor;
- hash: an image's nearest by the perceptual hash of its whole picture and of the picture inside its frame
  (a border, a caption bar, a window), within CONTENT_MAX_BITS;
- keypoints: the images that share the most ORB keypoints with it (each keypoint's nearest ones in all
  the others, voted per image): turns, crops, screenshots and edits the latents were never trained on.
Every source streams over the collection in blocks; what is kept is at most k pairs per image and source.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

CHUNK = 4096  # query vectors (or hashes, or keypoints) per search
LATENT_K = 10  # neighbours searched per image
HASH_K = 5  # nearest hashes kept per image (whole and inside its frame, each)
CONTENT_MAX_BITS = 10  # distinct photographs came no closer than 12 inside their frames
KEYPOINT_K = 5  # images sharing the most keypoints, kept per image
MIN_VOTES = 6  # keypoints an image must share with another to propose it
MATCH_BITS = 48  # of ORB's 256: closer keypoints count as shared
NEAREST = 3  # keypoints looked up per keypoint (the first is often its own image's)
FLAT_BELOW = 60_000  # keypoints searched exhaustively below this many; an inverted file above
PER_LIST = 4  # an inverted list holding more than this many times its share is a "stop word": dropped
SOURCES = ("latent", "hash", "keypoints")


@dataclass
class Candidates:
    """Unique pairs (a < b, record rows) and what proposed them: a latent score (NaN: not a latent neighbour at the
    floor), a hash distance (-1: not proposed by hash) and shared keypoints (0: not proposed by keypoints)."""

    pairs: np.ndarray  # (M, 2) int64
    latent: np.ndarray  # (M,) float32
    bits: np.ndarray  # (M,) int16
    votes: np.ndarray  # (M,) int32

    def __len__(self) -> int:
        return len(self.pairs)

    def counts(self) -> dict[str, int]:
        return {"latent": int(np.isfinite(self.latent).sum()), "hash": int((self.bits >= 0).sum()),
                "keypoints": int((self.votes > 0).sum())}

    def promise(self, floor: float) -> np.ndarray:
        """How likely each pair is a copy, from what proposed it, in [0, 3]: the order pairs are verified in."""
        latent = np.where(np.isfinite(self.latent), np.clip((self.latent - floor) / max(1 - floor, 1e-6), 0, 1), 0)
        hashed = np.where(self.bits >= 0, 1 - self.bits / (CONTENT_MAX_BITS + 1), 0)
        shared = np.minimum(self.votes / (4 * MIN_VOTES), 1)
        best = np.maximum(np.maximum(latent, hashed), shared)
        return best + 0.5 * ((np.isfinite(self.latent)).astype(int) + (self.bits >= 0) + (self.votes > 0) - 1)


def merge(parts: list[tuple[np.ndarray, str, np.ndarray]], n: int) -> Candidates:
    """One row per unique pair from (pairs, source, values) parts; a pair proposed twice by one source keeps the best."""
    keys = [np.minimum(p[:, 0], p[:, 1]) * n + np.maximum(p[:, 0], p[:, 1]) for p, _, _ in parts]
    every = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    unique, inverse = np.unique(every, return_inverse=True)
    latent = np.full(len(unique), np.nan, np.float32)
    bits = np.full(len(unique), 999, np.int16)
    votes = np.zeros(len(unique), np.int32)
    at = 0
    for (pairs, source, values), key in zip(parts, keys):
        where = inverse[at: at + len(key)]
        at += len(key)
        if source == "latent":
            np.fmax.at(latent, where, values.astype(np.float32))
        elif source == "hash":
            np.minimum.at(bits, where, values.astype(np.int16))
        else:
            np.maximum.at(votes, where, values.astype(np.int32))
    bits[bits == 999] = -1
    pairs = np.c_[unique // max(n, 1), unique % max(n, 1)].astype(np.int64).reshape(-1, 2)
    return Candidates(pairs, latent, bits, votes)


@contextlib.contextmanager
def one_thread():
    """faiss on one thread for these small searches: its OpenMP threads spin, and on shared cores they burned 10x the
    CPU of the search itself (18 s against 1.9 s for 100 images' keypoints)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def latent_pairs(version, floor: float, k: int = LATENT_K, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, cosine) for every image's k nearest neighbours scoring at least `floor`, one chunk of queries at a time."""
    engine, records = version.engine(), version.records
    total, done, pairs, scores = max(len(records), 1), 0, [], []
    for ids, vectors, _ in engine.items(CHUNK):
        rows = records.rows_of(ids)
        hits = engine.search_many(np.asarray(vectors, np.float32), k + 1)
        found = [(i, hid, score) for i, row_hits in enumerate(hits) for hid, score in row_hits
                 if score >= floor and hid != ids[i]]
        if found:
            others = records.rows_of([hid for _, hid, _ in found])
            mine = rows[[i for i, _, _ in found]]
            good = (mine >= 0) & (others >= 0)
            pairs.append(np.c_[mine[good], others[good]])
            scores.append(np.asarray([s for _, _, s in found], np.float32)[good])
        done += len(ids)
        if progress:
            progress(done / total, f"searched {done:,} of {len(records):,} images for near copies")
    if not pairs:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    return np.concatenate(pairs).astype(np.int64), np.concatenate(scores)


def hash_pairs(codes: np.ndarray, usable: np.ndarray, k: int = HASH_K,
               max_bits: int = CONTENT_MAX_BITS) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, bits) for every usable image's k nearest packed 64-bit hashes within `max_bits` (faiss, exhaustive)."""
    import faiss

    rows = np.flatnonzero(usable)
    if len(rows) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int16)
    index = faiss.IndexBinaryFlat(64)
    index.add(np.ascontiguousarray(codes[rows]))
    pairs, bits = [], []
    for start in range(0, len(rows), CHUNK):
        with one_thread():
            distance, found = index.search(np.ascontiguousarray(codes[rows[start:start + CHUNK]]), min(k + 1, len(rows)))
        mine = np.repeat(np.arange(start, start + len(found)), found.shape[1])
        keep = (found.ravel() >= 0) & (found.ravel() != mine) & (distance.ravel() <= max_bits)
        pairs.append(np.c_[rows[mine[keep]], rows[found.ravel()[keep]]])
        bits.append(distance.ravel()[keep].astype(np.int16))
    return np.concatenate(pairs).astype(np.int64), np.concatenate(bits)


def keypoint_index(descriptors: np.ndarray):
    """A faiss binary index over keypoint descriptors, and which of them it holds (an inverted file drops the
    descriptors of overfull lists: corners every picture has, or that a crafted collection repeats)."""
    import faiss

    total = len(descriptors)
    if total < FLAT_BELOW:
        index = faiss.IndexBinaryFlat(256)
        index.add(descriptors)
        return index, np.arange(total)
    lists = int(np.clip(total // 1000, 64, 16384))
    quantizer = faiss.IndexBinaryFlat(256)
    index = faiss.IndexBinaryIVF(quantizer, 256, lists)
    sample = np.random.default_rng(0).choice(total, min(total, 50 * lists), replace=False)
    index.train(np.ascontiguousarray(descriptors[np.sort(sample)]))
    _, assigned = quantizer.search(descriptors, 1)
    sizes = np.bincount(assigned.ravel(), minlength=lists)
    kept = np.flatnonzero(sizes[assigned.ravel()] <= PER_LIST * total / lists)
    index.add_with_ids(np.ascontiguousarray(descriptors[kept]), kept.astype(np.int64))
    index.nprobe = 2
    return index, kept


def keypoint_pairs(table, k: int = KEYPOINT_K, min_votes: int = MIN_VOTES) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, votes) for every image's k partners sharing the most keypoints, at least `min_votes`.

    Each keypoint looks up its NEAREST nearest keypoints among all images' and votes once for each other image
    holding one within MATCH_BITS; votes are counted in blocks, so memory grows with the images, not their pairs."""
    owners = table.owners()
    if len(owners) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int32)
    n = len(table)
    with one_thread():
        index, kept = keypoint_index(table.descriptors)
    counted = []
    for start in range(0, len(kept), CHUNK):
        query = kept[start:start + CHUNK]
        with one_thread():
            distance, found = index.search(np.ascontiguousarray(table.descriptors[query]), NEAREST)
        mine = np.repeat(owners[query], NEAREST)
        other = np.where(found.ravel() >= 0, owners[np.maximum(found.ravel(), 0)], -1)
        good = (other >= 0) & (other != mine) & (distance.ravel() <= MATCH_BITS)
        voter = np.repeat(query, NEAREST)[good]
        key = np.minimum(mine[good], other[good]) * n + np.maximum(mine[good], other[good])
        counted.append(np.unique(np.c_[key, voter], axis=0)[:, 0])  # one vote per keypoint and image
    keys, votes = np.unique(np.concatenate(counted), return_counts=True)
    strong = votes >= min_votes
    keys, votes = keys[strong], votes[strong]
    pairs = np.c_[keys // n, keys % n].astype(np.int64).reshape(-1, 2)
    return top_per_image(pairs, votes, k, n)


def top_per_image(pairs: np.ndarray, scores: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs among each image's k best by score (a pair stays if it is among either image's)."""
    if not len(pairs):
        return pairs, scores
    ends = np.r_[pairs[:, 0], pairs[:, 1]]
    both = np.r_[scores, scores]
    order = np.lexsort((-both, ends))
    rank = np.empty(len(order), np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(ends[order])) + 1]
    group = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank[order] = np.arange(len(order)) - group
    keep = (rank[: len(pairs)] < k) | (rank[len(pairs):] < k)
    return pairs[keep], scores[keep]
