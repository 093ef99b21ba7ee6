"""Perceptual hashes (imagehash.phash) of a whole picture and of the picture inside its frame, as 64 booleans."""

from __future__ import annotations

import numpy as np

from imgsim.core.errors import ImgsimError
from imgsim.features.pixels import content_box, read_pixels
from imgsim.inputs.images import open_image, read_bytes


def picture_hash(path: str) -> np.ndarray | None:
    """The image's 64-bit perceptual hash (imagehash.phash) as 64 booleans; None if it cannot be read now."""
    import imagehash

    try:
        img = open_image(read_bytes(path), path, draft_size=64)
    except ImgsimError:
        return None
    return imagehash.phash(img).hash.reshape(-1)


def content_hash(path: str) -> np.ndarray | None:
    """imagehash.phash of the picture inside its frame, as 64 booleans; None if unreadable."""
    from imgsim.features.signature import phash_bits

    rgb = read_pixels(path, 128)
    if rgb is None or min(rgb.shape[:2]) < 2:
        return None
    left, top, right, bottom = content_box(rgb)
    return np.unpackbits(phash_bits(rgb[top:bottom, left:right])).astype(bool)
