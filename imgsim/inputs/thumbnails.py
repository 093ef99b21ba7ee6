"""Small JPEG copies of collection images for display grids; callers cache them by (path, mtime)."""

from __future__ import annotations

import io
import os

from PIL import Image

from imgsim.core.errors import ImageError
from imgsim.inputs.images import thumbnail

PLACEHOLDER_GREY = (205, 205, 205)


def encode_jpeg(img: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def thumbnail_jpeg(source, px: int = 192) -> bytes:
    """A JPEG at most px on its longer side; raises ImageError for an unreadable source."""
    return encode_jpeg(thumbnail(source, px))


def placeholder_jpeg(px: int = 192) -> bytes:
    """A grey tile standing in for a file that is gone or unreadable."""
    return encode_jpeg(Image.new("RGB", (px, px), PLACEHOLDER_GREY))


def mtime_ns(path) -> int:
    """The file's modification time, the cache key that makes an edited file get a new thumbnail; 0 if gone."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def thumbnail_or_placeholder(path, px: int = 192) -> bytes:
    try:
        return thumbnail_jpeg(path, px)
    except ImageError:
        return placeholder_jpeg(px)
