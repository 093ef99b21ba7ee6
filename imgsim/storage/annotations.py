"""A person's label for each image, kept beside the collection and keyed by the image's stable id.

Stored in `<model_dir>/annotations/` so that a label survives `index`, a retraining and an
engine move (an image's id is a hash of its path and bytes, imgsim.storage.records.image_id):

    labels.json   the current labels, replaced whole (temporary file, fsync, rename):
                  {"format": 1, "labels": {"<id>": {"label", "via", "at", "path"}}}
    log.jsonl     one line per change, appended and fsynced before labels.json changes, with
                  each image's value before it: what `undo` restores
    .lock         held by the one writer at a time (the dashboard and the CLI wait for each other)

A kill at any moment leaves the last complete labels.json. A log line whose change never reached
labels.json is harmless: undoing it restores what labels.json already holds. Labels given by
propagation are not stored here: they are recomputed from these (imgsim.labelling).

    graphs/<version id>-k<K>.npz   each version's kNN graph, derived from its vectors and kept
                  so that it is computed once (imgsim.labelling.graph); checked before use,
                  rebuilt when it does not fit, removed with its version (store.prune)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from imgsim.core.errors import BusyError, ImgsimError
from imgsim.core.files import read_plain, write_atomic
from imgsim.storage.folder import ModelFolder

FORMAT = 1
MAX_LABEL_CHARS = 100
LOCK_WAIT_S = 30.0  # a 100,000-image change takes well under this; a stuck writer is reported, not waited on
VIAS = ("set", "import", "accept", "group", "undo")
MAX_FILE_BYTES = 2**30  # labels.json or log.jsonl: about 150 bytes a label; a million labels is 150 MB
IMAGE_KEY = re.compile(r"[0-9]{1,19}")  # an image id as a JSON key: ASCII digits only ("²".isdigit() is true)
# Hand-edited files are read as data: what fails to parse (bad JSON, nesting deep enough to exhaust
# the parser's recursion) is one ImgsimError for labels.json, a skipped line in log.jsonl.
PARSE_ERRORS = (ValueError, RecursionError)


def image_key(key) -> int | None:
    """The image id a JSON key holds, or None when it holds none."""
    return int(key) if isinstance(key, str) and IMAGE_KEY.fullmatch(key) else None


@dataclass(frozen=True)
class ImageLabel:
    """A person's label for one image: `via` says how they gave it (typed, imported, accepted, a group's name)."""

    label: str
    via: str = "set"
    at: str = ""
    path: str = ""  # where the image was when labelled: for a person reading the file, never for lookups


def clean_label(name) -> str:
    """A label as stored: whitespace collapsed; empty, over-long and control-character names refused."""
    text = " ".join(str(name).split())
    if not text:
        raise ImgsimError("a label cannot be empty")
    if len(text) > MAX_LABEL_CHARS:
        raise ImgsimError(f"label {text[:40]}…: longer than {MAX_LABEL_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in text):
        raise ImgsimError(f"label '{text}': holds control or unprintable characters")
    return text


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def graph_path(model_dir, version_id: str, k: int) -> Path:
    """Where a version's kNN graph of k neighbours is kept (imgsim.storage.folder names it)."""
    return ModelFolder(model_dir).graph(version_id, k)


def graph_files(model_dir, version_id: str) -> list[Path]:
    """The kept kNN graphs of one version, whatever their k."""
    return ModelFolder(model_dir).graphs_of(version_id)


class LabelStore:
    """The person-given labels of one model folder's collection.

    Reading needs no lock (labels.json is replaced atomically); every change takes the lock,
    reads the current labels, logs what it replaces, and writes the new labels whole.
    """

    def __init__(self, model_dir):
        self.layout = ModelFolder(model_dir)
        self.folder = self.layout.annotations

    @property
    def labels_path(self) -> Path:
        return self.layout.labels

    @property
    def log_path(self) -> Path:
        return self.layout.label_log

    def _read(self) -> dict:
        try:
            raw = json.loads(read_plain(self.labels_path, MAX_FILE_BYTES).decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, *PARSE_ERRORS) as exc:
            raise ImgsimError(f"{self.labels_path}: unreadable ({type(exc).__name__}); "
                              "restore it from a backup or remove it to start labelling afresh") from None
        return raw if isinstance(raw, dict) else {}

    def undoable(self) -> dict | None:
        """A summary of the change `undo` would revert ({"op", "action", "label", "count", "at"}), or None.

        Each field has its type (a hand-edited one that does not is left out: None), so a page can show it as it is.
        """
        last = self._read().get("undoable")
        if not isinstance(last, dict) or type(last.get("count")) is not int or last["count"] < 0:
            return None
        return {"count": last["count"], **{k: last.get(k) if isinstance(last.get(k), str) else None
                                           for k in ("op", "action", "label", "at")}}

    def load(self) -> dict[int, ImageLabel]:
        """Image id -> the person's label; {} before the first label."""
        raw = self._read()
        labels = {}
        entries = raw.get("labels")
        for key, value in (entries if isinstance(entries, dict) else {}).items():
            if image_key(key) is None or not isinstance(value, dict):
                continue
            try:
                label = clean_label(value.get("label", ""))
            except ImgsimError:  # edited by hand into something no person could have typed: not a label
                continue
            via = value.get("via") if value.get("via") in VIAS else "set"
            labels[image_key(key)] = ImageLabel(label, via, str(value.get("at", "")), str(value.get("path", "")))
        return labels

    @contextlib.contextmanager
    def _locked(self):
        """Hold the labels' lock: waits for another writer, up to LOCK_WAIT_S."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.layout.labels_lock)
        try:
            lock.acquire(timeout=LOCK_WAIT_S)
        except Timeout:
            raise BusyError(f"{self.folder}: another labelling change has held the lock for {LOCK_WAIT_S:.0f} s") from None
        try:
            yield
        finally:
            lock.release()

    def change(self, changes: dict[int, str | None], via: str = "set", paths: dict[int, str] | None = None,
               unlabelled_only: bool = False) -> int:
        """Set (a label) or clear (None) each image's label in one step; returns how many images changed.

        Labels are cleaned first, so a bad one changes nothing. Images whose label is already the
        one asked for are left as they are (and not logged). `unlabelled_only` leaves every image
        that has a label when the lock is taken as it is: accepting propagated labels never
        overwrites one a person gave meanwhile, from another session or the command line.
        """
        if via not in VIAS:
            raise ValueError(f"via must be one of {VIAS}, got {via!r}")
        wanted = {int(i): (None if name is None else clean_label(name)) for i, name in changes.items()}
        paths = paths or {}
        with self._locked():
            labels = self.load()
            stamp = now()
            before, after = {}, dict(labels)
            for image, name in wanted.items():
                old = labels.get(image)
                if (old.label if old else None) == name or (unlabelled_only and old is not None):
                    continue
                before[image] = old
                if name is None:
                    after.pop(image, None)
                else:
                    after[image] = ImageLabel(name, via, stamp, paths.get(image, old.path if old else ""))
            if before:
                names = sorted({name for name in wanted.values() if name is not None})
                entry = self._log({"action": via if names else "clear", "label": names[0] if len(names) == 1 else None,
                                   "at": stamp, "count": len(before),
                                   "before": {str(i): _entry(old) for i, old in before.items()}})
                self._write(after, entry)
            return len(before)

    def set(self, ids, label: str, paths: dict[int, str] | None = None, via: str = "set") -> int:
        """Give these images a person's label, replacing any earlier one."""
        label = clean_label(label)
        return self.change({int(i): label for i in ids}, via, paths)

    def clear(self, ids) -> int:
        """Remove the person's label of these images (their label becomes a propagated one again)."""
        return self.change({int(i): None for i in ids}, "set")

    def history(self) -> list[dict]:
        """The logged changes, oldest first; a torn last line (a kill mid-append) is skipped."""
        try:
            lines = read_plain(self.log_path, MAX_FILE_BYTES).decode("utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ImgsimError(f"{self.log_path}: unreadable ({getattr(exc, 'strerror', None) or exc}); "
                              "restore it from a backup or remove it (undo then has nothing to undo)") from None
        out = []
        for line in lines:
            try:
                entry = json.loads(line)
            except PARSE_ERRORS:
                continue
            if (isinstance(entry, dict) and isinstance(entry.get("before"), dict) and isinstance(entry.get("op"), str)
                    and isinstance(entry.get("undoes"), (str, type(None)))):
                out.append(entry)
        return out

    def undoable_changes(self) -> list[dict]:
        """The logged changes not undone yet, newest first: what `undo` reverts, one call each."""
        undone, out = set(), []
        for entry in reversed(self.history()):
            if entry.get("action") == "undo":
                undone.add(entry.get("undoes"))
            elif entry.get("op") not in undone:
                out.append(entry)
        return out

    def undo(self) -> dict | None:
        """Revert the most recent change not yet undone (restoring each image's earlier label); returns it, or None."""
        with self._locked():
            changes = self.undoable_changes()
            if not changes:
                return None
            entry = changes[0]
            labels = self.load()
            after = dict(labels)
            for key, old in entry["before"].items():
                image = image_key(key)
                if image is None:
                    continue
                restored = _from_entry(old)
                if restored is None:
                    after.pop(image, None)
                else:
                    after[image] = restored
            before = {key: _entry(labels.get(image_key(key))) for key in entry["before"] if image_key(key) is not None}
            self._log({"action": "undo", "undoes": entry.get("op"), "at": now(), "count": len(before), "before": before})
            self._write(after, changes[1] if len(changes) > 1 else None)
            return entry

    def _log(self, entry: dict) -> dict:
        """Append one change to the log and fsync it (call with the lock held); returns it with its op id.

        JSON here is ASCII (`\\uXXXX` escapes): a file name that is not UTF-8 is held as lone
        surrogates, which a UTF-8 file cannot store but an escape keeps exactly.
        """
        entry = {"op": secrets.token_hex(8), **entry}  # unique even when a killed run logged without writing
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write("\n" + json.dumps(entry) + "\n")  # a torn earlier line stays its own line
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def _write(self, labels: dict[int, ImageLabel], undoable: dict | None) -> None:
        summary = {k: undoable.get(k) for k in ("op", "action", "label", "count", "at")} if undoable else None
        body = {"format": FORMAT, "undoable": summary,
                "labels": {str(i): _entry(label) for i, label in sorted(labels.items())}}
        write_atomic(self.labels_path, json.dumps(body, separators=(",", ":")))


def _entry(label: ImageLabel | None) -> dict | None:
    if label is None:
        return None
    return {"label": label.label, "via": label.via, "at": label.at, "path": label.path}


def _from_entry(entry) -> ImageLabel | None:
    if not isinstance(entry, dict):
        return None
    try:
        return ImageLabel(clean_label(entry.get("label", "")), entry.get("via") if entry.get("via") in VIAS else "set",
                          str(entry.get("at", "")), str(entry.get("path", "")))
    except ImgsimError:
        return None
