"""Learning a collection: train the autoencoder, encode every image, group and map them, save a version.

`train` (here) and `index` (imgsim.runs.indexing) are the two writers of a model folder. Both hold its
lock, both stream images in batches, and both finish by writing one complete version
(store.write_version) over new segments.
"""

from __future__ import annotations

import platform
import threading
import time
from pathlib import Path

import numpy as np

from imgsim.core.config import Settings
from imgsim.core.errors import ImgsimError, ModelNotFoundError
from imgsim.core.progress import annotate
from imgsim.duplicates import DEFAULT_THRESHOLD
from imgsim.inputs.collection import FileInfo, Skipped, fingerprint, scan_folder
from imgsim.learning.fit import fit_autoencoder
from imgsim.learning.groups import fit_groups, silhouette_by_k
from imgsim.learning.model import keras
from imgsim.learning.projection import map_2d, warm_up
from imgsim.runs.encoding import encode_collection
from imgsim.runs.neighbours import keep_checked_graph
from imgsim.runs.report import Progress, RunReport, no_progress, skipped_records  # noqa: F401 (imported from here too)
from imgsim.search import rerank
from imgsim.storage import store
from imgsim.storage.engines import choose_engine
from imgsim.storage.group_names import carry_over, inherit, load_labels
from imgsim.storage.manifest import Manifest
from imgsim.storage.records import Records


def library_versions() -> dict:
    """Python, the Keras backend and its version, Keras, scikit-learn and NumPy: recorded in each version's manifest."""
    import sklearn

    from imgsim.learning.backend import versions

    return {"python": platform.python_version(), **versions(), "scikit-learn": sklearn.__version__,
            "numpy": np.__version__}


def collection_summary(vectors: np.ndarray, records: Records, centres: np.ndarray, seed: int) -> dict:
    """What the dashboard shows without recomputing: silhouette by k and each group's most typical image."""
    scores = silhouette_by_k(vectors, range(2, 13), seed)
    typical = {}
    for group, centre in enumerate(centres):
        members = np.flatnonzero(records.groups == group)
        if len(members):
            typical[str(group)] = int(records.ids[members[np.argmax(vectors[members] @ centre)]])
    return {"silhouette": scores.get(len(centres)), "silhouette_by_k": {str(k): v for k, v in scores.items()},
            "typical": typical}


def carry_names(model_dir, parent: store.Version | None, version_id: str, records: Records) -> dict:
    """Move the parent's group names onto this retraining's groups (marked carried over)."""
    if parent is None:
        return {}
    named = load_labels(model_dir, parent.id)
    if not named:
        return {}
    mapping = carry_over(parent.ids, parent.groups, records.ids, records.groups, named=named)
    return inherit(model_dir, parent.id, version_id, mapping)


def current_or_none(model_dir) -> store.Version | None:
    try:
        return store.load_version(model_dir)
    except ModelNotFoundError:
        return None


# A first model (none current yet) whose fit runs longer than this is also published early: at the
# first epoch's end past PREVIEW_AFTER_S of fitting, the weights so far are encoded and saved as a
# version that searches at once, while the fit goes on to the full budget. The demo's 600 images
# take about 4 minutes from a fresh clone's run.sh on 2 cores; the preview is meant to land
# within 2 (README, "Speed and memory").
PREVIEW_AFTER_S = 60.0


def train(settings: Settings, progress: Progress = no_progress, preview: bool | None = None,
          ray: str | None = None) -> RunReport:
    """Train a new model version on `settings.images` and make it current (group names carried over).

    `preview` (default: only when no version exists yet) publishes an early version during a long
    fit (see PREVIEW_AFTER_S); the final version then descends from it. `ray` (a Ray cluster's
    HOST:PORT) runs the encoding pass on that cluster (imgsim.runs.distributed); the fit stays here.
    """
    if ray:  # before anything: an unreachable cluster or a missing ray package is one line, nothing touched
        from imgsim.runs.distributed import connect

        connect(ray)
    start = time.monotonic()
    with store.writer_lock(settings.model_dir):
        store.clear_staging(settings.model_dir)
        parent = current_or_none(settings.model_dir)
        skipped = Skipped()  # the scan's, then the files that fail to decode
        files = scan_folder(settings.images, settings.follow_links, skipped)
        if len(files) < 2:
            raise ImgsimError(f"{settings.images}: found {len(files)} image(s); at least 2 are needed to train "
                              f"({skipped.summary()})")
        paths = [f.path for f in files]
        progress(0.0, f"training on {len(paths)} images")
        run = Publisher(settings, files, skipped, parent, start)
        run.ray = ray

        def fitting(fraction, message):
            progress(fraction, message if run.preview_id is None else annotate(message, after=" · a first model is ready to search"))

        callbacks = []
        if parent is None if preview is None else preview:
            callbacks.append(Preview(run, progress))
            # the preview's map would otherwise wait for UMAP's compilation: done beside the fit instead
            run.warming = threading.Thread(target=warm_up, args=(len(paths),), daemon=True, name="imgsim-umap-warm-up")
            run.warming.start()
        autoencoder, history = fit_autoencoder(paths, settings, skipped, fitting, share=0.85, callbacks=callbacks)
        report = run.publish(autoencoder, history, progress, 0.85, 0.1)
        progress(1.0, f"saved version {report.version}")
        return report


class Publisher:
    """Encodes, groups, maps and saves one training run's weights as a version; more than once with a preview."""

    def __init__(self, settings: Settings, files: list[FileInfo], skipped: Skipped, parent, start: float):
        self.settings, self.files, self.skipped, self.parent, self.start = settings, files, skipped, parent, start
        self.preview_id = None
        self.warming: threading.Thread | None = None  # UMAP's compilation, started beside the fit
        self.ray: str | None = None  # a Ray cluster's address: the encoding pass runs there

    def publish(self, autoencoder, history: dict, progress: Progress, at: float, share: float,
                preview: bool = False) -> RunReport:
        settings, files, skipped = self.settings, self.files, self.skipped
        train_seconds = time.monotonic() - self.start
        # a preview's encoding failures will be the final run's too: count them there once
        failed = Skipped(dict(skipped.reasons), skipped.not_images) if preview else skipped
        found = [] if settings.recheck and rerank.can_describe(settings.image_size) else None  # local features
        kept, vectors, hashes, failures = encode_collection(autoencoder, [f.path for f in files], settings.image_size,
                                                            workers=settings.workers, ray=self.ray, progress=progress,
                                                            start=at, share=share, features=found)
        for path, reason in failures.items():
            failed.add(path, reason)
        if len(vectors) < 2:
            raise ImgsimError(f"{settings.images}: fewer than 2 readable images ({failed.summary()})")
        progress(at + share / 2, "grouping and mapping")
        centres, groups = fit_groups(vectors, settings.clusters, settings.seed)
        if self.warming is not None:
            self.warming.join()  # numba's default threading layer must not run in two threads at once
        coords = map_2d(vectors, settings.seed)
        kept_files = [files[p] for p in kept]
        records = Records.build([f.path for f in kept_files], [f.size for f in kept_files],
                                [f.mtime_ns for f in kept_files], hashes, groups, coords)
        summary = collection_summary(vectors, records, centres, settings.seed)
        epochs_run = len(history.get("loss", []))
        metrics = {
            "images": len(vectors),
            "skipped": len(failed),
            "epochs_run": epochs_run,
            "loss": history["loss"][-1] if history.get("loss") else None,
            "val_loss": min(history["val_loss"]) if history.get("val_loss") else None,
            "train_seconds": round(train_seconds, 1),
            "train_images_per_second": history.get("train_images_per_second"),
            "steps": history.get("steps"),
            # the label-free measure (imgsim.learning.fit.twin_retrieval) of the weights kept
            **{k: history.get(f"best_{k}") for k in ("twin_recall@1", "twin_recall@10", "twin_mrr")},
            **summary,
            # what `imgsim duplicates` and the Duplicates page start from (measured: imgsim.duplicates)
            "duplicate_threshold": DEFAULT_THRESHOLD,
        }
        engine_name = choose_engine(settings.engine, len(records))
        entries, engine_state = store.save_collection(settings.model_dir, engine_name, records, vectors)
        parent = current_or_none(settings.model_dir) if self.preview_id else self.parent
        manifest = Manifest(kind="preview" if preview else "train", settings=settings.training_dict(),
                            images_root=str(Path(settings.images).resolve()), parent=parent.id if parent else None,
                            fingerprint=fingerprint(files), metrics=metrics, libraries=library_versions(),
                            skipped_files=skipped_records(files, failed),
                            keypoints=rerank.manifest_part(settings.model_dir, [], records.ids, found or []))
        version = store.write_version(settings.model_dir, manifest=manifest, records=entries, engine=engine_state,
                                      centres=centres, history=history, make_current=False,
                                      save_model=lambda path: autoencoder.save(path))
        carry_names(settings.model_dir, parent, version, records)
        if not preview:  # a preview is soon replaced: its labelling graph is the latents', made on first use
            keep_checked_graph(settings.model_dir, version, progress, at + share, workers=settings.workers)
        store.set_current(settings.model_dir, version)
        if preview:
            self.preview_id = version
        return RunReport(version, len(vectors), skipped, seconds=time.monotonic() - self.start, metrics=metrics)


class Preview(keras.callbacks.Callback):
    """Publishes the weights so far once, at the first epoch's end past PREVIEW_AFTER_S of fitting,
    when at least two epochs remain (a fit about to end publishes soon enough by itself)."""

    def __init__(self, run: Publisher, progress: Progress):
        super().__init__()
        self.run, self.progress = run, progress
        self.fit_start = time.monotonic()
        self.history: dict[str, list[float]] = {}

    def on_train_begin(self, logs=None):
        self.fit_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        epochs = self.params.get("epochs", 0)
        if self.run.preview_id or time.monotonic() - self.fit_start < PREVIEW_AFTER_S or epoch + 2 >= epochs:
            return
        # the weights published are this epoch's: their measure is this epoch's
        history = {**self.history, **{f"best_{k}": v[-1] for k, v in self.history.items() if k.startswith("twin_")},
                   "train_images_per_second": None}
        fraction = 0.85 * (epoch + 1) / max(epochs, 1)
        report = self.run.publish(self.model.autoencoder, history,
                                  lambda f, message: self.progress(fraction, annotate(message, before="first model: ")),
                                  fraction, 0.0, preview=True)
        self.progress(fraction, f"a first model (version {report.version}) is ready to search; training goes on")
