"""The one image-loading path: formats, modes, orientation, limits and hostile bytes."""

from __future__ import annotations

import io
import os
import re
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import imgsim
from imgsim.core.errors import ImageError
from imgsim.inputs import images

RED, GREEN, BLUE = (220, 20, 30), (20, 200, 40), (30, 40, 210)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def colour_of(array: np.ndarray) -> np.ndarray:
    """The mean colour of a decoded array, in 0-255."""
    return array.reshape(-1, 3).mean(axis=0) * 255


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims width x height RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, GREEN, BLUE)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


# --- formats --------------------------------------------------------------------------------------

ALLOWED = {
    "JPEG": lambda: encode(Image.new("RGB", (40, 30), RED), "JPEG", quality=95),
    "PNG": lambda: encode(Image.new("RGB", (40, 30), RED), "PNG"),
    "WEBP": lambda: encode(Image.new("RGB", (40, 30), RED), "WEBP", lossless=True),
    "BMP": lambda: encode(Image.new("RGB", (40, 30), RED), "BMP"),
    "GIF": animated_gif,  # the first frame is red, the others are not
    "TIFF": lambda: encode(Image.new("RGB", (40, 30), RED), "TIFF"),
}


@pytest.mark.parametrize("fmt", sorted(ALLOWED))
def test_every_allowed_format_loads(fmt):
    assert fmt in images.ALLOWED_FORMATS
    data = ALLOWED[fmt]()
    assert Image.open(io.BytesIO(data)).format == fmt
    array = images.decode(data, 32)
    assert array.shape == (32, 32, 3) and array.dtype == np.float32
    assert np.allclose(colour_of(array), RED, atol=6)


def test_all_allowed_formats_are_tested():
    assert set(ALLOWED) == set(images.ALLOWED_FORMATS)


REFUSED = {
    "ICO": lambda: encode(Image.new("RGB", (16, 16), RED), "ICO"),
    "PPM": lambda: encode(Image.new("RGB", (16, 16), RED), "PPM"),
    "TGA": lambda: encode(Image.new("RGB", (16, 16), RED), "TGA"),
    "PDF": lambda: b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
    "EPS": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto 16 16 lineto stroke\n",
    "SVG": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect width="16"/></svg>',
}


@pytest.mark.parametrize("fmt", sorted(REFUSED))
def test_format_outside_the_allowlist_is_refused_even_named_png(tmp_path, fmt):
    path = tmp_path / "photo.png"
    path.write_bytes(REFUSED[fmt]())
    with pytest.raises(ImageError, match="not an image in an allowed format") as caught:
        imgsim.load_image(path, 32)
    assert str(path) in str(caught.value)


# --- orientation and modes ---------------------------------------------------------------------------


def test_exif_orientation_is_applied():
    stored = Image.new("RGB", (64, 32), RED)  # wide: red on the left, blue on the right
    stored.paste(BLUE, (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show rotated 90 degrees clockwise
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())

    upright = images.open_image(data)
    assert upright.size == (32, 64)
    array = images.decode(data, 32)
    assert np.allclose(colour_of(array[:12]), RED, atol=10)  # the left half is now on top
    assert np.allclose(colour_of(array[-12:]), BLUE, atol=10)


def grey16(value: int) -> bytes:
    return encode(Image.fromarray(np.full((8, 8), value, dtype=np.uint16)), "PNG")


def palette_with_transparency() -> bytes:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([*RED, *GREEN] + [0] * 762)
    img.paste(1, (0, 0, 4, 8))  # left half palette entry 1 (green), right half entry 0 (transparent)
    return encode(img, "PNG", transparency=0)


def half_white(mode: str) -> Image.Image:
    img = Image.new(mode, (8, 8), 0)
    img.paste(255 if mode == "L" else 1, (4, 0, 8, 8))
    return img


MODES = [
    # (name, bytes, expected colour of the left half, of the right half) in 0-255
    ("P with transparency", palette_with_transparency(), GREEN, (255, 255, 255)),
    ("GIF with transparency", encode(Image.open(io.BytesIO(palette_with_transparency())), "GIF", transparency=0),
     GREEN, (255, 255, 255)),
    ("LA", encode(Image.new("LA", (8, 8), (60, 255)), "PNG"), (60, 60, 60), (60, 60, 60)),
    ("LA transparent", encode(Image.new("LA", (8, 8), (0, 0)), "PNG"), (255, 255, 255), (255, 255, 255)),
    ("RGBA half", encode(Image.new("RGBA", (8, 8), (255, 0, 0, 128)), "PNG"), (255, 127, 127), (255, 127, 127)),
    ("RGBA transparent", encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), (255, 255, 255), (255, 255, 255)),
    ("CMYK JPEG", encode(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "JPEG", quality=95), (0, 255, 255), (0, 255, 255)),
    ("CMYK TIFF", encode(Image.new("CMYK", (8, 8), (0, 255, 0, 0)), "TIFF"), (255, 0, 255), (255, 0, 255)),
    ("I;16 65535", grey16(65535), (255, 255, 255), (255, 255, 255)),
    ("I;16 32768", grey16(32768), (128, 128, 128), (128, 128, 128)),
    ("I;16 0", grey16(0), (0, 0, 0), (0, 0, 0)),
    ("I;16 TIFF", encode(Image.fromarray(np.full((8, 8), 65535, np.uint16)), "TIFF"), (255, 255, 255), (255, 255, 255)),
    ("1-bit", encode(half_white("1"), "PNG"), (0, 0, 0), (255, 255, 255)),
    ("1-bit BMP", encode(half_white("1"), "BMP"), (0, 0, 0), (255, 255, 255)),
    ("L", encode(Image.new("L", (8, 8), 100), "PNG"), (100, 100, 100), (100, 100, 100)),
    ("L halves", encode(half_white("L"), "PNG"), (0, 0, 0), (255, 255, 255)),
    ("L with tRNS", encode(Image.new("L", (8, 8), 0), "PNG", transparency=0), (255, 255, 255), (255, 255, 255)),
    ("RGB with tRNS", encode(Image.new("RGB", (8, 8), (0, 0, 0)), "PNG", transparency=(0, 0, 0)),
     (255, 255, 255), (255, 255, 255)),
]


@pytest.mark.parametrize(("name", "data", "left", "right"), MODES, ids=[m[0] for m in MODES])
def test_modes_give_correct_rgb(name, data, left, right):
    array = images.decode(data, 8)
    assert array.shape == (8, 8, 3)
    assert np.allclose(colour_of(array[:, :3]), left, atol=3), colour_of(array[:, :3])
    assert np.allclose(colour_of(array[:, -3:]), right, atol=3), colour_of(array[:, -3:])


def test_sixteen_bit_grey_is_scaled_not_clipped():
    assert Image.open(io.BytesIO(grey16(65535))).mode.startswith("I")
    assert images.decode(grey16(65535), 8).min() == pytest.approx(1.0)
    assert images.decode(grey16(32768), 8).mean() == pytest.approx(0.5, abs=0.003)
    assert images.decode(grey16(255), 8).max() < 0.01  # 255 of 65535 is nearly black, not white


# --- limits and broken input ---------------------------------------------------------------------------


def test_huge_header_is_refused_quickly():
    data = png_claiming(30000, 30000)
    assert len(data) < 200
    start = time.monotonic()
    with pytest.raises(ImageError, match=r"upload\.png: 900 megapixels, over the 40 megapixel limit"):
        images.decode(data, 32, name="upload.png")
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("action", ["error", "ignore"])
def test_header_just_over_the_limit_is_refused_with_its_size(action):
    # Pillow warns at this size; imgsim makes the warning an error at import, but pytest resets
    # warning filters around each test, so both settings are checked here.
    with warnings.catch_warnings():
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match=r"48 megapixels, over the 40 megapixel limit"):
            images.decode(png_claiming(8000, 6000), 32)


def tiff_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes of TIFF whose header claims width x height 32-bit float pixels in one deflate strip."""
    strip = zlib.compress(b"\0" * 64)
    tags = [(256, 4, width), (257, 4, height), (258, 3, 32), (259, 3, 8), (262, 3, 1), (273, 4, 0), (277, 3, 1),
            (278, 4, height), (279, 4, len(strip)), (339, 3, 3)]  # 339 SampleFormat 3: IEEE float
    strip_at = 8 + 2 + 12 * len(tags) + 4
    entries = b"".join(struct.pack("<HHII", tag, kind, 1, strip_at if tag == 273 else value) if kind == 4
                       else struct.pack("<HHIH2x", tag, kind, 1, value) for tag, kind, value in tags)
    return b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries + b"\0" * 4 + strip


def jpeg_claiming(width: int, height: int, progressive: bool) -> bytes:
    """A small JPEG whose frame header is rewritten to claim width x height pixels (its data stays 16x16)."""
    data = bytearray(encode(Image.new("RGB", (16, 16), RED), "JPEG", quality=95, progressive=progressive,
                            subsampling=0))
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


class DecodeSpy:
    """Counts the pixel decodes Pillow starts (ImageFile.load), to show a refusal came before any."""

    def __init__(self, monkeypatch):
        from PIL import ImageFile

        self.calls = 0
        real = ImageFile.ImageFile.load

        def load(img):
            self.calls += 1
            return real(img)

        monkeypatch.setattr(ImageFile.ImageFile, "load", load)


# A few hundred bytes each, under the 40-megapixel cap, that would take 150-300 MB to decode.
MEMORY_BOMBS = {
    "float.tif": (lambda: tiff_claiming(6300, 6300), r"6300x6300 TIFF image \(F\) needs 303 MB"),
    "rgb.png": (lambda: png_claiming(7300, 5475), r"7300x5475 PNG image \(RGB\) needs 1\d\d MB"),
    "progressive.jpg": (lambda: jpeg_claiming(7300, 5475, progressive=True), r"7300x5475 JPEG image \(RGB\) needs 2\d\d MB"),
}


@pytest.mark.parametrize("name", sorted(MEMORY_BOMBS))
def test_small_file_that_decodes_huge_is_refused_before_decoding(tmp_path, monkeypatch, name):
    make, needs = MEMORY_BOMBS[name]
    path = tmp_path / name
    path.write_bytes(make())
    assert path.stat().st_size < 1000
    width, height = Image.open(path).size
    assert width * height <= images.MAX_PIXELS  # the pixel cap alone lets it through
    spy = DecodeSpy(monkeypatch)
    start = time.monotonic()
    for call in (lambda: imgsim.load_image(path, 128), lambda: images.thumbnail(path)):
        with pytest.raises(ImageError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert re.search(needs + r" to decode, over the 80 MB memory limit", message), message
    assert spy.calls == 0 and time.monotonic() - start < 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing left behind


def jpeg_with_scans(total: int, size: int = 256) -> bytes:
    """A flat progressive JPEG whose last scan (an empty AC refinement, ~12 bytes) is repeated up to `total` scans.

    A valid stream, and libjpeg passes over every block of the image once per scan: 2,000 scans of
    1000x1000 pixels cost 1.5 s of CPU in Pillow (measured by hand), 0.39 MB of 6000x6000 ~90 s.
    """
    data = encode(Image.new("RGB", (size, size), GREEN), "JPEG", progressive=True, quality=90)
    last_scan, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last_scan:end] * (total - data.count(b"\xff\xda")) + data[end:]


def test_a_jpeg_with_too_many_progressive_scans_is_refused_from_its_markers():
    at_limit = images.decode(jpeg_with_scans(images.MAX_JPEG_SCANS), 16, name="fine.jpg")
    assert np.allclose(colour_of(at_limit), GREEN, atol=4)  # the limit leaves real encoders room
    with pytest.raises(ImageError) as caught:
        images.decode(jpeg_with_scans(images.MAX_JPEG_SCANS + 1), 16, name="bomb.jpg")
    assert str(caught.value) == ("bomb.jpg: JPEG has 101 progressive scans, more than 100: refused "
                                 "(each one is a pass over the whole image)")


def test_a_10_mb_scan_bomb_is_refused_within_a_second_on_every_path(tmp_path, monkeypatch):
    path = tmp_path / "bomb.jpg"
    path.write_bytes(jpeg_with_scans(850_000))  # under the dashboard's 10 MB upload cap
    assert 9.5e6 < path.stat().st_size < 10.5e6
    spy = DecodeSpy(monkeypatch)
    start = time.thread_time()
    for call in (lambda: imgsim.load_image(path, 128), lambda: images.thumbnail(path)):
        with pytest.raises(ImageError, match=f"^{re.escape(str(path))}: JPEG has 850000 progressive scans, more than 100"):
            call()
    assert spy.calls == 0 and time.thread_time() - start < 1
    assert images.sniff(path) == "JPEG"  # a collection scan reads its header only; the decode refuses it


def jpeg_with_header(padding: bytes) -> bytes:
    """A small valid JPEG with `padding` inserted right after its start marker."""
    data = valid_jpeg()
    return data[:2] + padding + data[2:]


@pytest.mark.parametrize("name, padding, reason", [
    ("markers.jpg", b"\xff\xfe\x00\x02" * 1_000_000, "JPEG has more than 1000 markers"),  # 4 MB of empty comments
    ("stray.jpg", b"\xff\x00" * 2_000_000, "JPEG has more than 64 KB of stray bytes between its header's markers"),
])
def test_a_jpeg_header_that_pillow_would_walk_for_seconds_is_refused(tmp_path, monkeypatch, name, padding, reason):
    """Pillow reads a JPEG's header in Python, a marker or a stray byte at a time (~1 s per 4 MB, measured)."""
    path = tmp_path / name
    path.write_bytes(jpeg_with_header(padding))
    fine = tmp_path / "fine.jpg"
    fine.write_bytes(jpeg_with_header(b"\xff\xfe\x00\x02" * 50 + b"\xff\x00" * 100))  # a few of each pass
    assert images.sniff(fine) == "JPEG" and imgsim.load_image(fine, 32).shape == (32, 32, 3)
    start = time.thread_time()
    for call in (lambda: images.sniff(path), lambda: imgsim.load_image(path, 32)):
        with pytest.raises(ImageError, match=f"^{re.escape(str(path))}: {reason}: refused$"):
            call()
    assert time.thread_time() - start < 0.5


def test_large_baseline_jpeg_is_accepted_because_it_is_decoded_reduced():
    # The same header as the refused progressive one: a baseline JPEG is decoded at 1/8 scale row by
    # row, so it passes the memory check (libjpeg pads its missing rows; benchmarks/ measures a real one).
    array = images.decode(jpeg_claiming(7300, 5475, progressive=False), 128, name="big.jpg")
    assert array.shape == (128, 128, 3)


def test_memory_cap_counts_what_each_format_really_holds(monkeypatch):
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 2**20)
    pixels = Image.new("RGB", (300, 300), RED)  # 0.36 MB as an image
    assert np.allclose(colour_of(images.decode(encode(pixels, "PNG"), 16)), RED, atol=3)
    with pytest.raises(ImageError, match=r"300x300 WEBP image \(RGB\) needs 1 MB to decode, over the 1 MB"):
        images.decode(encode(pixels, "WEBP", lossless=True), 16)  # libwebp holds 16 bytes a pixel
    with pytest.raises(ImageError, match="over the 1 MB memory limit"):
        images.open_image(encode(Image.new("RGB", (520, 520), RED), "PNG"))  # no reduction asked: full size


def test_sixteen_bit_grey_is_never_copied_whole_as_floats():
    import tracemalloc

    data = encode(Image.fromarray(np.tile(np.arange(2000, dtype=np.uint16) * 30, (2000, 1))), "PNG")
    tracemalloc.start()
    try:
        array = images.decode(data, 32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # numpy's arrays are traced: a float64 copy of these 4 megapixels alone would be 32 MB.
    assert peak < 8 * 2**20, peak
    assert array[:, 0].mean() < 0.05 and array[:, -1].mean() > 0.85  # scaled from 65535: dark to bright


def big_halves(mode: str, left, right, size=(1300, 700)) -> Image.Image:
    img = Image.new(mode, size, left)
    img.paste(right, (size[0] // 2, 0, *size))
    return img


def big_palette() -> bytes:
    img = big_halves("P", 1, 0)
    img.putpalette([*RED, *GREEN] + [0] * 762)
    return encode(img, "PNG", transparency=0)


# Big enough to be reduced band by band (several bands, factors of 81 x 43 on the way to 8 px).
REDUCED_MODES = [
    ("I;16", encode(big_halves("I;16", 0, 65535), "PNG"), (0, 0, 0), (255, 255, 255)),
    ("F", encode(big_halves("F", 0.0, 1.0), "TIFF"), (0, 0, 0), (255, 255, 255)),
    ("P with transparency", big_palette(), GREEN, (255, 255, 255)),
    ("RGBA", encode(big_halves("RGBA", (*RED, 255), (0, 0, 0, 0)), "PNG"), RED, (255, 255, 255)),
    ("LA", encode(big_halves("LA", (60, 255), (0, 128)), "PNG"), (60, 60, 60), (128, 128, 128)),
    ("CMYK", encode(big_halves("CMYK", (255, 0, 0, 0), (0, 255, 0, 0)), "TIFF"), (0, 255, 255), (255, 0, 255)),
    ("1-bit", encode(big_halves("1", 0, 1), "PNG"), (0, 0, 0), (255, 255, 255)),
]


@pytest.mark.parametrize(("name", "data", "left", "right"), REDUCED_MODES, ids=[m[0] for m in REDUCED_MODES])
def test_modes_stay_correct_when_decoded_reduced(name, data, left, right):
    array = images.decode(data, 8)
    assert np.allclose(colour_of(array[:, :3]), left, atol=3), colour_of(array[:, :3])
    assert np.allclose(colour_of(array[:, -3:]), right, atol=3), colour_of(array[:, -3:])
    assert np.allclose(array[0], array[-1], atol=2 / 255)  # no seams or drift between the bands


def test_exif_orientation_is_applied_to_the_reduced_image():
    stored = big_halves("RGB", RED, BLUE, size=(1600, 800))  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "PNG", exif=exif.tobytes())
    array = images.decode(data, 16)
    assert np.allclose(colour_of(array[:6]), RED, atol=10)  # rotated: the left half is now on top
    assert np.allclose(colour_of(array[-6:]), BLUE, atol=10)
    assert images.thumbnail(data, px=64).size == (32, 64)


def valid_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG", quality=90)


def valid_png() -> bytes:
    rng = np.random.default_rng(1)
    return encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")


@pytest.mark.parametrize(
    "name, data",
    [
        ("truncated.jpg", valid_jpeg()[: len(valid_jpeg()) // 2]),
        ("truncated.png", valid_png()[: len(valid_png()) // 2]),
        ("header-only.png", valid_png()[:40]),
        ("random.bin", np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes()),
        ("empty.png", b""),
    ],
)
def test_broken_bytes_raise_image_error_naming_the_source(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError) as caught:
        imgsim.load_image(path, 32)
    assert str(path) in str(caught.value)
    with pytest.raises(ImageError, match=f"<{len(data)} bytes>"):
        imgsim.load_image(data, 32)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        imgsim.load_image(tmp_path / "missing.png", 32)
    with pytest.raises(ImageError, match="is a folder"):
        imgsim.load_image(tmp_path, 32)


def test_special_files_and_bad_paths_are_refused(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):  # reading it would block forever
        imgsim.load_image(fifo, 32)
    with pytest.raises(ImageError, match="not a valid path"):
        imgsim.load_image("bad\0name.png", 32)


# --- sources ---------------------------------------------------------------------------------------------


def test_bytes_path_and_url_give_identical_arrays(tmp_path, http_server, monkeypatch):
    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    data = valid_jpeg()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    url = http_server.serve("/images/photo.jpg", data, content_type="image/jpeg")
    from_bytes = imgsim.load_image(data, 32)
    assert np.array_equal(from_bytes, imgsim.load_image(path, 32))
    assert np.array_equal(from_bytes, imgsim.load_image(str(path), 32))
    assert np.array_equal(from_bytes, imgsim.load_image(url, 32))
    assert np.array_equal(from_bytes, imgsim.load_image(memoryview(data), 32))


def test_load_images_stacks_any_iterable(tmp_path):
    data = valid_png()
    stacked = imgsim.load_images(iter([data, data]), 16)
    assert stacked.shape == (2, 16, 16, 3)
    assert imgsim.load_images(iter([]), 16).shape == (0, 16, 16, 3)
    assert imgsim.load_images([], 16).shape == (0, 16, 16, 3)


def test_thumbnail_keeps_the_aspect_ratio():
    thumb = images.thumbnail(encode(Image.new("RGB", (400, 200), RED), "JPEG"), px=64)
    assert thumb.mode == "RGB" and thumb.size == (64, 32)


# --- hostile bytes: an array or ImageError, never anything else ------------------------------------------

SEEDS = [
    encode(Image.new("RGB", (12, 9), RED), "PNG"),
    encode(Image.fromarray(np.random.default_rng(3).integers(0, 255, (12, 9, 3), dtype=np.uint8)), "JPEG"),
    animated_gif(),
    palette_with_transparency(),
    encode(Image.new("RGBA", (10, 7), (1, 2, 3, 4)), "WEBP"),
    encode(Image.new("RGB", (10, 7), RED), "BMP"),
    encode(Image.new("RGB", (10, 7), RED), "TIFF"),
]


@st.composite
def mutated_image(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    # Half the changes land in the first 64 bytes, where the headers that steer a decoder are.
    position = st.one_of(st.integers(0, 63), st.integers(0, len(data) - 1))
    for where, value in draw(st.lists(st.tuples(position, st.integers(0, 255)), min_size=1, max_size=8)):
        data[where % len(data)] = value
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt data it is given
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=1024), mutated_image()))
def test_decode_returns_a_valid_array_or_raises_image_error(data):
    try:
        array = images.decode(data, 32)
    except ImageError:
        return
    assert array.shape == (32, 32, 3)
    assert array.dtype == np.float32
    assert np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1


# --- issue 28: extreme shapes and chunk floods, and one decode per query -------------------------------


@pytest.mark.parametrize("size", [(40_000_000, 1), (1, 40_000_000)], ids=["wide", "tall"])
def test_the_probe_s_wide_and_tall_pngs_are_refused_before_any_pixel_is_decoded(monkeypatch, size):
    """40,000,000 x 1 16-bit grey (77 KB) took a server from 1,003 to 1,499 MB; 1 x 40,000,000 cost 6-9 s of CPU."""
    data = encode(Image.new("I;16", size), "PNG")
    assert len(data) < 200_000 and size[0] * size[1] <= images.MAX_PIXELS  # the pixel cap alone lets it through
    spy = DecodeSpy(monkeypatch)
    for call in (lambda: images.decode(data, 128, "strip.png"), lambda: images.thumbnail(data),
                 lambda: images.decode_with_picture(data, 128, "strip.png")):
        with pytest.raises(ImageError, match=rf"{size[0]}x{size[1]} has a side longer than 65,535 pixels: refused"):
            call()
    assert spy.calls == 0


def test_the_longest_side_accepted_decodes_in_tiles_never_a_long_band(monkeypatch):
    """A row of 65,535 16-bit pixels: the old banding converted whole rows, step_y of them at once (170 for a thumbnail)."""
    img = Image.fromarray(np.tile(np.arange(images.MAX_SIDE, dtype=np.uint16), (400, 1)))
    tiles = []
    real = images.to_rgb
    monkeypatch.setattr(images, "to_rgb", lambda tile, top=None: (tiles.append(tile.size), real(tile, top))[1])
    for factors in (images.reduction(img.size, 192, stretch=False), images.reduction(img.size, 128, stretch=True)):
        tiles.clear()
        out = images.reduced_rgb(img, factors)
        assert out.size == (-(-img.width // factors[0]), -(-img.height // factors[1]))
        assert max(w * h for w, h in tiles) <= images.BAND_PIXELS, (factors, max(tiles, key=lambda t: t[0] * t[1]))
        assert sum(w * h for w, h in tiles) == img.width * img.height  # every pixel converted once
        row = np.asarray(out)[0, :, 0].astype(int)
        assert row[0] < 5 and row[-1] > 250 and np.all(np.diff(row) >= 0)  # a ramp, with no seam between tiles


def png_with(extra: bytes, after_pixels: bool = False) -> bytes:
    """A 16 px red PNG with `extra` chunks after its header, or after its pixels."""
    png = encode(Image.new("RGB", (16, 16), RED), "PNG")
    return png[:-12] + extra + png[-12:] if after_pixels else png[:33] + extra + png[33:]


@pytest.mark.parametrize("extra, after, reason", [
    (png_chunk(b"prVt", b"") * (10 * 2**20 // 12), False, "more than 256 chunks besides its pixels"),  # the probe's
    (png_chunk(b"IDAT", b"") * (10 * 2**20 // 12), True, "more than 20,000 chunks"),
    (png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(bytes(2**20 - 1))) * 17, False,
     "more than 16 compressed text or colour profile chunks"),
], ids=["private-chunks", "empty-pixel-chunks", "colour-profiles"])
def test_a_png_padded_with_chunks_is_refused_from_a_walk_of_its_chunks(monkeypatch, extra, after, reason):
    """10 MB of empty chunks cost 3.5 s of CPU (and 90 MB kept as private chunks) per decode, and a query decoded twice."""
    data = png_with(extra, after)
    spy = DecodeSpy(monkeypatch)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: (opened.append(1), real_open(*a, **k))[1])
    with pytest.raises(ImageError, match=f"^padded.png: PNG has {reason}: refused"):
        images.decode(data, 32, "padded.png")
    assert spy.calls == 0 and opened == []  # refused before Pillow read a chunk


def test_pngs_within_the_chunk_caps_still_load():
    text = b"".join(png_chunk(b"tEXt", b"key%d\0value" % i) for i in range(images.MAX_PNG_OTHER_CHUNKS - images.MAX_PNG_COMPRESSED_CHUNKS - 1))  # with IHDR: at the cap
    profiles = png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * 100)) * images.MAX_PNG_COMPRESSED_CHUNKS
    many_idats = encode(Image.new("RGB", (16, 16), RED), "PNG")
    start, end = many_idats.index(b"IDAT") - 4, many_idats.index(b"IEND") - 4
    pixels = zlib.decompress(many_idats[start + 8:end - 4])
    stream = zlib.compress(pixels)
    split = b"".join(png_chunk(b"IDAT", stream[i:i + 1]) for i in range(len(stream)))  # a chunk per byte
    assert len(stream) < images.MAX_PNG_CHUNKS - images.MAX_PNG_OTHER_CHUNKS
    for data in (png_with(text + profiles), many_idats[:start] + split + many_idats[end:]):
        assert np.allclose(colour_of(images.decode(data, 16)), RED, atol=3)


def test_png_text_that_inflates_past_4_mb_is_refused():
    """Pillow keeps up to 64 MB of inflated text by default, on top of the pixels' budget; imgsim lowers it to 4 MB."""
    text = b"".join(png_chunk(b"zTXt", b"k%d\0\0" % i + zlib.compress(bytes(2**20 - 1))) for i in range(5))
    with pytest.raises(ImageError, match="Too much memory used in text chunks"):
        images.decode(png_with(text), 16, "text.png")


def test_a_query_is_decoded_once_for_the_model_and_the_picture(monkeypatch):
    """The Search page's path (imgsim.search.Query.from_bytes) used to decode the bytes twice: a padded file cost double."""
    from imgsim.search import Query

    stored = big_halves("RGB", RED, BLUE, size=(1600, 800))  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 800 x 1600, red on top
    data = encode(stored, "JPEG", exif=exif.tobytes(), quality=90)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: (opened.append(1), real_open(*a, **k))[1])
    query = Query.from_bytes(data, 32, "q.jpg")
    assert len(opened) == 1
    assert np.array_equal(query.pixels, np.rint(images.decode(data, 32) * 255).astype(np.uint8))  # the model's input, exactly
    picture = Image.open(io.BytesIO(query.thumbnail))
    assert picture.size == (128, 256)  # the image's proportions, upright, at most 256 px
    top, bottom = np.asarray(picture)[:40].reshape(-1, 3).mean(0), np.asarray(picture)[-40:].reshape(-1, 3).mean(0)
    assert np.allclose(top, RED, atol=25) and np.allclose(bottom, BLUE, atol=25)


def test_a_collection_scan_refuses_a_png_padded_before_its_pixels_from_its_header(tmp_path, monkeypatch):
    """`sniff` (every file of a folder) opens with Pillow, which reads every chunk before the pixels: 3.5 s for 10 MB."""
    path = tmp_path / "padded.png"
    path.write_bytes(png_with(png_chunk(b"prVt", b"") * (10 * 2**20 // 12)))
    fine = tmp_path / "fine.png"
    fine.write_bytes(png_with(png_chunk(b"prVt", b"x" * 100) * 100))
    assert images.sniff(fine) == "PNG"
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: (opened.append(1), real_open(*a, **k))[1])
    with pytest.raises(ImageError, match="PNG has more than 256 chunks besides its pixels: refused"):
        images.sniff(path)
    assert opened == []
