"""Verdicts on proposed pairs: why two images are copies (MATCHES), or why not, from their hashes, keypoints and colours."""

from __future__ import annotations

import numpy as np
from PIL import Image

from imgsim.features import Keypoints, keypoints, picture_hash, read_pixels, same_scene

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
# Why two images were called copies, strongest first: the same bytes; latent neighbours whose whole
# pictures' pHashes agree; latent neighbours whose keypoints agree (one inside the other); pictures
# whose hashes agree once their frames are trimmed, and whose keypoints agree.
MATCHES = ("exact", "latent+hash", "latent+geometry", "content+geometry")


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



class Verifier:
    """The verdicts on one collection's proposed pairs, each worked out once and kept with the features it read."""

    def __init__(self, paths):
        self.paths = paths
        self.hashes: dict[int, np.ndarray | None] = {}
        self.points: dict[int, Keypoints | None] = {}
        self.verdicts: dict[tuple, str | None] = {}
        self.thumbs: dict[int, np.ndarray | None] = {}

    def verdict(self, a: int, b: int, source: str) -> str | None:
        """Why a proposed pair is a copy (MATCHES), or None; worked out once per pair and kept."""
        key = (a, b, source, PHASH_SURE_DISTANCE, PHASH_MAX_DISTANCE)
        if key not in self.verdicts:
            paths = self.paths
            hashed = source == "latent"  # "nearby" (below the threshold): geometry alone confirms
            source = "latent" if source == "nearby" else source
            distance = hash_distance(paths, a, b, self.hashes) if hashed else None
            if hashed and distance is None:
                verdict = None  # unreadable now: not confirmed
            elif distance is not None and distance <= min(PHASH_SURE_DISTANCE, PHASH_MAX_DISTANCE):
                verdict = "latent+hash" if self.colours_agree(a, b, flat_only=True) else None
            else:
                for row in (a, b):
                    if row not in self.points:
                        self.points[row] = keypoints(paths[row])
                if same_scene(self.points[a], self.points[b]):
                    verdict = f"{source}+geometry"
                elif distance is not None and distance <= PHASH_MAX_DISTANCE and (
                        self.points[a] is None or self.points[b] is None) and self.colours_agree(a, b):
                    verdict = "latent+hash"  # nothing to compare by geometry: the hash decides, with the colours
                else:
                    verdict = None
            self.verdicts[key] = verdict
        return self.verdicts[key]

    def colours_agree(self, a: int, b: int, flat_only: bool = False) -> bool:
        """Whether two pictures' 8 x 8 colour thumbnails agree (within 24 levels on average): a hash cannot tell one
        flat colour from another (every flat picture hashes alike). `flat_only`: asked only when one of them is flat
        (a recoloured copy of a photograph keeps its hash, not its colours)."""
        for row in (a, b):
            if row not in self.thumbs:
                pixels = read_pixels(self.paths[row], 64)
                self.thumbs[row] = None if pixels is None or min(pixels.shape[:2]) < 1 else np.asarray(
                    Image.fromarray(pixels.astype(np.uint8)).resize((8, 8), Image.Resampling.BOX), np.float32)
        ta, tb = self.thumbs[a], self.thumbs[b]
        if ta is None or tb is None:
            return False
        if flat_only and ta.mean(-1).std() >= 8 and tb.mean(-1).std() >= 8:
            return True
        return float(np.abs(ta - tb).mean()) <= 24
