"""Training throughput: what `imgsim train`'s fit really achieves against the same objective on in-memory tensors.

    .venv/bin/python benchmarks/bench_training.py                  # 600 JPEGs, 2 rounds of 96 steps each
    .venv/bin/python benchmarks/bench_training.py --full 2000      # also: 2,000 images x the default budget

Both sides train a fresh model for the same number of steps at the same batch size, and both
count their start-up (model build, tracing): the real side is `fit_autoencoder` on the files, as
`imgsim train` calls it (decode once into the cache, held-out measure every epoch, early
stopping armed); the in-memory side is `Trainer.fit` on the already decoded uint8 images.
They alternate (real, memory, memory, real, ...) so that load from other processes hits both and
neither side always runs first; the ratio of the summed images/s is printed. The machine's other users make single figures noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"

import numpy as np  # noqa: E402

from imgsim import Settings  # noqa: E402
from imgsim.inputs.collection import Skipped, iter_decoded, scan_folder  # noqa: E402
from imgsim.learning.fit import fit_autoencoder  # noqa: E402
from imgsim.learning.model import Trainer, build_autoencoder, keras  # noqa: E402


def real_fit(paths, settings: Settings, steps: int) -> tuple[float, dict]:
    start = time.perf_counter()
    _, history = fit_autoencoder(paths, settings, Skipped(), lambda *a: None, 0.85, min_steps=steps, max_steps=steps)
    return time.perf_counter() - start, history


def memory_fit(images: np.ndarray, settings: Settings, steps: int) -> float:
    """The same objective, steps and batch size on a uint8 array already in memory."""
    start = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    trainer = Trainer(build_autoencoder(settings.image_size, settings.latent_dim), seed=settings.seed)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    per_epoch = max(1, steps // settings.epochs)
    data = np.concatenate([images] * (per_epoch * settings.batch_size // len(images) + 1))[:per_epoch * settings.batch_size]
    trainer.fit(data, batch_size=settings.batch_size, epochs=settings.epochs, shuffle=True, verbose=0)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=600, help="images in the collection (512 px JPEGs)")
    parser.add_argument("--steps", type=int, default=96, help="optimiser steps a side per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="epochs the steps are cut into (held-out measure each)")
    parser.add_argument("--full", type=int, help="also time the whole default fit on this many images")
    args = parser.parse_args(argv)
    from imgsim.inputs.demo import build_demo

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    folder = build_demo(OUT / f"images-{args.n}-512", n=args.n, size=512, seed=11)
    paths = [f.path for f in scan_folder(folder)]
    settings = Settings(images=folder, epochs=args.epochs)
    images = np.concatenate([(batch * 255).round().astype(np.uint8)
                             for _, batch, _, _ in iter_decoded(paths, settings.image_size, 64, settings.workers)])
    steps = args.epochs * max(1, args.steps // args.epochs)
    seen = steps * settings.batch_size
    real_s, memory_s = [], []
    for r in range(args.rounds):
        if r % 2:  # every other round the in-memory side goes first: neither always pays the process's first use
            memory_s.append(memory_fit(images, settings, steps))
        seconds, history = real_fit(paths, settings, steps)
        real_s.append(seconds)
        if not r % 2:
            memory_s.append(memory_fit(images, settings, steps))
        print(f"round {r + 1}: imgsim fit {seen / real_s[-1]:.1f} images/s (decode {history['decode_seconds']:.1f} s, "
              f"held-out measure {history['measure_seconds']:.1f} s, "
              f"{history['holdout_images']} held out), in memory {seen / memory_s[-1]:.1f} images/s; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.rounds:  # --rounds 0 --full N times the whole training alone
        real, memory = seen * args.rounds / sum(real_s), seen * args.rounds / sum(memory_s)
        print(f"training {len(paths)} files, {steps} steps of {settings.batch_size} a side per round: imgsim fit "
              f"{real:.1f} images/s, in-memory tensors {memory:.1f} images/s, ratio {real / memory:.0%} (target >= 90%)")
    if args.full:
        from imgsim.runs.training import train

        big = build_demo(OUT / f"images-{args.full}-512", n=args.full, size=512, seed=11)
        import shutil

        model_dir = OUT / f"model-train-{args.full}"
        shutil.rmtree(model_dir, ignore_errors=True)  # a first model, as a new user's: published early as well
        start = time.perf_counter()
        preview = []
        report = train(Settings(images=big, model_dir=model_dir),
                       lambda f, message: preview.append(time.perf_counter() - start)
                       if "training goes on" in str(message) else None)
        total = time.perf_counter() - start
        first = f"first model searchable after {preview[0]:.0f} s, " if preview else "no early first model, "
        print(f"imgsim train, {args.full} images, default settings, first training in a new folder: {first}"
              f"final model after {total:.0f} s ({total / 60:.1f} min; target <= 4 min), "
              f"{report.metrics.get('steps')} steps, {report.metrics.get('train_images_per_second')} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
