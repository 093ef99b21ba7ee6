"""How many keypoints of a query agree with each of many candidates on one similarity transform, all at once.

For every candidate: binary descriptors matched both ways (each the other's nearest, clearly nearer
than the second nearest), then every match of the strongest few proposes the transform its two
keypoints' positions, turns and scales imply (one match is enough to propose one, so no random
sampling: the same inputs always give the same count), the proposal that most matches agree with is
refitted by least squares to its agreeing matches, and those are counted again. The count is the
evidence that two pictures show one scene: views of one photograph (crops, turns, light, grey) keep
many, look-alike textures almost none (imgsim.features.local's figures).

Hamming distances come from faiss (`faiss.hammings`, about 20 times numpy's popcount here); the
rest is numpy over arrays shaped (candidates, query keypoints, ...), so 50 candidates cost one pass.
"""

from __future__ import annotations

import numpy as np

from imgsim.features.local import DESCRIPTOR_BYTES, LocalFeatures

RATIO = 0.8  # a match's distance below this share of the second nearest's
MAX_DISTANCE = 64  # of 256 bits
PROPOSALS = 24  # matches per candidate (the closest) that each propose a transform
PROPOSAL_TOLERANCE = 6.0  # px at SIDE, times the transform's scale when it enlarges: a proposal is rough
TOLERANCE = 3.0  # px, the same, once refitted
REFITS = 2


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) int32 bits that differ between packed descriptors."""
    import faiss

    a = np.ascontiguousarray(a, np.uint8)
    b = np.ascontiguousarray(b, np.uint8)
    out = np.empty((len(a), len(b)), np.int32)
    if len(a) and len(b):
        faiss.hammings(faiss.swig_ptr(a), faiss.swig_ptr(b), len(a), len(b), DESCRIPTOR_BYTES, faiss.swig_ptr(out))
    return out


def agreeing(queries: list[LocalFeatures], points: np.ndarray, angles: np.ndarray, scales: np.ndarray,
             descriptors: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inliers, matches), each (n,) int: how many keypoints of the best of `queries` (a query and its mirror
    image) agree on one similarity with each of n candidates, and how many of them matched it at all (the
    evidence's base: imgsim.search.rerank.same_scene). The queries' distances are found in one pass.

    Candidates are stacked and padded: points (n, k, 2), angles and scales (n, k), descriptors
    (n, k, DESCRIPTOR_BYTES), of which each candidate's first counts[i] are real.
    """
    n, k = descriptors.shape[:2]
    counts = np.minimum(np.asarray(counts, np.int64), k)
    queries = [query for query in queries if len(query)]
    inliers, matches = np.zeros(n, np.int64), np.zeros(n, np.int64)
    if not n or not queries or not k:
        return inliers, matches
    far = 8 * DESCRIPTOR_BYTES
    sizes = [len(query) for query in queries]
    stacked = np.concatenate([query.descriptors for query in queries])
    distance = hamming(stacked, descriptors.reshape(n * k, -1)).reshape(len(stacked), n, k)
    distance[:, np.arange(k)[None, :] >= counts[:, None]] = far  # padding never matches
    nearest = distance.argmin(2)  # (q, n): each query keypoint's nearest in each candidate
    best = np.take_along_axis(distance, nearest[:, :, None], 2)[:, :, 0]
    mutual = np.zeros_like(best, bool)
    for rows in _blocks(sizes):  # and it is that keypoint's nearest among its own query's keypoints too
        closest = distance[rows].min(0)  # (n, k)
        mutual[rows] = best[rows] == closest[np.arange(n)[None, :], nearest[rows]]
    np.put_along_axis(distance, nearest[:, :, None], far, 2)
    second = distance.min(2)
    valid = mutual & (best <= MAX_DISTANCE) & (best < RATIO * second)  # (q, n)
    for query, rows in zip(queries, _blocks(sizes)):
        found, matched = _geometry(query, valid[rows].T, best[rows].T, nearest[rows].T, points, angles, scales)
        better = found > inliers
        inliers, matches = np.where(better, found, inliers), np.where(better, matched, matches)
    return inliers, matches


def _blocks(sizes):
    """Row slices of consecutive blocks of these sizes."""
    ends = np.cumsum(sizes)
    return [slice(end - size, end) for size, end in zip(sizes, ends.tolist())]


def _geometry(query: LocalFeatures, valid, best, nearest, points, angles, scales):
    """(inliers, matches) of one query against the candidates, from its matches: valid, best and nearest (n, q)."""
    n = len(valid)
    matches = valid.sum(1)
    # Few matches survive (about 6 a candidate on photos-hard-8): the rest of the work is on them alone.
    width = max(1, int(matches.max()))
    order = np.argsort(np.where(valid, best, 8 * DESCRIPTOR_BYTES + 1), axis=1, kind="stable")[:, :width]
    valid = np.take_along_axis(valid, order, 1)  # closest first
    nearest = np.take_along_axis(nearest, order, 1)  # (n, m)
    a = query.points[order]  # (n, m, 2)
    b = points[np.arange(n)[:, None], nearest]
    turn = angles[np.arange(n)[:, None], nearest] - query.angles[order]
    size = scales[np.arange(n)[:, None], nearest] / query.scales[order]
    return _inliers(a, b, turn, size, valid), matches


def _inliers(a, b, turn, size, valid) -> np.ndarray:
    """Per candidate (first axis): the most matches one refitted similarity maps a onto b within TOLERANCE.

    Matches are in order of descriptor distance, closest first; the first PROPOSALS propose."""
    n, q = valid.shape
    if not valid.any():
        return np.zeros(n, np.int64)
    za, zb = a[..., 0] + 1j * a[..., 1], b[..., 0] + 1j * b[..., 1]  # points as complex numbers: z -> m z + t
    m = size * np.exp(1j * turn)  # (n, q) each match's own turn and scale
    pm, pa, pb, proposer = m[:, :PROPOSALS], za[:, :PROPOSALS], zb[:, :PROPOSALS], valid[:, :PROPOSALS]
    t = pb - pm * pa  # (n, p)
    error = np.abs(pm[:, :, None] * za[:, None, :] + t[:, :, None] - zb[:, None, :])  # (n, p, q)
    agree = (error <= PROPOSAL_TOLERANCE * np.maximum(np.abs(pm), 1)[:, :, None]) & valid[:, None, :]
    agree &= proposer[:, :, None]
    keep = agree[np.arange(n), agree.sum(2).argmax(1)]  # (n, q): the best proposal's matches
    for _ in range(REFITS):
        keep = _refit(za, zb, keep, valid)
    return keep.sum(1)


def _refit(za, zb, keep, valid):
    """The matches within TOLERANCE of the least-squares similarity (z -> m z + t) through `keep`'s matches."""
    weight = keep.astype(np.float64)
    total = weight.sum(1)
    enough = total >= 3
    total = np.maximum(total, 1)
    ca = (weight * za).sum(1) / total
    cb = (weight * zb).sum(1) / total
    da, db = za - ca[:, None], zb - cb[:, None]
    m = (weight * np.conj(da) * db).sum(1) / np.maximum((weight * np.abs(da) ** 2).sum(1), 1e-9)
    error = np.abs(m[:, None] * da - db)
    return (error <= TOLERANCE * np.maximum(np.abs(m), 1)[:, None]) & valid & enough[:, None]
