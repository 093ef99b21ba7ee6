"""How a JPEG or a PNG is built, walked before Pillow reads it: a file whose structure costs far more CPU or memory
than its pixels (a JPEG scan bomb, a PNG chunk flood) is refused from its markers or chunks, in milliseconds.

imgsim.inputs.images calls these before every decode, and `sniff` (the collection scan) on the part of
a file Pillow's open reads. No pixel is decoded here.
"""

from __future__ import annotations

import re

from imgsim.core.errors import ImageError

MAX_FILE_BYTES = 64 * 1024 * 1024  # no image file larger is read (imgsim.inputs.images), nor walked here
# A progressive JPEG is decoded scan by scan, and every scan is a pass over every block of the
# image however few bytes it holds: one empty 59-byte scan of 6000x6000 costs 22 ms of CPU, so
# 0.39 MB of them would cost ~90 s (benchmarks/scan-bomb-results.txt). libjpeg's own progression
# has 10 scans (6 for grey) and encoders that tune it stay within a few tens; libjpeg-turbo's
# djpeg -maxscans and TurboJPEG's scan limit exist for this attack, and nvImageCodec refuses more
# than 256 by default. 100 leaves every real encoder room and bounds the worst JPEG accepted at
# ~2 s of CPU (100 scans of 36 megapixels: 2.2 s; a normal photo query: 2 ms).
MAX_JPEG_SCANS = 100
# Pillow reads a JPEG's header (everything before the first scan) in Python, a marker or a stray
# byte at a time: 1 s of CPU per 4 MB of empty segments. A camera's JPEG has about 20 markers
# and no stray bytes; these caps keep that walk, and the one here, to milliseconds.
MAX_JPEG_MARKERS = 1000
MAX_JPEG_STRAY_BYTES = 64 * 1024
JPEG_SIGNATURE = b"\xff\xd8\xff"  # what Pillow recognises a JPEG (and an MPO) by
# The next marker: 0xFF, any fill 0xFFs, then a code other than 0x00 (a stuffed 0xFF in scan
# data) or RST0-7 (restart points inside a scan), as libjpeg finds it.
NEXT_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
JPEG_SOS, JPEG_EOI = 0xDA, 0xD9
# Pillow reads a PNG's chunks in Python, one at a time (about 4 us each, and it keeps a copy of each
# private one): 10 MB of empty chunks cost 3.5 s of CPU and 90 MB. A photo has a dozen chunks
# besides its image data, which comes in chunks of 8-64 KB (20,000 of 8 KB: 160 MB, beyond
# MAX_FILE_BYTES). Beyond these caps a PNG is refused after a walk that costs milliseconds.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_CHUNKS = 20_000
MAX_PNG_OTHER_CHUNKS = 256  # chunks other than image data (IDAT): text, colour profile, private ones
# Compressed ones (a colour profile, compressed text) each inflate to up to 1 MB (Pillow's
# MAX_TEXT_CHUNK): 2 ms of CPU apiece. A photo has one profile and an XMP packet or two.
PNG_COMPRESSED_CHUNKS = (b"iCCP", b"zTXt", b"iTXt")
MAX_PNG_COMPRESSED_CHUNKS = 16


def jpeg_markers(data):
    """(code, position, stray bytes skipped before it) of each marker of a JPEG's first image, as libjpeg finds them.

    Segments are stepped over by their length and scan data searched in C, so no pixel is decoded
    and the walk costs microseconds a marker. It ends at the first image's EOI (an MPO's later
    images are never decoded).
    """
    pos = 2
    while (found := NEXT_JPEG_MARKER.search(data, pos)) is not None:
        start = found.start()
        code = data[start + 1]
        yield code, start, start - pos
        if code == JPEG_EOI:
            return
        standalone = code in (0x01, 0xD8)  # TEM and a stray SOI carry no length
        pos = start + 2 + (0 if standalone else int.from_bytes(data[start + 2:start + 4], "big"))


def check_jpeg(data, name: str, header_only: bool = False) -> bool:
    """Refuse a JPEG whose structure costs far more CPU than its pixels: too many scans, markers or stray bytes.

    With `header_only`, stops at the first scan (what Pillow's open reads). Returns whether a scan was reached.
    """
    scans = stray = 0
    for markers, (code, pos, skipped) in enumerate(jpeg_markers(data), 1):
        stray += skipped if not scans else 0  # in scan data, libjpeg skips in C; before it, Pillow in Python
        scans += code == JPEG_SOS
        if scans > MAX_JPEG_SCANS:
            total = scans + data.count(b"\xff\xda", pos + 2)  # 0xFFDA cannot occur inside scan data
            raise ImageError(f"{name}: JPEG has {total} progressive scans, more than {MAX_JPEG_SCANS}: refused "
                             "(each one is a pass over the whole image)")
        if markers > MAX_JPEG_MARKERS:
            raise ImageError(f"{name}: JPEG has more than {MAX_JPEG_MARKERS} markers: refused")
        if stray > MAX_JPEG_STRAY_BYTES:
            raise ImageError(f"{name}: JPEG has more than {MAX_JPEG_STRAY_BYTES // 1024} KB of stray bytes "
                             "between its header's markers: refused")
        if header_only and scans:
            return True
    return scans > 0


def check_header(file, name: str, check) -> None:
    """`check(..., header_only=True)` on an open file, reading no further than its first image data (in growing chunks)."""
    size = 64 * 1024
    while True:
        file.seek(0)
        data = file.read(size)
        if check(data, name, header_only=True) or len(data) < size or size > MAX_FILE_BYTES:
            return
        size *= 4


def check_png(data: bytes, name: str, header_only: bool = False) -> bool:
    """Refuse a PNG with more chunks than Pillow should read (MAX_PNG_CHUNKS, MAX_PNG_OTHER_CHUNKS); no pixel is decoded.

    Walks the chunks Pillow reads for the first image: up to IEND, or up to the next frame's fcTL
    in an animated PNG; with `header_only`, up to the first image data (what Pillow's open reads).
    Returns whether the image data was reached.
    """
    pos = len(PNG_SIGNATURE)
    chunks = others = compressed = 0
    pixels_seen = False
    while pos + 8 <= len(data):
        kind = data[pos + 4:pos + 8]
        if kind == b"IEND" or (pixels_seen and kind == b"fcTL"):
            break
        chunks += 1
        pixels_seen |= kind == b"IDAT"
        others += kind != b"IDAT"
        compressed += kind in PNG_COMPRESSED_CHUNKS
        for count, cap, what in ((chunks, MAX_PNG_CHUNKS, "chunks"), (others, MAX_PNG_OTHER_CHUNKS, "chunks besides its pixels"),
                                 (compressed, MAX_PNG_COMPRESSED_CHUNKS, "compressed text or colour profile chunks")):
            if count > cap:
                raise ImageError(f"{name}: PNG has more than {cap:,} {what}: refused (each one is read on its own)")
        if header_only and pixels_seen:
            break
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    return pixels_seen


def jpeg_scan_components(data: bytes) -> int | None:
    """How many components a JPEG's first scan holds (fewer than the image's: libjpeg buffers it whole)."""
    for code, pos, _ in jpeg_markers(data):
        if code == JPEG_SOS:
            return data[pos + 4] if pos + 4 < len(data) else None
    return None
