"""The one image-loading path: path, bytes or URL -> float32 RGB array at the model's size.

Training, indexing and queries all call `decode`, so an image is preprocessed identically
wherever it comes from. Formats are sniffed from the bytes (never the name), limited to an
allowlist, and the pixel count is checked from the header before anything is decoded.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_PIXELS = 40_000_000
MAX_FILE_BYTES = 64 * 1024 * 1024
BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, everywhere

# Pillow warns (and only errors at twice its own limit) on huge images; here a bomb is an error.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

Source = Union[str, os.PathLike, bytes]


def is_url(source) -> bool:
    return isinstance(source, str) and source.split(":", 1)[0].lower() in ("http", "https")


def describe(source) -> str:
    """A short name for a source, for error messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{memoryview(source).nbytes} bytes>"
    return str(source)


def read_bytes(source: Source, name: str | None = None) -> bytes:
    """The raw bytes of a path, an http(s) URL or bytes already in memory."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if is_url(source):
        from .fetch import fetch_url

        return fetch_url(source)
    path = Path(source)
    limit = f"over the {MAX_FILE_BYTES // 2**20} MB limit"
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{path}: is a folder, not an image")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise ImageError(f"{path}: not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ImageError(f"{path}: file is {info.st_size / 2**20:.0f} MB, {limit}")
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:  # e.g. a NUL character in the path
        raise ImageError(f"{describe(source)!r}: not a valid path ({exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{path}: file is {limit}")
    return data


def open_image(data: bytes, name: str = "image", draft_size: int | None = None) -> Image.Image:
    """Decode bytes to an RGB PIL image: allowlisted format, pixel cap, EXIF orientation, first frame.

    With `draft_size`, JPEGs are decoded at the smallest power-of-two reduction that is still at
    least that size (Pillow's draft mode), several times faster than a full decode.
    """
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise ImageError(
                f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, "
                f"over the {MAX_PIXELS / 1e6:.0f} megapixel limit"
            )
        if width < 1 or height < 1:
            raise ImageError(f"{name}: image has no pixels")
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.seek(0)
        img.load()  # force the decode here, so truncated data fails inside this handler
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow checks the same header size inside Image.open, before the check above can run.
        pixels = re.search(r"(\d+) pixels", str(exc))
        size = f"{int(pixels[1]) / 1e6:.0f} megapixels, " if pixels else ""
        raise ImageError(
            f"{name}: {size}over the {MAX_PIXELS / 1e6:.0f} megapixel limit (refused as a decompression bomb)"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None
    except Exception as exc:  # Pillow's plugins raise assorted types on hostile input
        raise ImageError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling 16- and 32-bit data instead of clipping it."""
    if img.mode in ("P", "L", "RGB") and "transparency" in img.info:
        img = img.convert("RGBA")  # a tRNS colour or palette entry, shown on the background like alpha
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if img.mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def to_array(img: Image.Image, size: int) -> np.ndarray:
    """Resize an RGB image to size x size and scale to float32 in [0, 1]."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img, dtype=np.float32) * np.float32(1 / 255)


def decode(data: bytes, size: int, name: str = "image") -> np.ndarray:
    """Bytes -> (size, size, 3) float32 array in [0, 1]; the preprocessing every model input gets."""
    return to_array(open_image(data, name, draft_size=size), size)


def load_image(source: Source, size: int) -> np.ndarray:
    """A path, http(s) URL or bytes -> (size, size, 3) float32 array in [0, 1]."""
    name = describe(source)
    return decode(read_bytes(source), size, name)


def load_images(sources, size: int) -> np.ndarray:
    """Several sources -> (n, size, size, 3); raises ImageError on the first bad one."""
    arrays = [load_image(s, size) for s in sources]
    return np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.float32)


def thumbnail(source: Source, px: int = 192) -> Image.Image:
    """A small RGB copy for display, decoded with draft mode so big JPEGs stay cheap."""
    img = open_image(read_bytes(source), describe(source), draft_size=px)
    img.thumbnail((px, px), Image.Resampling.BILINEAR)
    return img
