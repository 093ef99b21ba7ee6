"""Precision@10 and mAP of the baseline features on each evaluation collection.

    .venv/bin/python benchmarks/make_eval_sets.py      # once
    .venv/bin/python benchmarks/quality_baselines.py [--eval data/eval] [--plain-histogram]

A model is scored the same way by adding its features to the dict given to `evaluate`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgsim.runs import evaluation  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=ROOT / "data" / "eval", help="folder of collections (default: data/eval)")
    parser.add_argument("-k", type=int, default=10, help="neighbours for precision@k (default: 10)")
    parser.add_argument("--plain-histogram", action="store_true", help="also score the histogram without the square root")
    args = parser.parse_args(argv)
    folders = args.eval.iterdir() if args.eval.is_dir() else []
    collections = sorted(p for p in folders if p.is_dir() and not p.name.startswith("."))
    if not collections:
        print(f"{args.eval}: no collections; run benchmarks/make_eval_sets.py first", file=sys.stderr)
        return 1
    for folder in collections:
        start = time.perf_counter()
        paths, labels = evaluation.labelled_images(folder)
        features = evaluation.baselines(paths)
        if args.plain_histogram:
            features["colour histogram, plain"] = evaluation.colour_histogram(paths, sqrt=False)
        rows = evaluation.evaluate(features, labels, k=args.k)
        print(f"\n{folder.name}: {len(paths)} images, {len(set(labels))} labels ({time.perf_counter() - start:.1f} s)")
        print(evaluation.format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
