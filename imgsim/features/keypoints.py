"""ORB keypoints of the picture inside its frame, for the geometry check (imgsim.features.geometry)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from imgsim.features.pixels import content_box, read_pixels

# Measured by benchmarks/duplicates_eval.py --edits, on benchmarks/make_edit_set.py's set: ORB keypoints
# of each picture's content (its frame trimmed, long side VERIFY_SIDE px) matched and fitted by RANSAC
# to one similarity transform (imgsim.features.geometry). Copies kept 6-400 inliers, distinct photographs
# at most 3 among the closest pairs.
VERIFY_SIDE = 256
MIN_INLIERS = 10


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

