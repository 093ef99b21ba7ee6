"""The one image-loading path: path, bytes or URL -> float32 RGB array at the model's size.

Training, indexing and queries all call `decode`, so an image is preprocessed identically
wherever it comes from. Formats are sniffed from the bytes (never the name), limited to an
allowlist, and the pixel count and the memory the decode will take are checked from the header
before anything is decoded. Large images are reduced band by band before their mode is
converted, so no full-size copy is ever made: any accepted image costs under ~100 MB
(benchmarks/bench_decode_memory.py).
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, PngImagePlugin

from imgsim.core.errors import ImageError
from imgsim.inputs.structure import (  # noqa: F401  (the caps, read by tests and benchmarks as images.MAX_...)
    JPEG_EOI,
    JPEG_SIGNATURE,
    JPEG_SOS,
    MAX_FILE_BYTES,
    MAX_JPEG_MARKERS,
    MAX_JPEG_SCANS,
    MAX_JPEG_STRAY_BYTES,
    MAX_PNG_CHUNKS,
    MAX_PNG_COMPRESSED_CHUNKS,
    MAX_PNG_OTHER_CHUNKS,
    NEXT_JPEG_MARKER,
    PNG_COMPRESSED_CHUNKS,
    PNG_SIGNATURE,
    check_header,
    check_jpeg,
    check_png,
    jpeg_markers,
    jpeg_scan_components,
)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Names that promise a picture: a collection scan lists such a file as skipped, with the reason,
# when it cannot be read (any other file is counted as not an image).
IMAGE_LIKE_SUFFIXES = IMAGE_SUFFIXES | frozenset({
    ".jfif", ".pjpeg", ".pjp", ".apng", ".dib", ".svg", ".svgz", ".ppm", ".pgm", ".pbm", ".pnm", ".pam", ".pfm",
    ".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".ico", ".cur", ".tga", ".psd", ".xcf", ".pcx", ".qoi",
    ".dds", ".exr", ".hdr", ".eps", ".xbm", ".xpm", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf",
})
MAX_PIXELS = 40_000_000
# The longest side accepted, JPEG's own limit (WebP's is 16,383). A PNG is decoded row by row, and
# each row costs its own pass whatever its width: a 1 x 40,000,000 one took 6-9 s of CPU.
MAX_SIDE = 65_535
# Memory the decoder and the decoded pixels may take (a 77 KB 16-bit PNG of 6300x6300 pixels
# decodes to 76 MB). The file's own bytes come on top, and about BAND_PIXELS x 16 bytes for
# the band being converted.
MAX_DECODED_BYTES = 80 * 2**20
BAND_PIXELS = 500_000  # pixels converted to RGB at a time on the way to a reduced image
BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, everywhere
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
ORIENTATION_TAG = 0x0112
ORIENTATIONS = {  # EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# TIFF tags read to size libtiff's strip buffer
BITS_PER_SAMPLE, PHOTOMETRIC, SAMPLES_PER_PIXEL, ROWS_PER_STRIP, TILE_WIDTH, TILE_LENGTH = 258, 262, 277, 278, 322, 323

# Pillow warns (and only errors at twice its own limit) on huge images; here a bomb is an error.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# The text a PNG's chunks may hold once inflated, all together (Pillow's default is 64 MB, which on
# top of MAX_DECODED_BYTES would break the budget); imgsim reads none of it.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 2**20
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

Source = Union[str, os.PathLike, bytes]


def is_url(source) -> bool:
    """Whether a source is an http(s) URL: its scheme and `//` (a file may be named `http:a.jpg`, and `http:`
    may be a folder; `http://` cannot start a file's path, which has no empty folder names)."""
    return isinstance(source, str) and source[:8].lower().startswith(("http://", "https://"))


def describe(source) -> str:
    """A short name for a source, for error messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{memoryview(source).nbytes} bytes>"
    return str(source)


def read_bytes(source: Source, name: str | None = None, root=None) -> bytes:
    """The raw bytes of a path, an http(s) URL or bytes already in memory.

    With `root` (a collection's folder), a path is read only if it is a regular file inside it, through
    no link that leads out (imgsim.core.files.open_plain): a file swapped for a link to a picture
    elsewhere after indexing is refused, not shown.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if is_url(source):
        from imgsim.inputs.fetch import fetch_url

        return fetch_url(source)
    path = Path(source)
    limit = f"over the {MAX_FILE_BYTES // 2**20} MB limit"
    try:
        if root is not None:
            return read_inside(path, root)
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


def read_inside(path: Path, root) -> bytes:
    """A regular file's bytes, read only inside `root` and through no link out of it."""
    from imgsim.core.files import NotAPlainFile, open_plain

    try:
        fd, info = open_plain(path, root)
    except NotAPlainFile as exc:
        raise ImageError(str(exc)) from None
    with os.fdopen(fd, "rb") as file:
        if info.st_size > MAX_FILE_BYTES:
            raise ImageError(f"{path}: file is {info.st_size / 2**20:.0f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit")
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{path}: file is over the {MAX_FILE_BYTES // 2**20} MB limit")
    return data


def open_image(data: bytes, name: str = "image", draft_size: int | None = None, stretch: bool = False) -> Image.Image:
    """Decode bytes to an RGB PIL image: allowlisted format, pixel and memory caps, EXIF orientation, first frame.

    With `draft_size`, the image is only needed at about that size: JPEGs are decoded at the
    smallest power-of-two reduction still at least that size (Pillow's draft mode), and any
    image is then reduced (box average) to no less than twice that size before its mode is
    converted, the reduction `resize` would make anyway. The reduction keeps the aspect ratio,
    or with `stretch` (the caller squashes the image to draft_size x draft_size) reduces each
    side on its own.
    """
    return opened(data, name, draft_size, stretch)[0]


def opened(data: bytes, name: str, draft_size: int | None, stretch: bool) -> tuple[Image.Image, tuple[int, int]]:
    """`open_image`, and the image's full size upright (width, height), which a stretched reduction no longer shows."""
    with decode_errors(name):
        if data[:3] == JPEG_SIGNATURE:
            check_jpeg(data, name)
        elif data[:8] == PNG_SIGNATURE:
            check_png(data, name)
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        check_size(img.size, name)
        img.seek(0)
        size = img.size
        extra = format_buffers(img, data)  # before draft: libjpeg's buffers follow the full size
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        factors = reduction(img.size, draft_size, stretch)
        needed = decoded_bytes(img, factors) + extra
        if needed > MAX_DECODED_BYTES:
            raise ImageError(
                f"{name}: {size[0]}x{size[1]} {img.format} image ({img.mode}) needs {needed / 2**20:.0f} MB "
                f"to decode, over the {MAX_DECODED_BYTES // 2**20} MB memory limit"
            )
        img.load()  # force the decode here, so truncated data fails inside this handler
        transpose = ORIENTATIONS.get(img.getexif().get(ORIENTATION_TAG))
        img = reduced_rgb(img, factors)
        if transpose is None:
            return img, size
        turned = transpose in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE,
                               Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)
        return img.transpose(transpose), size[::-1] if turned else size


def check_size(size: tuple[int, int], name: str) -> None:
    """Refuse an image with no pixels, too many, or a side longer than MAX_SIDE, from its header's size."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, "
            f"over the {MAX_PIXELS / 1e6:.0f} megapixel limit"
        )
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image has no pixels")
    if max(width, height) > MAX_SIDE:
        raise ImageError(f"{name}: {width}x{height} has a side longer than {MAX_SIDE:,} pixels: refused")


def sniff(path) -> str:
    """The allowed format a file holds, from its header alone: no pixel is decoded.

    Cheap enough to run on every file of a folder (Pillow reads a few bytes, a few KB for a JPEG's
    markers), so files are recognised by content, never by name. Raises ImageError otherwise.
    """
    name = describe(path)
    try:
        file = open(path, "rb")
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from None
    with file, decode_errors(name):
        start = file.read(len(PNG_SIGNATURE))
        if start[:3] == JPEG_SIGNATURE:
            check_header(file, name, check_jpeg)
        elif start == PNG_SIGNATURE:
            check_header(file, name, check_png)
        file.seek(0)
        return Image.open(file, formats=ALLOWED_FORMATS).format


@contextmanager
def decode_errors(name: str):
    """Whatever Pillow raises on hostile input, as one ImageError naming the source."""
    try:
        yield
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow checks the same header size inside Image.open, before open_image's own check can run.
        pixels = re.search(r"(\d+) pixels", str(exc))
        size = f"{int(pixels[1]) / 1e6:.0f} megapixels, " if pixels else ""
        raise ImageError(
            f"{name}: {size}over the {MAX_PIXELS / 1e6:.0f} megapixel limit (refused as a decompression bomb)"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None
    except Exception as exc:  # Pillow's plugins raise assorted types on hostile input
        raise ImageError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from None


def pixel_bytes(mode: str) -> int:
    """Bytes one pixel of `mode` takes in Pillow's memory (multi-band pixels are padded to four bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def reduction(size: tuple[int, int], draft_size: int | None, stretch: bool) -> tuple[int, int]:
    """The box-average factors `resize(..., reducing_gap=2.0)` would apply on the way to draft_size."""
    if not draft_size:
        return (1, 1)
    width, height = size
    if stretch:
        return (max(1, width // (2 * draft_size)), max(1, height // (2 * draft_size)))
    factor = max(1, max(width, height) // (2 * draft_size))
    return (factor, factor)


def decoded_bytes(img: Image.Image, factors: tuple[int, int]) -> int:
    """Memory the decoded image and its reduced RGB copy take, from the header alone."""
    width, height = img.size
    needed = width * height * pixel_bytes(img.mode)
    if img.format == "WEBP":
        needed += width * height * 12  # libwebp's two canvases and the frame copied out of them (measured)
    elif img.tile and img.tile[0][0] == "bmp_rle":
        needed += 2 * width * height  # Pillow's RLE decoder builds the raw pixels twice before copying them
    if img.mode != "RGB" or factors != (1, 1) or "transparency" in img.info:
        needed += -(-width // factors[0]) * -(-height // factors[1]) * 4  # the RGB result is a new image
    return needed


def format_buffers(img: Image.Image, data: bytes) -> int:
    """Memory a format's decoder holds besides the image: libjpeg's coefficients, libtiff's strip buffer."""
    width, height = img.size
    if img.format == "JPEG" and (img.info.get("progressive") or jpeg_scan_components(data) != img.layers):
        # A progressive or multi-scan JPEG keeps every DCT coefficient (2 bytes a pixel per
        # full-size component) whatever the draft size; a baseline one decodes row by row.
        layers = [(h, v) for _, h, v, _ in img.layer if h and v] or [(1, 1)]
        top_h, top_v = max(h for h, _ in layers), max(v for _, v in layers)
        return int(width * height * 2 * sum(h * v for h, v in layers) / (top_h * top_v))
    if img.format == "TIFF" and img.info.get("compression", "raw") != "raw":
        tags = img.tag_v2
        rows = tags.get(TILE_LENGTH) or min(int(tags.get(ROWS_PER_STRIP, height)), height)
        columns = tags.get(TILE_WIDTH) or width
        bits = tags.get(BITS_PER_SAMPLE, (8,))
        per_pixel = int(tags.get(SAMPLES_PER_PIXEL, 1)) * -(-max(bits if isinstance(bits, tuple) else (bits,)) // 8)
        if tags.get(PHOTOMETRIC) == 6 or img.info["compression"] in ("jpeg", "tiff_jpeg"):
            per_pixel = max(per_pixel, 4)  # libtiff decodes YCbCr and JPEG strips to RGBA
        return int(rows) * int(columns) * per_pixel  # libtiff reads a whole strip or tile at once
    return 0


def reduced_rgb(img: Image.Image, factors: tuple[int, int]) -> Image.Image:
    """`to_rgb` then `reduce(factors)`, a tile of about BAND_PIXELS at a time, so no full-size copy is ever made.

    Tiles span whole rows when a row is short enough, and are cut across the row too when it is not
    (a 65,535 x 610 image): whole boxes of the reduction either way.
    """
    width, height = img.size
    if factors == (1, 1) and img.mode == "RGB" and "transparency" not in img.info:
        return img
    step_x, step_y = factors
    top = grey_top(img) if img.mode in HIGH_DEPTH_MODES else None
    columns = min(width, max(1, BAND_PIXELS // step_y // step_x) * step_x)
    rows = max(1, BAND_PIXELS // columns // step_y) * step_y
    out = Image.new("RGB", (-(-width // step_x), -(-height // step_y)))
    for y in range(0, height, rows):
        for x in range(0, width, columns):
            tile = to_rgb(img.crop((x, y, min(width, x + columns), min(height, y + rows))), top)
            out.paste(tile.reduce(factors) if factors != (1, 1) else tile, (x // step_x, y // step_y))
    return out


def grey_top(img: Image.Image) -> float:
    """The value that 16- and 32-bit grey data is scaled from to 255: its format's maximum, or 1.0 for floats in [0, 1]."""
    top_value = img.getextrema()[1]
    top_value = top_value if top_value == top_value else 0  # NaN in float data
    if img.mode == "F" and top_value <= 1.0:
        return 1.0
    return 65535.0 if img.mode.startswith("I;16") or top_value > 255 else 255.0


def to_rgb(img: Image.Image, top: float | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling 16- and 32-bit data (from `top`) instead of clipping it."""
    if img.mode in ("P", "L", "RGB") and "transparency" in img.info:
        img = img.convert("RGBA")  # a tRNS colour or palette entry, shown on the background like alpha
    if img.mode == "RGB":
        return img
    if img.mode in HIGH_DEPTH_MODES:
        top = grey_top(img) if top is None else top
        arr = np.array(img, dtype=np.float32)  # a band, never a whole large image (see reduced_rgb)
        arr *= np.float32(255.0 / top)
        arr += np.float32(0.5)
        np.nan_to_num(arr, copy=False)
        np.clip(arr, 0, 255, out=arr)
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
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
    return to_array(open_image(data, name, draft_size=size, stretch=True), size)


def decode_with_picture(data: bytes, size: int, name: str = "image", px: int = 256) -> tuple[np.ndarray, Image.Image]:
    """`decode`'s array, and a picture at most `px` on its longer side, from one decode of the bytes.

    The picture is the model's reduced input (at least twice `size` a side, where the image has
    it) put back in the image's proportions, so a query costs one decode, not two.
    """
    img, (width, height) = opened(data, name, size, stretch=True)
    scale = min(1.0, px / max(width, height))
    picture = img.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                         Image.Resampling.BILINEAR, reducing_gap=2.0)
    return to_array(img, size), picture


def load_image(source: Source, size: int) -> np.ndarray:
    """A path, http(s) URL or bytes -> (size, size, 3) float32 array in [0, 1]."""
    name = describe(source)
    return decode(read_bytes(source), size, name)


def load_images(sources, size: int) -> np.ndarray:
    """Several sources -> (n, size, size, 3); raises ImageError on the first bad one."""
    arrays = [load_image(s, size) for s in sources]
    return np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.float32)


def thumbnail(source: Source, px: int = 192, root=None) -> Image.Image:
    """A small RGB copy for display, decoded with draft mode so big JPEGs stay cheap (`root`: see `read_bytes`)."""
    img = open_image(read_bytes(source, root=root), describe(source), draft_size=px)
    img.thumbnail((px, px), Image.Resampling.BILINEAR)
    return img
