"""Everything the near-copy scan knows of one picture, from a single decode: its perceptual hashes (whole, and inside
its frame), an 8 x 8 colour thumbnail and its ORB keypoints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from imgsim.features.keypoints import VERIFY_SIDE, Keypoints, keypoints_of
from imgsim.features.pixels import content_box, read_pixels


@dataclass
class Signature:
    phash: np.ndarray  # (8,) uint8: the whole picture's 64-bit pHash, packed
    content: np.ndarray  # (8,) uint8: the pHash of the picture inside its frame
    thumb: np.ndarray  # (8, 8, 3) uint8: the colours, which a hash cannot tell apart (every flat picture hashes alike)
    keypoints: Keypoints | None  # None: too small, flat or plain to have any


def phash_bits(rgb: np.ndarray) -> np.ndarray:
    """imagehash.phash of RGB pixels, its 64 bits packed into 8 bytes."""
    import imagehash

    return np.packbits(imagehash.phash(Image.fromarray(rgb.astype(np.uint8))).hash.reshape(-1))


def bits_apart(a: np.ndarray, b: np.ndarray) -> int:
    """Hamming distance between two packed hashes."""
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())


def signature_of(rgb: np.ndarray) -> Signature | None:
    """The signature of RGB pixels (long side about 2 x VERIFY_SIDE); None if too small to hash."""
    if min(rgb.shape[:2]) < 2:
        return None
    left, top, right, bottom = content_box(rgb) if min(rgb.shape[:2]) >= 8 else (0, 0, rgb.shape[1], rgb.shape[0])
    content = rgb[top:bottom, left:right]
    thumb = np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize((8, 8), Image.Resampling.BOX), np.uint8)
    return Signature(phash_bits(rgb), phash_bits(content), thumb, keypoints_of(content))


def signature(path: str) -> Signature | None:
    """The signature of an image file, decoded once; None if it cannot be read now."""
    rgb = read_pixels(path, 2 * VERIFY_SIDE)
    return None if rgb is None else signature_of(rgb)
