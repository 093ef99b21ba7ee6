"""Build the labelled evaluation collections: augmented photos, handwritten digits, faces.

    .venv/bin/python benchmarks/make_eval_sets.py [--out data/eval]

Each is built once: a folder that already holds the same collection is left as it is. The photos
use seed 1, so they are different views from the demo collection (seed 0) a model may train on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgsim import demo  # noqa: E402
from imgsim.evaluation import labelled_images  # noqa: E402

PHOTOS = {"n": 600, "size": 256, "seed": 1}
DIGITS_SIZE = 64


def build_all(out: Path) -> dict[str, Path]:
    """Build every collection that can be built here under out; returns them by name."""
    built = {
        "photos": demo.build_demo(out / "photos", **PHOTOS),
        "digits": demo.build_digits(out / "digits", size=DIGITS_SIZE),
    }
    try:
        built["faces"] = demo.build_faces(out / "faces")
    except FileNotFoundError as exc:
        print(f"faces: skipped, {exc}")
    return built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "eval", help="folder to build in (default: data/eval)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for name, folder in build_all(args.out).items():
        paths, labels = labelled_images(folder)
        print(f"{name}: {len(paths)} images, {len(set(labels))} labels in {folder}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
