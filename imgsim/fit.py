"""Fitting the autoencoder to a collection: batches of decoded images, progress reports, the fit itself.

`training.train` calls `fit_autoencoder` and then encodes, groups and saves; everything about how
the network learns (budget, batches, augmentation, early stopping) lives here and in model.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .collection import Skipped, load_for_model
from .config import Settings
from .errors import ImageError
from .model import Trainer, build_autoencoder, keras, use_mixed_precision_if_gpu

Progress = Callable[[float, str], None]


class ImageBatches(keras.utils.PyDataset):
    """Decoded image batches for Keras, shuffled each epoch, decoded in worker threads.

    Unreadable files are recorded in `skipped` and left out of their batch.
    """

    def __init__(self, paths, size, batch_size, seed, skipped, workers):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=4)
        self.paths, self.size, self.batch_size, self.skipped = list(paths), size, batch_size, skipped
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.paths))

    def __len__(self):
        full, rest = divmod(len(self.paths), self.batch_size)
        return full + (rest >= 2)  # a batch of one has no spread to measure

    def __getitem__(self, i):
        images = []
        for j in self.order[i * self.batch_size:(i + 1) * self.batch_size]:
            try:
                images.append(load_for_model(self.paths[j], self.size)[0])
            except ImageError as exc:
                self.skipped.add(self.paths[j], str(exc))
        while len(images) < 2:  # the batch's files were unreadable: keep the step's shape valid
            images.append(images[0] if images else np.zeros((self.size, self.size, 3), np.float32))
        return np.stack(images)

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.paths))


class ProgressCallback(keras.callbacks.Callback):
    """Reports training through a plain `progress(fraction, message)` function: epoch, loss, time left."""

    def __init__(self, progress: Progress, epochs: int, steps: int, share: float):
        super().__init__()
        self.progress, self.epochs, self.steps, self.share = progress, epochs, steps, share
        self.start = time.monotonic()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = (self.epoch * self.steps + batch + 1) / (self.epochs * self.steps)
        left = (time.monotonic() - self.start) / done * (1 - done)
        loss = (logs or {}).get("loss", float("nan"))
        self.progress(self.share * done, f"epoch {self.epoch + 1}/{self.epochs} · loss {loss:.4f} · {left:.0f} s left")


def fit_autoencoder(paths: list[str], settings: Settings, skipped: Skipped, progress: Progress, share: float):
    """Train a new autoencoder on the files; returns (autoencoder, history dict)."""
    keras.utils.set_random_seed(settings.seed)
    policy = use_mixed_precision_if_gpu()
    order = np.random.default_rng(settings.seed).permutation(len(paths))
    n_val = int(len(paths) * settings.validation_split)
    if n_val < 4:
        n_val = 0  # too few images to hold any back usefully
    val_paths = [paths[i] for i in order[:n_val]]
    train_paths = [paths[i] for i in order[n_val:]]
    batch_size = max(2, min(settings.batch_size, len(train_paths)))
    train_data = ImageBatches(train_paths, settings.image_size, batch_size, settings.seed, skipped, settings.workers)
    val_data = ImageBatches(val_paths, settings.image_size, batch_size, settings.seed + 1, skipped, settings.workers) if n_val else None

    autoencoder = build_autoencoder(settings.image_size, settings.latent_dim)
    trainer = Trainer(autoencoder, seed=settings.seed)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3))
    monitor = "val_loss" if val_data is not None else "loss"
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=settings.patience, restore_best_weights=True),
        ProgressCallback(progress, settings.epochs, len(train_data), share),
    ]
    history = trainer.fit(train_data, validation_data=val_data, epochs=settings.epochs, callbacks=callbacks, verbose=0)
    logs = {k: [float(v) for v in values] for k, values in history.history.items()}
    logs["precision_policy"] = policy
    return autoencoder, logs
