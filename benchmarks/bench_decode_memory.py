"""Peak memory of decoding hostile images: small files whose pixels cost far more than their bytes.

    .venv/bin/python benchmarks/bench_decode_memory.py            # every case, a table on stdout
    .venv/bin/python benchmarks/bench_decode_memory.py --cases grey16-png-6300
    .venv/bin/python benchmarks/bench_decode_memory.py --uncapped  # also what each refused one would cost

Builds each image once under benchmarks/out/decode-memory/, then measures, each in a fresh
process so that no case inherits another's peak: the resident memory above the process's
baseline (VmHWM from /proc/self/status after resetting it, minus VmRSS before the call) of
`imgsim.inputs.images.load_image(path, 128)` and of `imgsim.inputs.images.thumbnail(path)`. The baseline is
taken after imgsim.inputs.images and the format's codec are loaded (a 16 px image of the same format
is decoded first). Target: every accepted image at most ~100 MB above baseline; every refused
one refused in one line, cheaply.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
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
}


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
    call = {"load_image": lambda source: images.load_image(source, 128), "thumbnail": images.thumbnail}[func]
    warm = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(warm, warm_format)
    call(warm.getvalue())  # codec libraries loaded: part of the baseline, not of the case
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS
    base = status_kb("VmRSS")
    start = time.perf_counter()
    try:
        out = call(path)
        outcome = f"ok {getattr(out, 'shape', None) or out.size}"
    except ImageError as exc:
        outcome = f"refused: {exc}"
    seconds = time.perf_counter() - start
    return {"peak_mb": (status_kb("VmHWM") - base) / 1024, "seconds": seconds, "outcome": outcome}


def measure(name: str, func: str, uncapped: bool = False) -> dict:
    path = build(name)
    proc = subprocess.run([sys.executable, __file__, "--child", str(path), func, CASES[name][2], str(int(uncapped))],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        return {"peak_mb": float("nan"), "seconds": float("nan"), "outcome": f"crashed: {proc.stderr.strip()[-300:]}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["outcome"] = result["outcome"].replace(str(OUT) + "/", "")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--uncapped", action="store_true",
                        help="also measure refused images with the memory cap lifted (their real cost)")
    parser.add_argument("--child", nargs=4, metavar=("PATH", "FUNC", "FORMAT", "UNCAPPED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, func, warm_format, uncapped = args.child
        print(json.dumps(child(path, func, warm_format, uncapped == "1")))
        return
    print(f"{'case':24s} {'file':>9s} {'function':10s} {'peak MB':>8s} {'s':>6s}  outcome")
    for name in args.cases:
        size = build(name).stat().st_size
        for func in ("load_image", "thumbnail"):
            r = measure(name, func)
            outcome = r["outcome"] if len(r["outcome"]) <= 110 else r["outcome"][:107] + "..."
            print(f"{name:24s} {size / 1024:7.0f}KB {func:10s} {r['peak_mb']:8.1f} {r['seconds']:6.2f}  {outcome}",
                  flush=True)
            if args.uncapped and r["outcome"].startswith("refused") and "memory limit" in r["outcome"]:
                u = measure(name, func, uncapped=True)
                print(f"{'':24s} {'':9s} {'(no cap)':10s} {u['peak_mb']:8.1f} {u['seconds']:6.2f}  {u['outcome'][:60]}",
                      flush=True)


if __name__ == "__main__":
    main()
