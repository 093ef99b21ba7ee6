"""Fitting the autoencoder to a collection: a decoded cache, a budget that fits the collection, the fit itself.

`training.train` calls `fit_autoencoder` and then encodes, groups and saves; everything about how
the network learns (budget, batches, augmentation, early stopping) lives here and in model.py.

Each image is decoded once per run into a uint8 cache at training size (in memory, or a
memory-mapped file in a temporary folder when large); batches are slices of it, and the two
augmented views of each image are made inside the compiled train step. So an epoch costs the
network's arithmetic and nothing else: no JPEG decoding, no Python per image, no validation pass
over the loss. Progress is judged instead by a label-free retrieval measure on held-out images
(`twin_retrieval`), which is also what early stopping watches.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable

import numpy as np

from imgsim.core.config import Settings
from imgsim.core.progress import Event
from imgsim.inputs.collection import Skipped, iter_decoded
from imgsim.learning.model import (
    Trainer,
    augment,
    build_autoencoder,
    compile_encoder,
    keras,
    loss_weights_of,
    use_mixed_precision_if_gpu,
    views_of,
)

Progress = Callable[[float, str], None]

# The budget in optimiser steps, whatever the collection's size. Epochs alone starved small
# collections: 228 photos x 12 epochs (85 steps) reached 0.58 precision@10 where 40 epochs (285
# steps) reached 0.71. So every run gets MIN_STEPS at least and MAX_STEPS at most, which keeps
# 2,000 or 5,000 images to about 4 minutes on 2 cores (more images then means fewer passes, each
# image seen less often but the views more varied). The cap was 500: on 2,016 photographs a
# 408-step run scored 0.664 precision@10 against 0.660 at 504, in a fifth less time. Both are
# for 128 px and scale with the pixel count (a step's cost): a 32 px model needs 1/16 as many.
MIN_STEPS = 400
MAX_STEPS = 400
REFERENCE_SIZE = 128
# The cache is held in memory up to this size, memory-mapped from a temporary file beyond it, and
# never grows past CACHE_MAX_BYTES: a bigger collection trains on a random sample that fits
# (MAX_STEPS batches could not show it each image once anyway).
# With a time budget (Settings.train_seconds) the steps follow the machine: at least TIME_MIN_STEPS, at
# most TIME_MAX_STEPS, scaled as above.
TIME_MIN_STEPS = 100
TIME_MAX_STEPS = 10_000
CACHE_IN_MEMORY_BYTES = 512 * 2**20
CACHE_MAX_BYTES = 4 * 2**30
HOLDOUT_MIN, HOLDOUT_MAX = 32, 256  # images held out for the retrieval measure
# TensorFlow's XLA off: its step cannot be compiled whole (no XLA_CPU kernel for
# ImageProjectiveTransformV3, which keras.ops.image.affine_transform uses there) and the network alone
# was not measurably faster (benchmarks/training-results.txt). JAX always compiles the step (eager JAX
# is far slower); PyTorch's compile costs more than a run saves here.
JIT_COMPILE = {"tensorflow": False, "jax": True, "torch": False}
# Adam's learning rate is Settings.learning_rate (measured there).


class CachedBatches(keras.utils.PyDataset):
    """uint8 batches sliced from the decoded cache: a stream of shuffled passes cut into epochs of `steps`."""

    def __init__(self, cache: np.ndarray, rows: np.ndarray, batch_size: int, steps: int, seed: int):
        super().__init__(workers=1, use_multiprocessing=False)  # a slice costs microseconds: no threads
        self.cache, self.rows, self.batch_size, self.steps, self.seed = cache, np.asarray(rows), batch_size, steps, seed
        self.offset = 0  # batches of the stream used by the epochs before
        self.served = 0  # batches this epoch asked for (an epoch cut short by the clock asks for fewer)
        self.orders = {}

    def __len__(self):
        return self.steps

    def position(self, q: int) -> int:
        """The image at position q of the stream: pass q // n in that pass's own shuffled order."""
        n = len(self.rows)
        p = q // n
        if p not in self.orders:
            self.orders = {p: np.random.default_rng([self.seed, p]).permutation(n)}
        return self.rows[self.orders[p][q % n]]

    def __getitem__(self, i):
        self.served = max(self.served, i + 1)
        start = (self.offset + i) * self.batch_size
        rows = np.sort([self.position(q) for q in range(start, start + self.batch_size)])
        return self.cache[rows]  # sorted rows read a memory-mapped cache in file order

    def on_epoch_end(self):
        self.offset += self.served or self.steps
        self.served = 0


def decode_cache(paths: list[str], size: int, workers: int, skipped: Skipped, folder: str,
                 progress: Progress | None = None) -> tuple[np.ndarray, list[int]]:
    """Decode every file once into a uint8 (n, size, size, 3) array; returns it and the positions kept.

    In memory up to CACHE_IN_MEMORY_BYTES, else a memory-mapped file in `folder`. Unreadable
    files are recorded in `skipped` and left out.
    """
    shape = (len(paths), size, size, 3)
    nbytes = int(np.prod(shape))
    if nbytes > CACHE_IN_MEMORY_BYTES:
        cache = np.lib.format.open_memmap(f"{folder}/cache.npy", mode="w+", dtype=np.uint8, shape=shape)
    else:
        cache = np.empty(shape, np.uint8)
    kept = []
    for indices, images, _, failures in iter_decoded(paths, size, batch_size=64, workers=workers):
        for path, reason in failures.items():
            skipped.add(path, reason)
        rows = np.arange(len(kept), len(kept) + len(indices))
        cache[rows] = np.rint(images * 255).astype(np.uint8)  # decode() gives k / 255 exactly: lossless
        kept.extend(indices)
        if progress is not None:
            progress(len(kept) + len(skipped), f"decoding {len(kept)}/{len(paths)} images")
    return cache[:len(kept)], kept


def budget(n_train: int, settings: Settings, batch_size: int, min_steps: int | None = None,
           max_steps: int | None = None) -> tuple[int, int]:
    """(total steps, steps per epoch): `settings.epochs` passes, raised to min_steps, capped at max_steps.

    The number of epochs stays `settings.epochs` (progress reads "epoch 3/12"); a small collection
    gets longer epochs instead of more of them. min_steps=0 trains exactly the epochs asked for.
    """
    scale = (settings.image_size / REFERENCE_SIZE) ** 2
    low = round(MIN_STEPS * scale) if min_steps is None else min_steps
    high = max(low, round(MAX_STEPS * scale)) if max_steps is None else max_steps
    passes = settings.epochs * math.ceil(n_train / batch_size)
    total = min(max(passes, low), max(high, settings.epochs))
    per_epoch = max(1, math.ceil(total / settings.epochs))
    return per_epoch * settings.epochs, per_epoch


def budget_floor(settings: Settings, min_steps: int | None = None) -> int:
    """The fewest steps a time budget trains (a slow machine runs over its time rather than train less)."""
    scale = (settings.image_size / REFERENCE_SIZE) ** 2
    return round(TIME_MIN_STEPS * scale) if min_steps is None else min_steps


def budget_cap(settings: Settings, max_steps: int | None = None) -> int:
    """The most steps a time budget trains (a fast machine stops early)."""
    scale = (settings.image_size / REFERENCE_SIZE) ** 2
    return max(1, round(TIME_MAX_STEPS * scale) if max_steps is None else max_steps)


def multicrop_of(settings: Settings) -> dict:
    """The Trainer's multi-crop and teacher options from the settings."""
    return {"local_crops": settings.local_crops, "local_size": settings.local_size, "local_area": settings.local_area,
            "teacher_momentum": settings.teacher_momentum}


def twin_retrieval(encode: Callable, images: np.ndarray, seed: int, ks=(1, 10), views: dict | None = None) -> dict:
    """Label-free retrieval quality: two augmented views of each image; how often is a view's twin found?

    Each of the 2n views queries the other 2n - 1; recall@k is the fraction whose twin is among its
    k nearest by cosine, `twin_mrr` the mean reciprocal rank of the twin. The views depend only on
    `seed`, so values from different epochs or models are comparable.
    """
    kwargs = {} if views is None else {"views": views}
    a = keras.ops.convert_to_numpy(augment(images, 2 * seed + 1, **kwargs))
    b = keras.ops.convert_to_numpy(augment(images, 2 * seed + 2, **kwargs))
    z = np.concatenate([encode(a), encode(b)]).astype(np.float64)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    n = len(images)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    twin = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    rank = (sim > sim[np.arange(2 * n), twin][:, None]).sum(axis=1)  # views closer than the twin
    out = {f"twin_recall@{k}": float(np.mean(rank < min(k, 2 * n - 1))) for k in ks}
    out["twin_mrr"] = float(np.mean(1.0 / (rank + 1)))
    return out


class TwinRetrieval(keras.callbacks.Callback):
    """Adds `twin_retrieval` on the held-out images to each epoch's logs, before early stopping reads them."""

    def __init__(self, encoder, images: np.ndarray, seed: int):
        super().__init__()
        encode = compile_encoder(encoder)  # reads the weights at each call: compiled once for the whole fit
        self.encode = lambda x: np.concatenate([encode(x[i:i + 128]) for i in range(0, len(x), 128)])
        self.images, self.seed = images, seed
        self.seconds = 0.0

    def on_epoch_end(self, epoch, logs=None):
        start = time.monotonic()
        if logs is not None:
            logs.update(twin_retrieval(self.encode, self.images, self.seed))
        self.seconds += time.monotonic() - start


class StepCounter(keras.callbacks.Callback):
    """Counts the optimiser steps run, over every `fit` call it is given to."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


class Deadline(keras.callbacks.Callback):
    """Ends an epoch (one `fit` call) at its share of the time budget, once it has run `least` steps."""

    def __init__(self, at: float, least: int, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.at, self.least, self.clock = at, least, clock

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 >= self.least and self.clock() >= self.at:
            self.model.stop_training = True


class WholeRun(keras.callbacks.Callback):
    """Hands one epoch's `fit` events to callbacks that live through the whole run (a preview, a probe): they
    see their train begin and end once (`begin`, `end`), and `params["epochs"]` is the run's epoch count."""

    def __init__(self, callbacks: list, epochs: int):
        super().__init__()
        self.callbacks, self.epochs = list(callbacks), epochs

    def set_model(self, model):
        super().set_model(model)
        for c in self.callbacks:
            c.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for c in self.callbacks:
            c.set_params({**params, "epochs": self.epochs})

    def begin(self):
        for c in self.callbacks:
            c.on_train_begin()

    def end(self):
        for c in self.callbacks:
            c.on_train_end()

    def on_epoch_begin(self, epoch, logs=None):
        for c in self.callbacks:
            c.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for c in self.callbacks:
            c.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        for c in self.callbacks:
            c.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        for c in self.callbacks:
            c.on_train_batch_end(batch, logs)


class ProgressCallback(keras.callbacks.Callback):
    """Reports training through a plain `progress(fraction, message)` function: epoch, loss, time left.

    With `seconds` (a time budget) the fraction done is the time spent; else the steps run.
    """

    def __init__(self, progress: Progress, epochs: int, steps: int, share: float, start: float = 0.0,
                 seconds: float | None = None):
        super().__init__()
        self.progress, self.epochs, self.steps, self.share, self.start_fraction = progress, epochs, steps, share, start
        self.seconds = seconds
        self.start = time.monotonic()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        spent = time.monotonic() - self.start
        if self.seconds:
            done = min(max(spent / self.seconds, 1e-6), 1.0)
        else:
            done = (self.epoch * self.steps + batch + 1) / (self.epochs * self.steps)
        left = spent / done * (1 - done)
        loss = float((logs or {}).get("loss", float("nan")))
        self.progress(self.start_fraction + (self.share - self.start_fraction) * done,
                      Event(f"epoch {self.epoch + 1}/{self.epochs} · loss {loss:.4f} · {left:.0f} s left",
                            epoch=self.epoch + 1, epochs=self.epochs, loss=loss))

    def on_epoch_end(self, epoch, logs=None):
        """The epoch's measures (the held-out ones included: this callback runs last) as data."""
        done = (epoch + 1) / self.epochs
        measures = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        self.progress(self.start_fraction + (self.share - self.start_fraction) * done,
                      Event(f"epoch {epoch + 1}/{self.epochs} done · loss {measures.get('loss', float('nan')):.4f}",
                            epoch=epoch + 1, epochs=self.epochs, loss=measures.get("loss"), measures=measures))


def split_holdout(n: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out positions, training positions). The held-out images train nothing; too few to hold out: none."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = 0
    if validation_split > 0:
        n_val = min(HOLDOUT_MAX, max(int(n * validation_split), min(HOLDOUT_MIN, n // 5)))
    if n_val < 4:
        n_val = 0
    return order[:n_val], order[n_val:]


def decode_sample(paths: list[str], settings: Settings, skipped: Skipped, folder: str, progress: Progress) -> np.ndarray:
    """The decoded cache of the files, or of a random sample that fits CACHE_MAX_BYTES (more than the budget
    can show); at least 2 readable images, else an ImgsimError naming what was skipped."""
    per_image = settings.image_size ** 2 * 3
    chosen = list(range(len(paths)))
    if len(paths) * per_image > CACHE_MAX_BYTES:
        chosen = sorted(np.random.default_rng(settings.seed).choice(len(paths), CACHE_MAX_BYTES // per_image, replace=False))
    cache, _ = decode_cache([paths[i] for i in chosen], settings.image_size, settings.workers, skipped, folder,
                            lambda done, message: progress(done / max(1, len(chosen)), message))
    if len(cache) < 2:
        from imgsim.core.errors import ImgsimError

        raise ImgsimError(f"fewer than 2 readable images to train on ({skipped.summary()})")
    return cache


def early_epochs_of(settings: Settings) -> int:
    """How many of the first epochs train on the smaller early views (progressive resizing); the last never does."""
    if settings.early_size and settings.early_size < settings.image_size:
        return min(settings.epochs - 1, round(settings.epochs * settings.early_share))
    return 0


def build_trainer(settings: Settings, early_epochs: int, jit_compile: bool | str,
                  trainer_options: dict | None) -> Trainer:
    """A new autoencoder (`trainer.autoencoder`) inside its compiled Trainer, as the settings ask."""
    autoencoder = build_autoencoder(settings.image_size, settings.latent_dim, settings)
    options = {"weights": loss_weights_of(settings), "views": views_of(settings), **multicrop_of(settings),
               "sizes": (settings.early_size,) if early_epochs else (), **(trainer_options or {})}
    trainer = Trainer(autoencoder, seed=settings.seed, **options)
    if jit_compile == "auto":
        jit_compile = JIT_COMPILE[keras.backend.backend()]
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate), jit_compile=jit_compile)
    # The optimizer's slots made now, not by the step: under TensorFlow without a distribution strategy
    # Keras defers them to the first trace, and a tf.function that creates variables is traced twice
    # (a tiny model's first step on 2 cores: 18.6-24.6 s, 9.0-9.8 s with the slots made here; same losses).
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def early_stopper(trainer: Trainer, settings: Settings, early_epochs: int) -> keras.callbacks.EarlyStopping:
    """Early stopping on the held-out twin_mrr, begun.

    Watched over the budget's second half only (and never the smaller early views): a held-out
    measure of a few dozen images is noisy, and a model that starts high (photos-hard-8: twin_mrr
    0.709 after the first epoch, then 0.697, 0.693) was stopped after 4 epochs with the first one's
    weights, 0.509 precision@7 where epoch 4 had reached 0.582.
    """
    stopper = keras.callbacks.EarlyStopping(monitor="twin_mrr", mode="max", patience=settings.patience,
                                            restore_best_weights=True,
                                            start_from_epoch=max(settings.epochs // 2, early_epochs))
    stopper.set_model(trainer)
    stopper.on_train_begin()
    return stopper


def epoch_steps(settings: Settings, per_epoch: int, min_steps: int | None, max_steps: int | None) -> tuple[int, int]:
    """(the fewest steps an epoch runs, the most): both the step budget's epoch, or with a time budget the
    floor's and the cap's shares (the clock ends an epoch between them)."""
    if not settings.train_seconds:
        return per_epoch, per_epoch
    least = max(1, math.ceil(budget_floor(settings, min_steps) / settings.epochs))
    return least, max(least, math.ceil(budget_cap(settings, max_steps) / settings.epochs))


def train_epochs(trainer: Trainer, data: CachedBatches, settings: Settings, early_epochs: int, least: int,
                 stopper, counter: StepCounter, around: list) -> tuple[dict, int]:
    """Keras' `fit` once per epoch (an epoch may end on the clock, the view size may change between
    epochs); returns each measure's per-epoch values and the steps run on the early views."""
    fit_start = time.monotonic()
    epoch_logs, early_steps = {}, 0
    for epoch in range(settings.epochs):
        view_size = settings.early_size if epoch < early_epochs else settings.image_size
        if trainer.view_size != view_size:  # a new side: the step is traced again
            trainer.view_size, trainer.train_function = view_size, None
        if settings.lr_schedule == "cosine":  # stepped per epoch: the total of steps is not known in advance
            trainer.optimizer.learning_rate = settings.learning_rate * 0.5 * (
                1 + math.cos(math.pi * (epoch + 0.5) / settings.epochs))
        callbacks = [counter]
        if settings.train_seconds:
            callbacks.append(Deadline(fit_start + settings.train_seconds * (epoch + 1) / settings.epochs, least))
        done = trainer.fit(data, initial_epoch=epoch, epochs=epoch + 1, callbacks=callbacks + around, verbose=0)
        trainer.stop_training = False  # a Deadline's stop ends its epoch only; early stopping's (below) ends the run
        for name, values in done.history.items():
            epoch_logs.setdefault(name, []).extend(values)
        if epoch < early_epochs:
            early_steps = counter.steps
        if stopper is not None:
            stopper.on_epoch_end(epoch, {k: v[-1] for k, v in done.history.items()})
            if trainer.stop_training:
                break
    if stopper is not None:
        stopper.on_train_end()
    return epoch_logs, early_steps


def run_history(epoch_logs: dict, stopper, **scalars) -> dict:
    """The history dict: per-epoch lists as floats, the run's scalars, and the kept epoch's held-out measures."""
    logs = {k: [float(v) for v in values] for k, values in epoch_logs.items()}
    logs.update(scalars)
    if stopper is not None and "twin_mrr" in logs:
        best = stopper.best_epoch  # the epoch whose weights were kept
        logs["best_epoch"] = best + 1
        logs.update({f"best_{k}": logs[k][best] for k in ("twin_recall@1", "twin_recall@10", "twin_mrr")})
    return logs


def fit_autoencoder(paths: list[str], settings: Settings, skipped: Skipped, progress: Progress, share: float,
                    min_steps: int | None = None, max_steps: int | None = None, jit_compile: bool | str = "auto",
                    trainer_options: dict | None = None, callbacks: list | None = None):
    """Train a new autoencoder on the files; returns (autoencoder, history dict).

    The history holds per-epoch lists (loss, reconstruction, invariance, spread and, with held-out
    images, twin_recall@1, twin_recall@10, twin_mrr) and run scalars: steps, early_steps, images_seen,
    train_images (files trained on), holdout_images, fit_seconds (Keras fit, including the held-out
    measure), fit_cpu_seconds, measure_seconds (the measure alone), decode_seconds,
    train_images_per_second (images_seen over decode + fit time), best_epoch and the best epoch's
    twin_* values (what the saved weights give). `callbacks` are extra Keras callbacks, run after the
    held-out measure (a benchmark's per-epoch probe). min_steps and max_steps default to the settings'.
    """
    start = time.monotonic()
    keras.utils.set_random_seed(settings.seed)
    policy = use_mixed_precision_if_gpu()
    decode_share = 0.1 * share
    min_steps = settings.min_steps if min_steps is None else min_steps
    max_steps = settings.max_steps if max_steps is None else max_steps
    with tempfile.TemporaryDirectory(prefix="imgsim-cache-") as folder:
        cache = decode_sample(paths, settings, skipped, folder, lambda done, m: progress(decode_share * done, m))
        decode_seconds = time.monotonic() - start
        held, train_rows = split_holdout(len(cache), settings.validation_split, settings.seed)
        holdout = np.asarray(cache[np.sort(held)]) if len(held) else None
        batch_size = max(2, min(settings.batch_size, len(train_rows)))
        _, per_epoch = budget(len(train_rows), settings, batch_size, min_steps, max_steps)
        data = CachedBatches(cache, train_rows, batch_size, per_epoch, settings.seed)
        early_epochs = early_epochs_of(settings)
        trainer = build_trainer(settings, early_epochs, jit_compile, trainer_options)
        measure = None if holdout is None else TwinRetrieval(trainer.encoder, holdout, settings.seed)
        stopper = None if measure is None else early_stopper(trainer, settings, early_epochs)
        least, data.steps = epoch_steps(settings, per_epoch, min_steps, max_steps)
        counter = StepCounter()
        whole = WholeRun([c for c in (measure, *(callbacks or [])) if c is not None], settings.epochs)
        around = [whole, ProgressCallback(progress, settings.epochs, data.steps, share, start=decode_share,
                                          seconds=settings.train_seconds)]
        whole.set_model(trainer)
        whole.begin()
        fit_start, cpu_start = time.monotonic(), time.process_time()
        epoch_logs, early_steps = train_epochs(trainer, data, settings, early_epochs, least, stopper, counter, around)
        whole.end()
        fit_seconds = time.monotonic() - fit_start
        fit_cpu_seconds = time.process_time() - cpu_start  # every thread's: the measure of cost on a shared machine
    steps = counter.steps
    return trainer.autoencoder, run_history(
        epoch_logs, stopper, precision_policy=policy, steps=steps, early_steps=early_steps,
        images_seen=steps * batch_size, batch_size=batch_size, train_images=len(train_rows),
        holdout_images=0 if holdout is None else len(holdout), decode_seconds=round(decode_seconds, 2),
        fit_seconds=round(fit_seconds, 2), fit_cpu_seconds=round(fit_cpu_seconds, 2),
        measure_seconds=round(measure.seconds if measure is not None else 0.0, 2),
        train_images_per_second=round(steps * batch_size / max(fit_seconds + decode_seconds, 1e-9), 1))
