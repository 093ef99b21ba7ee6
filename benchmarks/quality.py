"""The quality table: imgsim's latents against the baselines on each evaluation collection.

For every collection under --eval (built by benchmarks/make_eval_sets.py), trains a model with
the default settings on that collection (as a user would on their own folder), then prints
leave-one-out precision@k and mAP for the latents and each baseline, computed in the same run.

    .venv/bin/python benchmarks/make_eval_sets.py
    .venv/bin/python benchmarks/quality.py [--eval data/eval] [--only photos] [--epochs E]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgsim import Settings  # noqa: E402
from imgsim.evaluation import run_evaluation  # noqa: E402
from imgsim.training import train  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=ROOT / "data" / "eval")
    parser.add_argument("--only", action="append", help="collection name(s) to run (default: all)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--epochs", type=int, help="override the default epochs")
    parser.add_argument("--image-size", type=int, help="override the default image size")
    args = parser.parse_args(argv)
    collections = sorted(p for p in args.eval.iterdir() if p.is_dir() and not p.name.startswith(".")) if args.eval.is_dir() else []
    collections = [c for c in collections if not args.only or c.name in args.only]
    if not collections:
        print(f"{args.eval}: no collections; run benchmarks/make_eval_sets.py first", file=sys.stderr)
        return 1
    for folder in collections:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(model_dir=Path(tmp), images=folder).replace(epochs=args.epochs, image_size=args.image_size)
            start = time.perf_counter()
            report = train(settings)
            print(f"\n== {folder.name}: trained with {settings.training_dict()} in {time.perf_counter() - start:.0f} s "
                  f"({report.metrics.get('epochs_run')} epochs)")
            print(run_evaluation(folder, tmp, k=args.k))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
