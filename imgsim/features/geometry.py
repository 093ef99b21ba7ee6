"""Whether one picture is a copy of another by geometry: keypoints that agree on one similarity transform."""

from __future__ import annotations

import numpy as np

from imgsim.features.keypoints import MIN_INLIERS, Keypoints

# A copy's content lies inside the other picture (cover 0.89-1.00 on the edit set); a burst shot shifted
# by 30-40 % or another crop of the same photograph does not (0.61-0.71 and less).
MIN_COVER = 0.85


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

