"""ORB keypoints of the picture inside its frame (OpenCV), for candidates and for the geometry check
(imgsim.features.geometry).

OpenCV's ORB takes about 3 ms a picture here where scikit-image's took 180-400 ms, which is what
makes keypoints of every image affordable in a scan.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from imgsim.features.pixels import content_box, read_pixels

cv2.setNumThreads(1)  # one picture at a time per thread; the callers choose the threads

# Measured by benchmarks/duplicates_eval.py --edits, on benchmarks/make_edit_set.py's set: ORB keypoints
# of each picture's content (its frame trimmed, long side VERIFY_SIDE px), matched and fitted by RANSAC
# to one similarity transform (imgsim.features.geometry).
VERIFY_SIDE = 320
KEYPOINTS = 300  # the strongest ones kept a picture
MIN_INLIERS = 12  # a burst shot inside an untrimmed dark frame reached 10 on the edit set; copies 13 and up


@dataclass
class Keypoints:
    points: np.ndarray  # (n, 2) float32 x, y in the content's own pixels (long side VERIFY_SIDE)
    descriptors: np.ndarray  # (n, 32) uint8: ORB's 256-bit descriptors, packed
    size: tuple[int, int]  # the content's (width, height)


_local = threading.local()


def detector():
    """One ORB detector per thread (OpenCV objects are not shared between threads)."""
    if not hasattr(_local, "orb"):
        _local.orb = cv2.ORB_create(nfeatures=4 * KEYPOINTS, scaleFactor=1.2, nlevels=6, edgeThreshold=19, patchSize=19,
                                   fastThreshold=12)
    return _local.orb


def spread_out(found, size: tuple[int, int], cells: int = 4) -> list:
    """KEYPOINTS of the detected ones, the strongest of each of cells x cells regions first, then the strongest left:
    a busy part (a noisy frame, foliage, text) cannot take every keypoint from the rest of the picture."""
    if len(found) <= KEYPOINTS:
        return list(found)
    w, h = size
    ranked = sorted(found, key=lambda k: -k.response)
    share, taken, chosen = KEYPOINTS // (cells * cells), {}, []
    rest = []
    for k in ranked:
        cell = (min(int(k.pt[0] * cells / w), cells - 1), min(int(k.pt[1] * cells / h), cells - 1))
        if taken.get(cell, 0) < share:
            taken[cell] = taken.get(cell, 0) + 1
            chosen.append(k)
        else:
            rest.append(k)
    return chosen + rest[: KEYPOINTS - len(chosen)]


def keypoints_of(content: np.ndarray) -> Keypoints | None:
    """ORB keypoints of an RGB picture (already trimmed to its content); None if too small, flat or plain to have any."""
    h, w = content.shape[:2]
    if min(h, w) < 8:
        return None
    scale = VERIFY_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if min(size) < 32:  # a sliver (a huge aspect ratio): ORB needs room round each keypoint
        return None
    grey = cv2.resize(cv2.cvtColor(np.ascontiguousarray(content, np.uint8), cv2.COLOR_RGB2GRAY), size,
                      interpolation=cv2.INTER_AREA).astype(np.float32)
    low, high = np.percentile(grey, [1, 99])
    if high - low < 8:
        return None  # one colour, or nearly
    grey = np.clip((grey - low) * (255 / (high - low)), 0, 255).astype(np.uint8)  # faded or dark copies keep corners
    orb = detector()
    found = spread_out(orb.detect(grey, None), size)
    found, descriptors = orb.compute(grey, found)
    if descriptors is None or len(found) < MIN_INLIERS:
        return None
    points = np.asarray([k.pt for k in found], np.float32)
    return Keypoints(points, descriptors, size)


def keypoints(path: str) -> Keypoints | None:
    """ORB keypoints of the picture inside its frame; None if unreadable or too small or flat to have any."""
    rgb = read_pixels(path, 2 * VERIFY_SIDE)
    if rgb is None or min(rgb.shape[:2]) < 8:
        return None
    left, top, right, bottom = content_box(rgb)
    return keypoints_of(rgb[top:bottom, left:right])
