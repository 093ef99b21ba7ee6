"""Small binary local features of an image, cheap enough to find on every image at indexing and on every query.

Re-checking a query's top answers (imgsim.search.rerank) asks whether two pictures show the same scene:
their keypoints must agree on one similarity transform (imgsim.features.matching). skimage's ORB does
that job at 256 px for near copies (imgsim.features.keypoints) but takes about 0.4 s an image there and
25-60 ms at 128 px: too slow for every image of a collection and for a query's 50 ms. These are
ORB's parts, vectorised: skimage's FAST and Harris find corners on a small pyramid of the model's
input (SIDE px square, the pixels `decode` gives every model), the intensity centroid turns each
patch, and 256 fixed pairs of pixels compared inside the turned patch make its binary descriptor
(BRIEF). The patch is smaller than ORB's (RADIUS), so a 128 px picture keeps corners near its edges.

On photos-hard-8, two views of one photograph agree on at least 8 keypoints in 79 % of pairs, distinct
photographs on 5 at most (imgsim.search.rerank, where the figures are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT = 1  # bumped whenever anything below changes what a stored feature means
SIDE = 128  # features are found on the model's input resampled to SIDE x SIDE
MIN_IMAGE_SIZE = 48  # a model input smaller than this holds too few corners: no features
KEYPOINTS = 160  # at most this many an image, the strongest corners of every level together
LEVELS = 3  # pyramid levels, each STEP times smaller than the last
STEP = 1.4
RADIUS = 12  # the patch round a keypoint, in its level's pixels
FAST_THRESHOLD = 0.05
DESCRIPTOR_BYTES = 32  # 256 pixel comparisons
MIN_CONTRAST = 8 / 255  # a picture whose 1st and 99th percentile of grey are closer is flat: no features

# The comparisons: pairs of offsets drawn once, normal round the centre as in BRIEF's best layout, each
# offset inside the disk of radius RADIUS - 1 so that a turned patch stays inside the picture. The legacy
# RandomState's stream never changes between NumPy releases, so stored descriptors stay valid.
_OFFSETS = np.random.RandomState(20261206).normal(0, RADIUS / 2.5, (16 * DESCRIPTOR_BYTES, 2))
_OFFSETS *= np.minimum(1, (RADIUS - 1) / np.maximum(np.hypot(*_OFFSETS.T), 1e-9))[:, None]
_OFFSETS = np.rint(_OFFSETS).astype(np.float32)  # rows 2i and 2i + 1: the two pixels of comparison i
_MIRRORED = _OFFSETS * np.array([1, -1], np.float32)
_DISK = [(dy, dx) for dy in range(-RADIUS, RADIUS + 1) for dx in range(-RADIUS, RADIUS + 1)
         if dx * dx + dy * dy <= RADIUS * RADIUS]
_DISK_Y, _DISK_X = (np.array(axis, np.int64) for axis in zip(*_DISK))
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints of one picture in SIDE px coordinates, strongest first."""

    points: np.ndarray  # (n, 2) float32 x, y
    angles: np.ndarray  # (n,) float32 radians: each patch's turn (intensity centroid)
    scales: np.ndarray  # (n,) float32 the level's size factor (1, STEP, STEP**2 ...)
    descriptors: np.ndarray  # (n, DESCRIPTOR_BYTES) uint8, 256 packed bits

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def empty(cls) -> LocalFeatures:
        return cls(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros((0, DESCRIPTOR_BYTES), np.uint8))


@dataclass(frozen=True)
class QueryFeatures:
    """A query's features as it is and as its mirror image (views of a scene are often mirrored)."""

    plain: LocalFeatures
    mirrored: LocalFeatures

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for f in (self.plain, self.mirrored) for a in (f.points, f.angles, f.scales, f.descriptors))


def grey_square(image: np.ndarray) -> np.ndarray | None:
    """A model input ((size, size, 3) float in [0, 1]) as SIDE x SIDE grey, its 1st-99th percentile stretched
    to [0, 1] (so light, contrast and colour shifts change nothing); None if it is flat or too small."""
    from PIL import Image

    if image.ndim != 3 or image.shape[0] < MIN_IMAGE_SIZE or image.shape[1] < MIN_IMAGE_SIZE:
        return None
    grey = np.asarray(image, np.float32) @ _LUMA
    if grey.shape != (SIDE, SIDE):
        grey = np.asarray(Image.fromarray(grey).resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.float32)
    low, high = np.percentile(grey, [1, 99])
    if not high - low >= MIN_CONTRAST:  # also a NaN
        return None
    return np.clip((grey - low) / (high - low), 0, 1)


def describe(image: np.ndarray) -> LocalFeatures:
    """The local features of a model input (or of a SIDE x SIDE grey array from `grey_square`)."""
    return _features(image, mirror=False)[0]


def describe_query(image: np.ndarray) -> QueryFeatures:
    """The query's features and its mirror image's, found once (a mirror's corners are the same corners)."""
    return QueryFeatures(*_features(image, mirror=True))


def describe_many(images: np.ndarray) -> list[LocalFeatures]:
    """`describe` for each image of a batch (n, size, size, 3)."""
    return [describe(image) for image in images]


def _features(image: np.ndarray, mirror: bool) -> tuple[LocalFeatures, LocalFeatures]:
    """(features, the mirror image's features, or empty ones unless `mirror`)."""
    grey = image if image.ndim == 2 else grey_square(image)
    levels = [] if grey is None else [_corners(grey, level) for level in range(LEVELS)]
    levels = [found for found in levels if found is not None]
    if not levels:
        return LocalFeatures.empty(), LocalFeatures.empty()
    # the KEYPOINTS strongest corners of all levels, then a patch turn and a descriptor for those alone
    strength = np.concatenate([found[3] for found in levels])
    level_of = np.concatenate([np.full(len(found[3]), i) for i, found in enumerate(levels)])
    strongest = np.sort(np.argsort(-strength, kind="stable")[:KEYPOINTS])  # in level order
    chosen = np.zeros(len(strength), bool)
    chosen[strongest] = True
    parts = []
    for i, (level_grey, xs, ys, _, scale) in enumerate(levels):
        pick = chosen[level_of == i]
        parts.append(_describe_corners(level_grey, xs[pick], ys[pick], scale, mirror))
    points, angles, scales, descriptors, flipped = (np.concatenate(part) for part in zip(*parts))
    order = np.argsort(-strength[strongest], kind="stable")  # strongest first
    points, angles, scales = points[order], angles[order], scales[order]
    plain = LocalFeatures(points, angles, scales, descriptors[order])
    if not mirror:
        return plain, LocalFeatures.empty()
    mirror_points = np.c_[(SIDE - 1) - points[:, 0], points[:, 1]].astype(np.float32)
    return plain, LocalFeatures(mirror_points, (np.pi - angles).astype(np.float32), scales, flipped[order])


def _corners(grey: np.ndarray, level: int):
    """(the level's grey, xs, ys, strength, scale) of one pyramid level's corners, or None."""
    from PIL import Image
    from scipy import ndimage
    from skimage.feature import corner_fast

    scale = STEP ** level
    if level:
        width = max(1, round(SIDE / scale))
        grey = np.array(Image.fromarray(grey).resize((width, width), Image.Resampling.BILINEAR), np.float32)
    margin = RADIUS + 1
    if min(grey.shape) <= 2 * margin + 2:
        return None
    # Corners ranked by FAST's own response (as OpenCV's ORB with FAST_SCORE): ranking them by Harris's
    # measure instead, as skimage's ORB does, cost a third of the time for the same precision (0.871 against
    # 0.870 on photos-hard-8, benchmarks/quality_rerank.py's setting).
    score = corner_fast(grey, n=9, threshold=FAST_THRESHOLD)
    peaks = (score == ndimage.maximum_filter(score, 3)) & (score > 0)
    peaks[:margin], peaks[-margin:], peaks[:, :margin], peaks[:, -margin:] = False, False, False, False
    ys, xs = np.nonzero(peaks)
    if not len(ys):
        return None
    return grey, xs, ys, score[ys, xs], scale


def _describe_corners(grey: np.ndarray, xs, ys, scale: float, mirror: bool):
    """(points, angles, scales, descriptors, mirrored descriptors or an empty array) of corners on one level."""
    from scipy import ndimage

    patch = grey[ys[:, None] + _DISK_Y, xs[:, None] + _DISK_X]
    angles = np.arctan2(patch @ _DISK_Y.astype(np.float32), patch @ _DISK_X.astype(np.float32)).astype(np.float32)
    smooth = ndimage.gaussian_filter(grey, 1.2)
    # the mirror image's descriptor at the mirrored corner: the same comparisons with the offsets mirrored in y
    bits = _brief(smooth, xs, ys, angles, np.concatenate([_OFFSETS, _MIRRORED]) if mirror else _OFFSETS)
    flipped = bits[:, DESCRIPTOR_BYTES:] if mirror else np.zeros((len(xs), 0), np.uint8)
    return (np.c_[xs, ys].astype(np.float32) * scale, angles, np.full(len(xs), scale, np.float32),
            bits[:, :DESCRIPTOR_BYTES], flipped)


def _brief(smooth: np.ndarray, xs, ys, angles, offsets) -> np.ndarray:
    """Packed bits: pixel 2i < pixel 2i + 1 of the offsets, turned by each keypoint's angle (keypoints lie
    at least RADIUS + 1 from the edges, offsets within RADIUS - 1 of the centre: no pixel falls outside)."""
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    dx, dy = offsets[:, 0], offsets[:, 1]
    x = np.rint(cos * dx - sin * dy).astype(np.int64) + xs[:, None]
    y = np.rint(sin * dx + cos * dy).astype(np.int64) + ys[:, None]
    values = smooth.ravel()[y * smooth.shape[1] + x]
    return np.packbits(values[:, 0::2] < values[:, 1::2], axis=1)


def stack(features: list[LocalFeatures], keypoints: int = KEYPOINTS) -> dict:
    """Features of many images as padded columns: counts (n,), points (n, k, 2), angles and levels (n, k),
    descriptors (n, k, DESCRIPTOR_BYTES); a level is the pyramid step a keypoint was found at."""
    n = len(features)
    out = {"counts": np.zeros(n, np.int64), "points": np.zeros((n, keypoints, 2), np.float32),
           "angles": np.zeros((n, keypoints), np.float32), "levels": np.zeros((n, keypoints), np.uint8),
           "descriptors": np.zeros((n, keypoints, DESCRIPTOR_BYTES), np.uint8)}
    for row, found in enumerate(features):
        count = min(len(found), keypoints)
        out["counts"][row] = count
        out["points"][row, :count] = found.points[:count]
        out["angles"][row, :count] = found.angles[:count]
        out["levels"][row, :count] = np.rint(np.log(found.scales[:count]) / np.log(STEP))
        out["descriptors"][row, :count] = found.descriptors[:count]
    return out


def scales_of(levels: np.ndarray) -> np.ndarray:
    """The size factor of each pyramid level (`stack`'s levels back to LocalFeatures.scales)."""
    return np.power(np.float32(STEP), np.asarray(levels, np.float32))
