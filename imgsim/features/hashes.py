"""The perceptual hash (imagehash.phash) of a whole picture, as 64 booleans (the picture inside its frame: signature)."""

from __future__ import annotations

import numpy as np

from imgsim.core.errors import ImgsimError
from imgsim.inputs.images import open_image, read_bytes


def picture_hash(path: str) -> np.ndarray | None:
    """The image's 64-bit perceptual hash (imagehash.phash) as 64 booleans; None if it cannot be read now."""
    import imagehash

    try:
        img = open_image(read_bytes(path), path, draft_size=64)
    except ImgsimError:
        return None
    return imagehash.phash(img).hash.reshape(-1)
