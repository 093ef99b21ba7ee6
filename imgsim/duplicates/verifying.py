"""Verdicts on candidate pairs: whether two images are copies and why (MATCHES), from their signatures' hashes,
keypoints and colours; checked in order of promise until a CPU budget runs out, saying what was left unchecked."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from imgsim.features import agreement, bits_apart

# Latent neighbours propose, a perceptual hash confirms: a near pair must also lie within this many
# of the 64 bits of imagehash.phash. Latents alone confuse two halves of one texture (gravel,
# grass) and lose turned copies before they reject those; pHash alone must stay tight (its best
# was 15 and 17 bits on the two sets) and then misses some crops and turns; checked only on latent
# neighbours it can be looser (18: between pHash's own best and the pair's, 21 and 19), and the
# two together beat either (benchmarks/duplicates-results.txt).
PHASH_MAX_DISTANCE = 18
# Within 18 bits two views of one scene can still meet (a burst shot shifted by a third, another crop of
# the photograph: 18 bits apart in the tests). So the hash alone confirms a latent pair only within
# PHASH_SURE_DISTANCE; from there to PHASH_MAX_DISTANCE the keypoints must agree too, unless a picture
# has none to compare (tiny, flat), where the hash decides.
PHASH_SURE_DISTANCE = 10
COLOUR_LEVELS = 24  # mean difference of two 8 x 8 colour thumbnails that still counts as the same colours
# Why two images were called copies, strongest first: the same bytes; latent neighbours whose whole pictures' pHashes
# agree; pictures without keypoints (flat, tiny) whose hashes inside their frames and colours agree; and keypoints
# that agree on one transform (one picture inside the other), for pairs proposed by the latents, by the hashes of
# the pictures inside their frames, or by the keypoints they share.
MATCHES = ("exact", "latent+hash", "content+hash", "latent+geometry", "content+geometry", "keypoints+geometry")
UNCHECKED = "unchecked"  # a verdict the budget left undone


def colours_agree(ta: np.ndarray, tb: np.ndarray, flat_only: bool = False) -> bool:
    """Whether two 8 x 8 colour thumbnails agree (within COLOUR_LEVELS on average): a hash cannot tell one flat colour
    from another. `flat_only`: asked only when one of them is flat (a recoloured copy of a photograph keeps its hash,
    not its colours)."""
    ta, tb = ta.astype(np.float32), tb.astype(np.float32)
    if flat_only and ta.mean(-1).std() >= 8 and tb.mean(-1).std() >= 8:
        return True
    return float(np.abs(ta - tb).mean()) <= COLOUR_LEVELS


def verdict(sa, sb, latent: bool, proposed_otherwise: bool) -> tuple[str | None, bool]:
    """(kind, free) for two signatures: kind "hash", "geometry" or "hash+geometry" (both) when they are copies, else
    None; `free` whether the verdict holds without the latent evidence (so at any threshold, for a pair
    `proposed_otherwise` too)."""
    if sa is None or sb is None:
        return None, False  # a file gone or unreadable since indexing cannot be confirmed
    whole = bits_apart(sa.phash, sb.phash)
    ka, kb = sa.keypoints, sb.keypoints
    if latent and whole <= PHASH_SURE_DISTANCE and colours_agree(sa.thumb, sb.thumb, flat_only=True):
        if proposed_otherwise and ka is not None and kb is not None and geometry(ka, kb):
            return "hash+geometry", True  # the hash with the latents; without them, the geometry
        return "hash", False
    if ka is not None and kb is not None:
        return ("geometry", True) if geometry(ka, kb) else (None, False)
    # nothing to compare by geometry (tiny, flat): the hashes decide, with the colours
    free = bits_apart(sa.content, sb.content) <= PHASH_SURE_DISTANCE and colours_agree(sa.thumb, sb.thumb)
    if latent and whole <= PHASH_MAX_DISTANCE and colours_agree(sa.thumb, sb.thumb):
        return "hash", free
    return ("hash", True) if free else (None, False)


def geometry(ka, kb) -> bool:
    found = agreement(ka, kb)
    return found is not None and found.same


@dataclass
class Verified:
    """Per candidate pair: its verdict ("hash", "geometry", "hash+geometry", None, or UNCHECKED) and whether it holds at
    any threshold."""

    kinds: np.ndarray  # (M,) object
    free: np.ndarray  # (M,) bool
    seconds: float  # CPU seconds spent verifying

    @property
    def unchecked(self) -> int:
        return int(sum(k == UNCHECKED for k in self.kinds.tolist()))


def verify(candidates, table, floor: float, deadline: float | None, progress=None, clock=time.process_time) -> Verified:
    """Verdicts on every candidate pair, most promising first, until `clock()` (CPU seconds) passes `deadline`."""
    start = clock()
    kinds = np.full(len(candidates), UNCHECKED, object)
    free = np.zeros(len(candidates), bool)
    latent = np.isfinite(candidates.latent)
    otherwise = (candidates.bits >= 0) | (candidates.votes > 0)
    order = np.argsort(-candidates.promise(floor), kind="stable")
    for done, i in enumerate(order.tolist()):
        if deadline is not None and clock() > deadline:
            break
        a, b = candidates.pairs[i]
        kinds[i], free[i] = verdict(table.signature(int(a)), table.signature(int(b)), bool(latent[i]), bool(otherwise[i]))
        if progress and done % 500 == 499:
            progress(done / len(order), f"checked {done + 1:,} of {len(order):,} candidate pairs")
    return Verified(kinds, free, clock() - start)


def evidence(kind: str, latent_at_threshold: bool, hashed: bool) -> str:
    """The MATCHES name of a verdict: what proposed the pair (the latents, if above the threshold) and what confirmed it.

    A "hash+geometry" pair is named by the evidence that holds at the threshold: the hash where the latents propose
    it, else the geometry, so a scan from a lower floor names it as a scan from this threshold would."""
    if kind == "hash+geometry":
        kind = "hash" if latent_at_threshold else "geometry"
    if latent_at_threshold:
        return f"latent+{kind}"
    if kind == "hash" or hashed:
        return f"content+{kind}"
    return "keypoints+geometry"
