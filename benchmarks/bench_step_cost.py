"""Seconds per training step of several settings, measured side by side on in-memory batches.

Each setting gets a Trainer compiled as `fit_autoencoder` compiles it; the rounds alternate between
the settings (a shared machine's load then falls on all of them alike) and the median round is kept.

    .venv/bin/python benchmarks/bench_step_cost.py --variant "" --variant "local_crops=4" --variant "early_size=64"
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from imgsim import Settings  # noqa: E402
from imgsim.learning.fit import multicrop_of  # noqa: E402
from imgsim.learning.model import Trainer, build_autoencoder, keras, loss_weights_of, views_of  # noqa: E402


def parse(variant: str) -> dict:
    return {k: ast.literal_eval(v) for k, v in (part.split("=", 1) for part in variant.split(",") if part.strip())}


def trainer_for(settings: Settings, view_size: int) -> Trainer:
    keras.utils.set_random_seed(0)
    model = build_autoencoder(settings.image_size, settings.latent_dim, settings)
    sizes = (view_size,) if view_size != settings.image_size else ()
    trainer = Trainer(model, seed=0, weights=loss_weights_of(settings), views=views_of(settings),
                      sizes=sizes, **multicrop_of(settings))
    trainer.view_size = view_size
    trainer.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), jit_compile=False
                    if keras.backend.backend() == "tensorflow" else True)
    return trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="Settings fields, k=v,k=v ('' = defaults)")
    parser.add_argument("--steps", type=int, default=10, help="steps a round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    variants = args.variant or [""]
    rng = np.random.default_rng(0)
    trainers = {}
    for v in variants:
        settings = Settings().replace(**parse(v))
        size = settings.early_size or settings.image_size
        trainers[v] = (trainer_for(settings, size), settings)
        batch = (rng.random((settings.batch_size, settings.image_size, settings.image_size, 3)) * 255).astype(np.uint8)
        trainers[v][0].fit(batch, batch_size=settings.batch_size, epochs=1, verbose=0)  # trace
    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            trainer, settings = trainers[v]
            batch = (rng.random((settings.batch_size * args.steps, settings.image_size, settings.image_size, 3))
                     * 255).astype(np.uint8)
            start = time.perf_counter()
            trainer.fit(batch, batch_size=settings.batch_size, epochs=1, verbose=0, shuffle=False)
            times[v].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times[variants[0]])
    print(f"load {open('/proc/loadavg').read().split()[:3]}")
    for v in variants:
        t = statistics.median(times[v])
        print(f"{v or 'defaults':60s} {t * 1000:7.0f} ms/step  x{t / base:.2f}  (rounds {' '.join(f'{x * 1000:.0f}' for x in times[v])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
