"""The Keras backends side by side: training and encoding speed, a first training, and quality.

Each backend runs in its own process (Keras takes one backend a process) with KERAS_BACKEND set;
a "device" of cpu hides any GPU from it (JAX_PLATFORMS=cpu, CUDA_VISIBLE_DEVICES=""). Tasks:

- speed: images/s of training steps (128 px unless --image-size, batch 32, after a warm-up epoch that compiles) and of
  encoding (batches of 64).
- train:FOLDER: `imgsim.runs.training.train` on the folder as a user's first training (a preview is
  published past 60 s of fitting): seconds to the first searchable model, to the end, the run's
  training images/s, and precision@k of the final model on --quality-set (a labelled folder).
- evalmodels: precision@k of each stored eval model (data/eval-models/NAME) on its eval set
  (data/eval/NAME), the same weights encoded under each backend.

    nice -n 10 .venv/bin/python benchmarks/bench_backends.py --backends tensorflow,jax --tasks speed,evalmodels
    nice -n 10 .venv/bin/python benchmarks/bench_backends.py --backends tensorflow,jax --tasks train:2000
    (train:N builds an N-image demo collection under benchmarks/out/backends first)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "out" / "backends"


def collection(spec: str, out: Path) -> Path:
    """train:N (a demo collection of N images, seed 2) or train:FOLDER."""
    if spec.isdigit():
        from imgsim.inputs.demo import build_demo

        return build_demo(out / f"demo-{spec}", n=int(spec), size=256, seed=2)
    return Path(spec)


def precision(model_dir: Path, folder: Path) -> tuple[float, int, int]:
    """(precision@k, k, images) of the model folder's current version on a labelled folder."""
    from make_eval_sets import precision_k

    from imgsim.runs import evaluation
    from imgsim.search import Searcher

    paths, labels = evaluation.labelled_images(folder)
    searcher = Searcher.load(model_dir)
    kept, vectors, _, failures = searcher.encode_files([str(p) for p in paths], workers=2)
    assert not failures and len(kept) == len(paths), failures
    k = precision_k(labels)
    return evaluation.precision_at_k(vectors, labels, k), k, len(paths)


def speed(steps: int, encode_images: int, size: int) -> dict:
    import numpy as np

    from imgsim.learning.fit import JIT_COMPILE, CachedBatches
    from imgsim.learning.model import Trainer, build_autoencoder, compile_encoder, keras, use_mixed_precision_if_gpu

    policy = use_mixed_precision_if_gpu()
    rng = np.random.default_rng(0)
    cache = rng.integers(0, 256, (256, size, size, 3), dtype=np.uint8)
    keras.utils.set_random_seed(0)
    autoencoder = build_autoencoder(size, 128)
    trainer = Trainer(autoencoder, seed=0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=JIT_COMPILE[keras.backend.backend()])
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    start = time.perf_counter()
    trainer.fit(CachedBatches(cache, np.arange(len(cache)), 32, steps, 0), epochs=2, callbacks=[Clock()], verbose=0)
    first = time.perf_counter() - start
    encode = compile_encoder(autoencoder.get_layer("encoder"))
    images = cache[:64].astype(np.float32) / 255
    start = time.perf_counter()
    encode(images)  # compiles
    encode_compile = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(max(1, encode_images // 64)):
        encode(images)
    seconds = time.perf_counter() - start
    return {"policy": policy, "train_images_per_s": round(steps * 32 / times[1], 1),
            "first_epoch_s_with_compile": round(times[0], 1), "fit_s": round(first, 1),
            "encode_images_per_s": round(max(1, encode_images // 64) * 64 / seconds, 1),
            "encode_compile_s": round(encode_compile, 2)}


def first_training(folder: Path, quality_set: Path | None, overrides: dict) -> dict:
    from imgsim import Settings
    from imgsim.runs.training import train

    ready = []
    start = time.perf_counter()

    def progress(fraction, message):
        if "is ready to search" in str(message) and not ready:
            ready.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory(prefix="imgsim-bench-") as tmp:
        settings = Settings(model_dir=Path(tmp) / "models", images=folder, **overrides)
        report = train(settings, progress)
        total = time.perf_counter() - start
        out = {"images": report.images, "first_model_s": round(ready[0] if ready else total, 1),
               "preview": bool(ready), "total_s": round(total, 1), "steps": report.metrics.get("steps"),
               "train_images_per_s": report.metrics.get("train_images_per_second"),
               "twin_mrr": report.metrics.get("twin_mrr")}
        if quality_set is not None:
            p, k, n = precision(settings.model_dir, quality_set)
            out.update({"quality_set": quality_set.name, f"precision@{k}": round(p, 4)})
    return out


def eval_models(eval_root: Path, models_root: Path) -> dict:
    out = {}
    for folder in sorted(p for p in eval_root.iterdir() if p.is_dir()):
        if (models_root / folder.name).is_dir():
            start = time.perf_counter()
            p, k, n = precision(models_root / folder.name, folder)
            out[folder.name] = {f"precision@{k}": round(p, 4), "images": n,
                                "encode_s": round(time.perf_counter() - start, 1)}
    return out


def worker(args) -> int:
    from imgsim.learning.backend import versions

    import_start = time.perf_counter()
    from imgsim.learning.model import keras

    print(json.dumps({"backend": keras.backend.backend(), **versions(),
                      "import_s": round(time.perf_counter() - import_start, 1)}), flush=True)
    for task in args.tasks.split(","):
        start = time.perf_counter()
        if task == "speed":
            result = speed(args.steps, args.encode_images, args.image_size or 128)
        elif task.startswith("train:"):
            overrides = {k: v for k, v in (("image_size", args.image_size), ("epochs", args.epochs)) if v}
            result = first_training(collection(task[6:], args.out), args.quality_set, overrides)
        elif task == "evalmodels":
            result = eval_models(args.eval, args.eval_models)
        else:
            raise SystemExit(f"unknown task {task!r}")
        print(json.dumps({"task": task, "seconds": round(time.perf_counter() - start, 1), **result}), flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow,jax", help="comma-separated (default tensorflow,jax)")
    parser.add_argument("--device", default="default", choices=("default", "cpu"),
                        help="cpu hides any GPU from the backend")
    parser.add_argument("--tasks", default="speed,evalmodels")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps for speed (default 20)")
    parser.add_argument("--encode-images", type=int, default=1024)
    parser.add_argument("--image-size", type=int, help="instead of 128 px (a rehearsal: 32 trains 1/16 of the steps)")
    parser.add_argument("--epochs", type=int, help="instead of the default epochs, for train:")
    parser.add_argument("--eval", type=Path, default=ROOT / "data" / "eval")
    parser.add_argument("--eval-models", type=Path, default=ROOT / "data" / "eval-models")
    parser.add_argument("--quality-set", type=Path, help="labelled folder a train: task's model is scored on")
    parser.add_argument("--out", type=Path, default=OUT, help="where train:N builds its collections")
    parser.add_argument("--json", type=Path, help="append every result line here too")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.tasks.split(","):  # built once, before any backend's clock starts
        if spec.startswith("train:"):
            collection(spec[6:], args.out)
    status = 0
    for backend in args.backends.split(","):
        env = {**os.environ, "KERAS_BACKEND": backend}
        if args.device == "cpu":
            env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
        command = [sys.executable, __file__, "--worker", backend, *(argv if argv is not None else sys.argv[1:])]
        print(f"== {backend} ({args.device}): {args.tasks}", flush=True)
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as child:
            for line in child.stdout:
                print(line.rstrip(), flush=True)
                if args.json and line.startswith("{"):
                    record = {"backend": backend, "device": args.device, **json.loads(line)}
                    with open(args.json, "a") as out:
                        out.write(json.dumps(record) + "\n")
        status = status or child.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
