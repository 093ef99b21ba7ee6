"""Pixels for the features: an image read small, and the picture inside its frame (borders, caption bars, window chrome)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from imgsim.core.errors import ImgsimError
from imgsim.inputs.images import open_image, read_bytes


def read_pixels(path: str, side: int) -> np.ndarray | None:
    """The image as float32 RGB, its long side at most `side`; None if it cannot be read now."""
    try:
        img = open_image(read_bytes(path), path, draft_size=side)
        img.thumbnail((side, side), Image.Resampling.BILINEAR)
        return np.asarray(img.convert("RGB"), np.float32)
    except (ImgsimError, OSError, ValueError):
        return None


def frame_run(lines: np.ndarray, limit: int, tol: float = 6.0) -> int:
    """How many lines from this edge are a frame.

    Solid lines (98 % of pixels within `tol` of one colour) are frame; so are the lines between two
    solid ones that are at most an eighth of the picture apart (a caption's text, a window's title),
    but a frame must start with a solid line at the edge.
    """
    def solid(i):
        line = lines[i]
        return (np.abs(line - np.median(line, axis=0)).max(-1) <= tol).mean() >= 0.98

    limit = min(limit, len(lines) - 1)  # never the whole picture: trimming stops short of its last line
    gap = max(2, len(lines) // 8)
    n, last = 0, 0
    while n < limit:
        if solid(n):
            last = n + 1
            n += 1
            continue
        if not last:
            break  # no frame at this edge
        n = next((m for m in range(n + 1, min(n + gap, limit)) if solid(m)), limit)
    return last


def content_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the picture inside its frame (borders, letterbox, caption bars, window chrome)."""
    h, w = rgb.shape[:2]
    left, top, right, bottom = 0, 0, w, h
    for _ in range(2):  # rows, then columns inside them, and again (a window's title bar spans its columns)
        rows = rgb[top:bottom, left:right]
        top, bottom = top + frame_run(rows, int(h * 0.45)), bottom - frame_run(rows[::-1], int(h * 0.45))
        across = rgb[top:bottom, left:right].transpose(1, 0, 2)
        if bottom - top < 8:
            break
        left, right = left + frame_run(across, int(w * 0.45)), right - frame_run(across[::-1], int(w * 0.45))
        if right - left < 8:
            break
    if bottom - top < 8 or right - left < 8:
        return 0, 0, w, h  # all frame (one colour): nothing to trim to
    return left, top, right, bottom

