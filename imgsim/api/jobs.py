"""Background runs for the public API: start training or indexing, and the run's status without server paths."""

from __future__ import annotations

from imgsim.core.config import TRAINING_FIELDS
from imgsim.core.errors import ImgsimError
from imgsim.core.text import relative_paths
from imgsim.runs import jobs
from imgsim.storage import store

# What a caller sees of the status file: no pid, no settings, no folder of the server.
SHOWN = ("state", "kind", "fraction", "message", "started", "finished", "version", "error", "stopped", "epoch",
         "epochs", "loss")


def job_status(collection) -> dict | None:
    """The last background run's status (imgsim.runs.jobs.training_status), its texts without the server's folders."""
    status = jobs.training_status(collection.model_dir)
    if status is None:
        return None
    folders = [status.get("images"), collection.settings.images, collection.model_dir]
    shown = {key: status[key] for key in SHOWN if key in status}
    for key in ("message", "error"):
        if isinstance(shown.get(key), str):
            shown[key] = relative_paths(shown[key], folders)
    shown.setdefault("kind", "train")
    return shown


def images_folder(collection):
    """The folder a run reads: the active version's, else the one the server was given (IMGSIM_IMAGES)."""
    try:
        return store.images_root(collection.model_dir)
    except ImgsimError:
        return collection.settings.images


def start(collection, kind: str, knobs: dict) -> int:
    """Start a background `kind` run ("train" or "index"); training knobs only (Settings' training fields)."""
    unknown = sorted(set(knobs) - set(TRAINING_FIELDS))
    if unknown:
        raise ValueError(f"unknown training setting(s): {', '.join(unknown)}; "
                         f"choose among {', '.join(TRAINING_FIELDS)}")
    if kind == "index" and store.current_id(collection.model_dir) is None:
        raise ImgsimError("there is no version to index yet: train one first")
    try:
        settings = collection.settings.replace(images=images_folder(collection), **knobs)
    except TypeError as exc:  # a knob of the wrong type (a text for a number)
        raise ValueError(f"a training setting has the wrong type ({exc})") from None
    return jobs.start_training(settings, kind=kind)
