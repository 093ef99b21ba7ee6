"""Whether one picture is a copy of another by geometry: keypoints that agree on one similarity transform, over the
largest region the two share.

A copy's content lies inside the other picture (cover 0.89-1.00 on the edit set); a burst shot shifted by 30-40 % or
another crop of the same photograph does not (0.61-0.71 and less). Two different pictures that share only a frame, a
caption bar, a logo or a stamp agree there and nowhere else, so the agreeing keypoints must also be spread over the
inside picture, its middle included: the largest agreeing region is the picture, not a part of its edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from imgsim.features.keypoints import MIN_INLIERS, Keypoints

MIN_COVER = 0.85
MAX_BITS = 64  # of ORB's 256: matches further apart are not the same corner
GRID = 8  # cells a side over the inside picture, for where the agreeing keypoints lie
# Of the cells holding keypoints, the share holding agreeing ones, overall and in the middle quarter. On the edit set,
# copies kept 0.37-1.0 overall (a large watermark over the middle: 0.29 there); a burst shot inside a dark frame
# that was not trimmed, 0.29 overall; two pictures that share only a frame, none in the middle.
MIN_AGREEING = 0.35
MIN_MIDDLE = 0.2
MIN_SCALE, MAX_SCALE = 0.2, 5.0  # between the two contents (each already scaled to the same long side)


@dataclass
class Agreement:
    inliers: int  # keypoint matches that agree on the transform
    cover: float  # the share of the inside picture that the transform puts inside the other
    agreeing: float  # of the inside picture's cells holding keypoints, the share holding agreeing ones
    middle: float  # the same, over the middle quarter of the picture (1.0 when nothing is there to match)

    @property
    def same(self) -> bool:
        return (self.inliers >= MIN_INLIERS and self.cover >= MIN_COVER and self.agreeing >= MIN_AGREEING
                and self.middle >= MIN_MIDDLE)


def cover(transform: np.ndarray, size_from: tuple[int, int], size_to: tuple[int, int]) -> float:
    """The share of a grid over one content that the 2 x 3 `transform` puts inside the other (3 % leeway)."""
    (w, h), (tw, th) = size_from, size_to
    xs, ys = np.meshgrid(np.linspace(0, w, 12), np.linspace(0, h, 12))
    mapped = np.c_[xs.ravel(), ys.ravel()] @ transform[:, :2].T + transform[:, 2]
    slack = 0.03 * max(tw, th)
    inside = ((mapped[:, 0] >= -slack) & (mapped[:, 0] <= tw + slack) & (mapped[:, 1] >= -slack)
              & (mapped[:, 1] <= th + slack))
    return float(inside.mean())


def spread(points: np.ndarray, agreeing: np.ndarray, size: tuple[int, int]) -> tuple[float, float]:
    """(overall, middle): of the grid cells holding keypoints, the share holding agreeing ones; the grid is as fine as
    the agreeing keypoints allow (about two a cell, GRID a side at most), so a copy seen at another scale, with
    fewer matches, is not judged on cells no match could reach."""
    w, h = size
    grid = int(np.clip(np.sqrt(agreeing.sum() / 2), 2, GRID)) // 2 * 2  # even: a middle of whole cells
    cells = (np.clip(points[:, 0] * grid / max(w, 1), 0, grid - 1).astype(int) * grid
             + np.clip(points[:, 1] * grid / max(h, 1), 0, grid - 1).astype(int))
    held = np.bincount(cells, minlength=grid * grid) > 0
    agreed = np.bincount(cells[agreeing], minlength=grid * grid) > 0
    middle = np.zeros((grid, grid), bool)
    middle[grid // 4: grid - grid // 4, grid // 4: grid - grid // 4] = True
    middle = middle.ravel()
    overall = agreed.sum() / max(held.sum(), 1)
    centre = agreed[middle].sum() / held[middle].sum() if held[middle].any() else 1.0
    return float(overall), float(centre)


def agreement(a: Keypoints | None, b: Keypoints | None) -> Agreement | None:
    """How two pictures' keypoints agree on one similarity transform (scale, turn, shift); None when they do not."""
    if a is None or b is None:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a.descriptors, b.descriptors)
    matches = [m for m in matches if m.distance <= MAX_BITS]
    if len(matches) < MIN_INLIERS:
        return None
    pa = a.points[[m.queryIdx for m in matches]]
    pb = b.points[[m.trainIdx for m in matches]]
    forward, inliers = cv2.estimateAffinePartial2D(pb, pa, method=cv2.RANSAC, ransacReprojThreshold=3.0,
                                                   maxIters=500, confidence=0.99)
    if forward is None or inliers is None or int(inliers.sum()) < MIN_INLIERS:
        return None
    scale = float(np.sqrt(abs(np.linalg.det(forward[:, :2]))))
    if not MIN_SCALE <= scale <= MAX_SCALE:
        return None
    backward = cv2.invertAffineTransform(forward)
    agreeing = inliers.ravel().astype(bool)
    b_in_a, a_in_b = cover(forward, b.size, a.size), cover(backward, a.size, b.size)
    if b_in_a >= a_in_b:  # b lies inside a: judge the spread over b's keypoints
        inside, found, size = b, pb[agreeing], b.size
    else:
        inside, found, size = a, pa[agreeing], a.size
    overall, middle = spread(np.r_[inside.points, found], np.r_[np.zeros(len(inside.points), bool),
                                                                  np.ones(len(found), bool)], size)
    return Agreement(int(agreeing.sum()), max(b_in_a, a_in_b), overall, middle)


def same_scene(a: Keypoints | None, b: Keypoints | None) -> bool:
    """Whether one picture is a copy of the other by geometry: at least MIN_INLIERS keypoint matches agree on one
    similarity transform, under which one content lies inside the other (MIN_COVER), the agreeing keypoints spread
    over it (MIN_AGREEING)."""
    found = agreement(a, b)
    return found is not None and found.same
