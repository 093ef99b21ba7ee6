"""Small copies of collection images for display grids: kept on disk per version, and in memory per process.

A version's thumbnails live in a folder of their own (`ThumbnailFolder`; the model folder names it:
imgsim.storage.folder.ModelFolder.thumbnail_folder), one WebP file per image and display size, made by
the first view that shows the image and read by every later one, in any process. The newest ones also
stay in this process's memory (`MEMORY`, a byte budget), so a page view reads no file for them. JPEG
(`thumbnail_jpeg`) stays for what leaves imgsim as a file or an HTTP answer (the API, exports).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import stat
from pathlib import Path

from PIL import Image

from imgsim.core.cache import ByteBudgetCache
from imgsim.core.errors import ImageError
from imgsim.core.files import NO_FOLLOW, write_atomic
from imgsim.inputs.images import thumbnail

log = logging.getLogger(__name__)

PLACEHOLDER_GREY = (205, 205, 205)
MEMORY = ByteBudgetCache(64 << 20, ttl=24 * 3600, size=len)  # image bytes, about 20,000 WebP thumbnails of 128 px
# WebP at this quality is about half the bytes of JPEG at 85 for the same thumbnail (2.6 against 5.0 kB at 128 px
# on the demo collection), and a dashboard page carries its thumbnails inline: a page of 60 sends half as much.
# Encoding costs about 2 ms more a thumbnail, once per version and size.
WEBP_QUALITY = 70


def encode_jpeg(img: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def encode_webp(img: Image.Image, quality: int = WEBP_QUALITY) -> bytes:
    out = io.BytesIO()
    img.save(out, format="WEBP", quality=quality)
    return out.getvalue()


def thumbnail_jpeg(source, px: int = 192, root=None) -> bytes:
    """A JPEG at most px on its longer side; raises ImageError for an unreadable source (or, with `root`, one
    that is not a regular file inside that folder: imgsim.inputs.images.read_bytes)."""
    return encode_jpeg(thumbnail(source, px, root))


def thumbnail_webp(source, px: int = 192, root=None) -> bytes:
    """`thumbnail_jpeg` as WebP: what display grids show (`ThumbnailFolder`)."""
    return encode_webp(thumbnail(source, px, root))


def placeholder_jpeg(px: int = 192) -> bytes:
    """A grey tile standing in for a file that is gone or unreadable."""
    return encode_jpeg(Image.new("RGB", (px, px), PLACEHOLDER_GREY))


def placeholder_webp(px: int = 192) -> bytes:
    return encode_webp(Image.new("RGB", (px, px), PLACEHOLDER_GREY))


def mtime_ns(path) -> int:
    """The file's modification time, the cache key that makes an edited file get a new thumbnail; 0 if gone."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def thumbnail_or_placeholder(path, px: int = 192, root=None) -> bytes:
    try:
        return thumbnail_jpeg(path, px, root)
    except ImageError:
        return placeholder_jpeg(px)


def display_thumbnail(path, px: int = 192, root=None) -> bytes:
    """The WebP a display grid shows for `path`, or the grey placeholder (WebP too)."""
    try:
        return thumbnail_webp(path, px, root)
    except ImageError:
        return placeholder_webp(px)


def thumbnail_cached(source, px: int = 192, root=None) -> bytes:
    """`display_thumbnail`, kept in this process's memory while the file keeps its modification time."""
    key = (os.fsencode(source), int(px), mtime_ns(source), None if root is None else os.fsencode(root))
    return MEMORY.get(key, lambda: display_thumbnail(source, px, root))


def is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def data_url(data: bytes) -> str:
    """A JPEG or WebP thumbnail as a `data:` URL: a page can carry it inline, with no file to serve and no request to answer."""
    mime = "image/webp" if is_webp(data) else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def whole_image(data: bytes, px: int, kind: str = "WEBP") -> bool:
    """Whether `data` decodes, every byte of it, as a `kind` image of at most `px` a side (what this module writes)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != kind or max(img.size) > px:
                return False
            img.load()  # a file cut short raises here
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return True


class ThumbnailFolder:
    """One version's display thumbnails on disk, `<folder>/<px>/<image id>.webp`, made at first use.

    Each file carries its source's modification time as its own, so an edited source (a new time) gets
    a new thumbnail. A file read from disk is decoded whole before it is used: one cut short, overwritten
    or replaced by a link is made again. A folder that cannot be written (a read-only model folder) only
    means that each process makes its thumbnails once, in memory. A source that cannot be read gets the
    grey placeholder, which is not kept (the file may be fixed without its time changing).
    """

    def __init__(self, folder):
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"ThumbnailFolder({str(self.folder)!r})"

    def path(self, image_id: int, px: int) -> Path:
        return self.folder / str(int(px)) / f"{int(image_id)}.webp"

    def webp(self, image_id: int, source, px: int = 192, root=None) -> bytes:
        """The thumbnail of `source`, the version's image `image_id`: from memory, from disk, or made now and kept.

        With `root`, a source that is not a regular file inside that folder (a link to a picture elsewhere)
        gets the placeholder (imgsim.inputs.images.read_bytes).
        """
        stamp = mtime_ns(source)
        key = (str(self.folder), int(image_id), int(px), stamp, None if root is None else os.fsencode(root))
        return MEMORY.get(key, lambda: self._read_or_make(int(image_id), source, int(px), stamp, root))

    def _read_or_make(self, image_id: int, source, px: int, stamp: int, root=None) -> bytes:
        path = self.path(image_id, px)
        kept = self._read(path, px, stamp) if stamp else None
        if kept is not None:
            return kept
        try:
            data = thumbnail_webp(source, px, root)
        except ImageError:
            return placeholder_webp(px)
        if stamp:
            self._keep(path, data, stamp)
        return data

    @staticmethod
    def _read(path: Path, px: int, stamp: int) -> bytes | None:
        """The kept file's bytes if it is a plain file made from the source as it is now, and a whole WebP."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NO_FOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fd)
            if not (stat.S_ISREG(info.st_mode) and info.st_mtime_ns == stamp
                    and 0 < info.st_size <= px * px * 3 + 65_536):
                return None
            data = fh.read()
        return data if whole_image(data, px) else None

    @staticmethod
    def _keep(path: Path, data: bytes, stamp: int) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data, durable=False)  # a cache: checked when read, made again when damaged
            os.utime(path, ns=(stamp, stamp), follow_symlinks=False)
        except OSError as exc:  # a read-only or full model folder: the thumbnail is still shown
            log.debug("thumbnail not kept in %s: %s", path, exc)
