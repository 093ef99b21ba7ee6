"""How much of the mirror image to search alike: precision@k of trained models' vectors at several `mirror_invariance`.

For each evaluation collection with a model in --models (one folder per collection name, any version: one saved
before the MirrorInvariance layer too), every image is encoded as it is and mirrored, with the latent alone; the
searched vector at each invariance is then formed by imgsim.learning.model.mirror_pair, as compile_encoder forms it,
and scored by leave-one-out precision@k (k = views - 1, at most 10, as benchmarks/quality.py). Same weights
throughout, so the columns differ by the descriptor alone (a training also watches the held-out measure on it:
benchmarks/quality.py --setting mirror_invariance=V trains one).

    .venv/bin/python benchmarks/mirror_screen.py --models data/eval-models [--eval data/eval] [--only photos-hard-8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from make_eval_sets import precision_k  # noqa: E402

from imgsim.runs import evaluation  # noqa: E402

INVARIANCES = (0.0, 0.3, 0.45, 0.6, 0.75, 1.0)


def main(argv=None) -> int:
    from imgsim.inputs.collection import iter_decoded
    from imgsim.learning.model import MirrorInvariance, compile_encoder, load_encoder, mirror_pair, ops
    from imgsim.storage import store
    from imgsim.storage.engines import normalise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=ROOT / "data" / "eval")
    parser.add_argument("--models", type=Path, required=True, help="one model folder per collection name")
    parser.add_argument("--only", action="append", help="collection name(s) to run (default: every one with a model)")
    args = parser.parse_args(argv)
    print("| collection (k) | model: steps, epochs | " + " | ".join(f"{v:g}" for v in INVARIANCES) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in INVARIANCES) + " |")
    for folder in sorted(p for p in args.models.iterdir() if (p / "CURRENT").is_file()):
        if args.only and folder.name not in args.only or not (args.eval / folder.name).is_dir():
            continue
        version = store.load_version(folder)
        encoder = load_encoder(version.model_path)
        for layer in encoder.layers:
            if isinstance(layer, MirrorInvariance):
                layer.invariance = 0.0  # the latent alone; the pairs are formed below
        encode = compile_encoder(encoder)
        paths, labels = evaluation.labelled_images(args.eval / folder.name)
        paths, labels = [str(p) for p in paths], np.asarray(labels)
        k = precision_k(labels)
        plain, mirrored = [], []
        for _, images, _, failures in iter_decoded(paths, version.image_size, batch_size=64):
            if failures:
                raise SystemExit(f"{folder.name}: unreadable images {sorted(failures)[:3]}")
            plain.append(encode(images))
            mirrored.append(encode(images[:, :, ::-1].copy()))
        plain, mirrored = np.concatenate(plain), np.concatenate(mirrored)
        scores = [evaluation.precision_at_k(normalise(ops.convert_to_numpy(mirror_pair(plain, mirrored, v)))
                                            if v else normalise(plain), labels, k) for v in INVARIANCES]
        metrics = version.manifest.get("metrics", {})
        print(f"| {folder.name} ({k}) | {metrics.get('steps')}, {metrics.get('epochs_run')} | "
              + " | ".join(f"{s:.3f}" for s in scores) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
