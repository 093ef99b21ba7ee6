"""Build the labelled evaluation collections: photos of several sizes and difficulties, digits, faces.

    .venv/bin/python benchmarks/make_eval_sets.py [--out data/eval] [--only NAME ...]

Each is built once: a folder that already holds the same collection is left as it is. The photos
use seed 1 (and up), so they are different views from the demo collection (seed 0) a model may
train on. The collections, and the k their precision@k is read at (views - 1, at most 10):

- photos            600 mild views of 21 photographs (crops 45-90%, brightness/contrast +-25%)
- photos-hard-8     21 photographs x 8 heavy views (crops 30-80%, 1 in 4 grey, strong colour shifts) = 168
- photos-hard-12    42 half-photographs x 12 heavy views = 504: pairs share palette and lighting
- photos-hard-28    21 photographs x 28 heavy views = 588
- photos-hard-48    42 half-photographs x 48 heavy views = 2,016
- digits            scikit-learn's 1,797 scanned digits; faces: scikit-image's 200 LFW crops
- icons-8           Adwaita's 23 device icons (drawn artwork, not photographs) x 8 heavy views = 184
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgsim.inputs import demo  # noqa: E402
from imgsim.runs.evaluation import labelled_images  # noqa: E402

PHOTOS = {"n": 600, "size": 256, "seed": 1}
DIGITS_SIZE = 64
HARD = {  # name: (views per source, split photos in halves, seed)
    "photos-hard-8": (8, False, 2),
    "photos-hard-12": (12, True, 3),
    "photos-hard-28": (28, False, 4),
    "photos-hard-48": (48, True, 5),
}


def builders() -> dict:
    """Every collection by name, as a function of the folder to build it in."""
    out = {
        "photos": lambda folder: demo.build_demo(folder, **PHOTOS),
        "digits": lambda folder: demo.build_digits(folder, size=DIGITS_SIZE),
        "faces": demo.build_faces,
    }
    for name, (views, split, seed) in HARD.items():
        out[name] = lambda folder, v=views, s=split, sd=seed: demo.build_views(folder, v, seed=sd, split=s)
    out["icons-8"] = lambda folder: demo.build_views(folder, 8, seed=6, sources=demo.source_icons())
    return out


def precision_k(labels) -> int:
    """k for precision@k: a query's fellow views, at most 10."""
    smallest = min(list(labels).count(label) for label in set(labels))
    return max(1, min(10, smallest - 1))


def build_all(out: Path, only=None) -> dict[str, Path]:
    """Build every collection (or those named in `only`) that can be built here under out."""
    built = {}
    for name, build in builders().items():
        if only and name not in only:
            continue
        try:
            built[name] = build(out / name)
        except FileNotFoundError as exc:
            print(f"{name}: skipped, {exc}")
    return built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "eval", help="folder to build in (default: data/eval)")
    parser.add_argument("--only", action="append", help="collection name(s) to build (default: all)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for name, folder in build_all(args.out, args.only).items():
        paths, labels = labelled_images(folder)
        print(f"{name}: {len(paths)} images, {len(set(labels))} labels, precision@{precision_k(labels)} in {folder}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
