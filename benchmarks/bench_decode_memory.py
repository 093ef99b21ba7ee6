"""Peak memory and CPU of decoding hostile images: small files whose pixels or chunks cost far more than their bytes.

    .venv/bin/python benchmarks/bench_decode_memory.py            # every case, a table on stdout
    .venv/bin/python benchmarks/bench_decode_memory.py --cases grey16-png-6300
    .venv/bin/python benchmarks/bench_decode_memory.py --uncapped  # also what each refused one would cost

Builds each image once under benchmarks/out/decode-memory/, then measures, each in a fresh
process so that no case inherits another's peak: the resident memory above the process's
baseline (VmHWM from /proc/self/status after resetting it, minus VmRSS before the call) and the
CPU seconds (process time) of `imgsim.inputs.images.load_image(path, 128)`, of
`imgsim.inputs.images.thumbnail(path)` and of `imgsim.search.Query.from_bytes(bytes, 128)` (what the
Search page does with an upload: the model's input and the picture shown, one decode). The baseline
is taken after imgsim.inputs.images and the format's codec are loaded (a 16 px image of the same
format is decoded first). Targets: every accepted image at most ~100 MB above baseline; wide, tall
and chunk-padded PNGs (issue 28's probe shapes) at most 1 s of CPU and 100 MB per upload; every
refused one refused in one line, cheaply.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "decode-memory"


def smooth(width: int, height: int, channels: int, top: float, dtype) -> np.ndarray:
    """A gradient with a little texture: compresses to a few hundred KB, however many pixels it has."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    grey = ((x + y) / 2 * top).astype(dtype)
    return grey if channels == 1 else np.repeat(grey[:, :, None], channels, axis=2)


def near_cap_side(bytes_per_pixel: int) -> int:
    """The side of a square image just inside the decoded-memory cap (the pixel cap before there was one)."""
    from imgsim.inputs import images

    cap = getattr(images, "MAX_DECODED_BYTES", None)
    pixels = images.MAX_PIXELS if cap is None else min(images.MAX_PIXELS, int(cap * 0.98) // bytes_per_pixel)
    return int(pixels**0.5)


def case_path(name: str) -> Path:
    """Where case `name` is written; a near-cap case's name holds its side, so a new cap builds a new file."""
    file_name, kind, _ = CASES[name]
    side = {"rgba-png": lambda: near_cap_side(4), "palette-png": lambda: near_cap_side(1),
            "webp": lambda: min(near_cap_side(16), 16383)}.get(kind)
    return OUT / (file_name.replace("near-cap", f"{side()}px") if side else file_name)


def png_chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def padded_png(extra: bytes, before_pixels: bool) -> bytes:
    """A 64 px red PNG with `extra` chunks after its header (Pillow reads them on open) or after its pixels (on load)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(out, "PNG")
    png = out.getvalue()
    header_end = 8 + 25  # signature and IHDR
    return png[:header_end] + extra + png[header_end:] if before_pixels else png[:-12] + extra + png[-12:]


def build_chunky(kind: str) -> bytes:
    """The chunk cases: 10 MB of empty chunks (the probe's), and the most each cap lets through."""
    from imgsim.inputs import images

    if kind == "padded-png-10mb":  # private chunks before the pixels: Pillow keeps a copy of each
        return padded_png(png_chunk(b"prVt") * (10 * 2**20 // 12), before_pixels=True)
    if kind == "empty-idat-png-10mb":  # empty image-data chunks after the pixels
        return padded_png(png_chunk(b"IDAT") * (10 * 2**20 // 12), before_pixels=False)
    if kind == "chunks-png-at-caps":  # just inside both caps: private chunks of 32 KB, then empty IDATs
        others = png_chunk(b"prVt", bytes(32 * 1024)) * (images.MAX_PNG_OTHER_CHUNKS - 1)
        idats = png_chunk(b"IDAT") * (images.MAX_PNG_CHUNKS - images.MAX_PNG_OTHER_CHUNKS - 2)
        return padded_png(others + idats, before_pixels=True)
    if kind == "iccp-png-at-cap":  # colour profiles that each inflate to 1 MB (Pillow's own limit per chunk)
        profile = b"icc\0\0" + zlib.compress(bytes(2**20 - 1), 9)
        return padded_png(png_chunk(b"iCCP", profile) * images.MAX_PNG_COMPRESSED_CHUNKS, before_pixels=True)
    if kind == "ztxt-png-at-cap":  # compressed text that inflates to 1 MB a chunk, each under its own key (all kept)
        inflated = zlib.compress(bytes(2**20 - 1), 9)
        return padded_png(b"".join(png_chunk(b"zTXt", b"k%d\0\0" % i + inflated)
                                   for i in range(images.MAX_PNG_COMPRESSED_CHUNKS)), before_pixels=True)
    if kind == "iccp-png-256":  # the same profiles, as many as chunks besides the pixels may be (refused)
        profile = b"icc\0\0" + zlib.compress(bytes(2**20 - 1), 9)
        return padded_png(png_chunk(b"iCCP", profile) * (images.MAX_PNG_OTHER_CHUNKS - 1), before_pixels=True)
    raise ValueError(kind)


def build(name: str) -> Path:
    """Write case `name` (if not there yet) and return its path."""
    from PIL import Image

    OUT.mkdir(parents=True, exist_ok=True)
    path = case_path(name)
    if path.exists():
        return path
    kind = CASES[name][1]
    tmp = path.with_name(path.name + ".part")
    if kind == "grey16":  # 16-bit greyscale PNG: I;16
        Image.fromarray(smooth(6300, 6300, 1, 65535, np.uint16)).save(tmp, "PNG", optimize=True)
    elif kind == "float-tiff":  # 32-bit float TIFF, one deflate-compressed strip
        img = Image.fromarray(np.round(smooth(6300, 6300, 1, 64.0, np.float32)) / np.float32(64))
        img.save(tmp, "TIFF", compression="tiff_adobe_deflate", strip_size=2**31 - 1)
    elif kind == "float-tiff-strips":  # the same data in Pillow's default 64 KB strips
        img = Image.fromarray(np.round(smooth(4000, 4000, 1, 64.0, np.float32)) / np.float32(64))
        img.save(tmp, "TIFF", compression="tiff_adobe_deflate")
    elif kind == "rgb-png":  # 40 megapixels of RGB
        Image.fromarray(smooth(7300, 5475, 3, 255, np.uint8)).save(tmp, "PNG")
    elif kind == "jpeg":
        Image.fromarray(smooth(7300, 5475, 3, 255, np.uint8)).save(tmp, "JPEG", quality=90)
    elif kind == "progressive-jpeg":  # libjpeg keeps every coefficient of a progressive JPEG in memory
        Image.fromarray(smooth(7300, 5475, 3, 255, np.uint8)).save(tmp, "JPEG", quality=90, progressive=True,
                                                                   subsampling=0)
    elif kind == "rgba-png":  # RGBA, as large as the caps allow
        side = near_cap_side(4)
        Image.fromarray(smooth(side, side, 4, 255, np.uint8)).save(tmp, "PNG")
    elif kind == "palette-png":  # 1 byte a pixel, but 4 once its transparency is applied
        side = near_cap_side(1)
        img = Image.fromarray(smooth(side, side, 1, 255, np.uint8)).convert("P")
        img.save(tmp, "PNG", transparency=0)
    elif kind in ("wide", "tall"):  # issue 28's probe: 40,000,000 x 1 and 1 x 40,000,000 16-bit grey
        Image.new("I;16", (40_000_000, 1) if kind == "wide" else (1, 40_000_000)).save(tmp, "PNG")  # flat: 77-114 KB
    elif kind.startswith("side-cap-"):  # the longest side accepted, as many rows or columns as the caps allow
        _, _, mode, shape = kind.split("-")
        from imgsim.inputs import images

        bytes_per_pixel = {"I;16": 2, "RGB": 4}[mode]
        short = min(images.MAX_PIXELS, int(images.MAX_DECODED_BYTES * 0.98) // bytes_per_pixel) // images.MAX_SIDE
        size = (images.MAX_SIDE, short) if shape == "wide" else (short, images.MAX_SIDE)
        img = Image.fromarray(smooth(*size, 1 if mode == "I;16" else 3, 65535 if mode == "I;16" else 255,
                                     np.uint16 if mode == "I;16" else np.uint8))
        img.save(tmp, "PNG")
    elif kind in ("padded-png-10mb", "empty-idat-png-10mb", "chunks-png-at-caps", "iccp-png-at-cap", "ztxt-png-at-cap",
                  "iccp-png-256"):
        tmp.write_bytes(build_chunky(kind))
    elif kind == "webp":  # libwebp holds 16 bytes a pixel while decoding
        side = min(near_cap_side(16), 16383)
        Image.fromarray(smooth(side, side, 3, 255, np.uint8)).save(tmp, "WEBP", quality=80, method=0)
    tmp.rename(path)
    return path


# name: (file name, kind, format of the warm-up image)
CASES = {
    "grey16-png-6300": ("grey16-6300.png", "grey16", "PNG"),
    "float32-tiff-6300": ("float32-6300.tif", "float-tiff", "TIFF"),
    "float32-tiff-4000": ("float32-4000.tif", "float-tiff-strips", "TIFF"),
    "rgb-png-40mp": ("rgb-40mp.png", "rgb-png", "PNG"),
    "jpeg-40mp": ("rgb-40mp.jpg", "jpeg", "JPEG"),
    "progressive-jpeg-40mp": ("progressive-40mp.jpg", "progressive-jpeg", "JPEG"),
    "rgba-png-near-cap": ("rgba-near-cap.png", "rgba-png", "PNG"),
    "palette-png-near-cap": ("palette-near-cap.png", "palette-png", "PNG"),
    "webp-near-cap": ("rgb-near-cap.webp", "webp", "WEBP"),
    # issue 28: extreme shapes and chunk floods
    "wide-grey16-png-40M": ("wide-40000000x1.png", "wide", "PNG"),
    "tall-grey16-png-40M": ("tall-1x40000000.png", "tall", "PNG"),
    "wide-grey16-png-side-cap": ("wide-grey16-side-cap.png", "side-cap-I;16-wide", "PNG"),
    "tall-grey16-png-side-cap": ("tall-grey16-side-cap.png", "side-cap-I;16-tall", "PNG"),
    "wide-rgb-png-side-cap": ("wide-rgb-side-cap.png", "side-cap-RGB-wide", "PNG"),
    "padded-png-10mb": ("padded-10mb.png", "padded-png-10mb", "PNG"),
    "empty-idat-png-10mb": ("empty-idat-10mb.png", "empty-idat-png-10mb", "PNG"),
    "chunks-png-at-caps": ("chunks-at-caps.png", "chunks-png-at-caps", "PNG"),
    "iccp-png-at-cap": ("iccp-at-cap.png", "iccp-png-at-cap", "PNG"),
    "ztxt-png-at-cap": ("ztxt-at-cap.png", "ztxt-png-at-cap", "PNG"),
    "iccp-png-256": ("iccp-256.png", "iccp-png-256", "PNG"),
}
FUNCTIONS = ("load_image", "thumbnail", "query")


def status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(path: str, func: str, warm_format: str, uncapped: bool) -> dict:
    """In a fresh process: peak RSS above baseline of one call."""
    import io

    from PIL import Image

    from imgsim.core.errors import ImageError
    from imgsim.inputs import images

    if uncapped:  # what a refused image would have cost: checks the estimate the cap is applied to
        images.MAX_DECODED_BYTES = 2**40
    def query(source):
        from imgsim.search import Query

        data = source if isinstance(source, bytes) else images.read_bytes(source)
        return Query.from_bytes(data, 128, "query").pixels

    call = {"load_image": lambda source: images.load_image(source, 128), "thumbnail": images.thumbnail,
            "query": query}[func]
    warm = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(warm, warm_format)
    call(warm.getvalue())  # codec libraries loaded: part of the baseline, not of the case
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS
    base = status_kb("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    try:
        out = call(path)
        outcome = f"ok {getattr(out, 'shape', None) or out.size}"
    except ImageError as exc:
        outcome = f"refused: {exc}"
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"peak_mb": (status_kb("VmHWM") - base) / 1024, "seconds": seconds, "cpu": cpu, "outcome": outcome}


def measure(name: str, func: str, uncapped: bool = False) -> dict:
    path = build(name)
    proc = subprocess.run([sys.executable, __file__, "--child", str(path), func, CASES[name][2], str(int(uncapped))],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        return {"peak_mb": float("nan"), "seconds": float("nan"), "cpu": float("nan"),
                "outcome": f"crashed: {proc.stderr.strip()[-300:]}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["outcome"] = result["outcome"].replace(str(OUT) + "/", "")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--functions", nargs="+", choices=FUNCTIONS, default=list(FUNCTIONS))
    parser.add_argument("--uncapped", action="store_true",
                        help="also measure refused images with the memory cap lifted (their real cost)")
    parser.add_argument("--child", nargs=4, metavar=("PATH", "FUNC", "FORMAT", "UNCAPPED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, func, warm_format, uncapped = args.child
        print(json.dumps(child(path, func, warm_format, uncapped == "1")))
        return
    print(f"{'case':26s} {'file':>9s} {'function':10s} {'peak MB':>8s} {'s':>6s} {'CPU s':>6s}  outcome")
    for name in args.cases:
        size = build(name).stat().st_size
        for func in args.functions:
            r = measure(name, func)
            outcome = r["outcome"] if len(r["outcome"]) <= 110 else r["outcome"][:107] + "..."
            print(f"{name:26s} {size / 1024:7.0f}KB {func:10s} {r['peak_mb']:8.1f} {r['seconds']:6.2f} {r['cpu']:6.2f}"
                  f"  {outcome}", flush=True)
            if args.uncapped and r["outcome"].startswith("refused") and "memory limit" in r["outcome"]:
                u = measure(name, func, uncapped=True)
                print(f"{'':26s} {'':9s} {'(no cap)':10s} {u['peak_mb']:8.1f} {u['seconds']:6.2f} {u['cpu']:6.2f}"
                      f"  {u['outcome'][:60]}", flush=True)


if __name__ == "__main__":
    main()
