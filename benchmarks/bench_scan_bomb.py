"""CPU cost of JPEG scan bombs: a flat progressive JPEG whose last (empty) scan is repeated thousands of times.

    .venv/bin/python benchmarks/bench_scan_bomb.py           # a table on stdout (~1 minute on 2 cores)

libjpeg passes over every block of the image once per scan, however few bytes the scan holds, so
a few hundred KB of repeated 30-byte scans of a 6000x6000 image cost minutes. imgsim counts the
scans from the markers (`imgsim.inputs.images.check_jpeg`) and refuses more than MAX_JPEG_SCANS before
anything is decoded. Measured: CPU seconds (time.process_time) of `imgsim.inputs.images.load_image(path,
128)`, what a query costs, for a normal photograph, a flat 6000x6000 progressive JPEG as an
encoder writes it, the same at the scan limit (the most a JPEG can cost now), and bombs of 0.39 MB
and 10 MB (the dashboard's upload cap). What a bomb would cost without the check is estimated
from the measured cost of one scan (decoding one takes minutes), and says so.
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "scan-bomb"

import imgsim
from imgsim.core.errors import ImageError
from imgsim.inputs import images
from imgsim.inputs.demo import skimage_data_dir

SOS = b"\xff\xda"  # a scan's start marker
SIDE = 6000  # 36 megapixels, grey: under the pixel cap, and under the memory cap (a colour one is not)


def flat_progressive(side: int = SIDE) -> bytes:
    out = io.BytesIO()
    Image.new("L", (side, side), 128).save(out, "JPEG", progressive=True, quality=90)
    return out.getvalue()


def with_scans(data: bytes, total: int) -> bytes:
    """`data` with its last scan repeated until the stream holds `total` scans: still a valid JPEG."""
    last_scan, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last_scan:end] * (total - data.count(b"\xff\xda")) + data[end:]


def of_size(data: bytes, megabytes: float) -> bytes:
    last_scan, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return with_scans(data, data.count(b"\xff\xda") + int((megabytes * 1e6 - len(data)) / (end - last_scan)))


def cpu_seconds(call, repeat: int) -> tuple[float, str]:
    """The median CPU time of `repeat` calls, and what the last one gave."""
    times, outcome = [], ""
    for _ in range(repeat):
        start = time.process_time()
        try:
            result = call()
            outcome = f"ok {getattr(result, 'shape', result)}"
        except ImageError as exc:
            outcome = f"refused: {exc}"
        times.append(time.process_time() - start)
    return statistics.median(times), outcome


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    photo = (skimage_data_dir() or Path("/nonexistent")) / "rocket.jpg"
    base = flat_progressive()
    per_scan = base[base.rindex(b"\xff\xda"):base.rindex(b"\xff\xd9")]
    cases = {"normal-photo.jpg": photo.read_bytes() if photo.exists() else None,
             "flat-6000.jpg": base,
             "at-limit-6000.jpg": with_scans(base, images.MAX_JPEG_SCANS),
             "bomb-0.39MB.jpg": of_size(base, 0.39),
             "bomb-10MB.jpg": of_size(base, 10)}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    print(f"# benchmarks/bench_scan_bomb.py, {date.today()}, {os.cpu_count()} CPU cores, {platform.machine()}, "
          f"Python {platform.python_version()}, Pillow {Image.__version__}, imgsim {imgsim.__version__} ({commit})")
    print(f"# CPU s: median process time of load_image(path, 128) (3 runs; 1 for the ones that take seconds). "
          f"Limit: {images.MAX_JPEG_SCANS} scans. The repeated scan is {len(per_scan)} bytes.")
    print(f"{'case':20} {'file':>9} {'scans':>7} {'CPU s':>8}  outcome")
    measured = {}
    for name, data in cases.items():
        if data is None:
            print(f"{name:20} (no scikit-image photo here)")
            continue
        path = OUT / name
        path.write_bytes(data)
        seconds, outcome = cpu_seconds(lambda path=path: imgsim.load_image(path, 128), 1 if name == "at-limit-6000.jpg" else 3)
        measured[name] = seconds
        outcome = outcome.replace(f"{path}: ", "")
        print(f"{name:20} {len(data) / 1e3:7.0f}KB {data.count(SOS):7d} {seconds:8.3f}  {outcome}")
    one_scan = (measured["at-limit-6000.jpg"] - measured["flat-6000.jpg"]) / (
        images.MAX_JPEG_SCANS - base.count(SOS))
    print(f"# one more scan of {SIDE}x{SIDE} costs {one_scan * 1e3:.1f} ms of CPU (from the at-limit row)")
    for name in ("bomb-0.39MB.jpg", "bomb-10MB.jpg"):
        scans = cases[name].count(SOS)
        print(f"# {name} without the check: about {scans * one_scan:,.0f} s of CPU (estimated: {scans} scans x one scan)")
    for name in ("bomb-0.39MB.jpg", "bomb-10MB.jpg"):
        seconds, outcome = cpu_seconds(lambda name=name: images.sniff(OUT / name), 3)
        print(f"# sniff (a collection scan reads the header only) of {name}: {seconds:.4f} s, {outcome.split(':')[0]}")


if __name__ == "__main__":
    main()
