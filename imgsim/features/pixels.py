"""Pixels for the features: an image read small, and the picture inside its frame (borders, caption bars, window chrome,
a picture pasted on a blurred or noisy background)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from imgsim.core.errors import ImgsimError
from imgsim.inputs.images import open_image, read_bytes

EDGE_LIMIT = 0.45  # a frame takes at most this share of the picture from one edge
# A frame's inner edge, when the frame is no flat colour (a blurred fill, a texture, noise, another photograph): a line
# along which nearly every pixel changes sharply from the line before. Photographs rarely hold one across their
# whole width (a horizon changes by less somewhere along it); a picture pasted onto anything does.
EDGE_JUMP = 24.0  # grey levels between two neighbouring lines, counted per pixel
EDGE_SHARE = 0.9  # of the pixels along the line
# A flat frame ends where a picture starts: a straight line on which at least this share of the pixels differ from the
# frame's colour. A plain background that fades into the subject (a product shot, a blurred sky) has none, and is
# picture, not frame: trimming it would make two framings of one scene look like one inside the other.
EDGE_MIN_SHARE = 0.3


def read_pixels(path: str, side: int) -> np.ndarray | None:
    """The image as float32 RGB, its long side at most `side`; None if it cannot be read now."""
    try:
        img = open_image(read_bytes(path), path, draft_size=side)
        img.thumbnail((side, side), Image.Resampling.BILINEAR)
        return np.asarray(img.convert("RGB"), np.float32)
    except (ImgsimError, OSError, ValueError):
        return None


def frame_run(lines: np.ndarray, limit: int, tol: float = 6.0) -> int:
    """How many lines from this edge are a flat frame.

    Solid lines (98 % of pixels within `tol` of one colour) are frame; so are the lines between two
    solid ones that are at most an eighth of the picture apart (a caption's text, a window's title),
    but a frame must start with a solid line at the edge.
    """
    def solid(i):
        line = lines[i]
        return (np.abs(line - np.median(line, axis=0)).max(-1) <= tol).mean() >= 0.98

    limit = min(limit, len(lines) - 1)  # never the whole picture: trimming stops short of its last line
    gap = max(2, len(lines) // 8)
    last = flat_run(lines, limit, gap, solid)
    if last and (np.abs(lines[last] - np.median(lines[last - 1], axis=0)).max(-1) > 3 * tol).mean() < EDGE_MIN_SHARE:
        return 0  # no straight edge where it ends: a plain background fading into the subject, not a frame
    return last


def flat_run(lines: np.ndarray, limit: int, gap: int, solid) -> int:
    """Lines from this edge that `solid` calls frame, with the gaps of at most `gap` lines between them (a caption)."""
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


def edge_run(lines: np.ndarray, limit: int) -> int:
    """How many lines from this edge lie outside a straight inner edge (EDGE_JUMP, EDGE_SHARE): a frame of any texture.

    The outermost such edge at least 2 lines in wins; 0 when there is none within `limit` lines."""
    limit = min(limit, len(lines) - 1)
    if limit < 3:
        return 0
    grey = lines[: limit + 1].mean(-1)
    jumps = (np.abs(np.diff(grey, axis=0)) > EDGE_JUMP).mean(-1)  # jumps[i]: between line i and i + 1
    found = np.flatnonzero(jumps[1:] >= EDGE_SHARE)
    return int(found[0]) + 2 if len(found) else 0


def trim(rgb: np.ndarray, box: tuple[int, int, int, int], run, passes: int) -> tuple[int, int, int, int]:
    """`box` with what `run` calls frame taken off each edge: rows, then columns inside them, `passes` times (a
    window's title bar spans its columns)."""
    h, w = rgb.shape[:2]
    left, top, right, bottom = box
    for _ in range(passes):
        rows = rgb[top:bottom, left:right]
        top, bottom = top + run(rows, int(h * EDGE_LIMIT)), bottom - run(rows[::-1], int(h * EDGE_LIMIT))
        if bottom - top < 8:
            break
        across = rgb[top:bottom, left:right].transpose(1, 0, 2)
        left, right = left + run(across, int(w * EDGE_LIMIT)), right - run(across[::-1], int(w * EDGE_LIMIT))
        if right - left < 8:
            break
    return left, top, right, bottom


def content_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the picture inside its frame: flat borders, letterboxes, caption bars and window
    chrome first, then a frame of any texture that ends at a straight edge (a blurred fill, noise, a scanned mount)."""
    h, w = rgb.shape[:2]
    box = trim(rgb, (0, 0, w, h), frame_run, 2)
    if box[3] - box[1] >= 8 and box[2] - box[0] >= 8:
        box = trim(rgb, box, edge_run, 1)
    left, top, right, bottom = box
    if bottom - top < 8 or right - left < 8:
        return 0, 0, w, h  # all frame (one colour): nothing to trim to
    return left, top, right, bottom
