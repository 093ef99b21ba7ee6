"""Training in the background: a detached `python -m imgsim.runs.jobs` process and the status file it writes.

The dashboard starts the process and polls `training_status`; the process alone writes
`<model_dir>/training.json` (atomically) from its progress callback, and its output goes to
`<model_dir>/training.log`. The process reads its settings from `<model_dir>/training-settings.json`
(Settings.to_json), written by `start_training`. Progress numbers (epoch, loss, each epoch's
measures) come as data (imgsim.core.progress.Event) and are kept in the status as data: `curve` (the
training loss as the run goes) and `measures` (one entry per finished epoch). A separate process keeps a crash or a kill away from the server and
lets searches go on with the current version until `train` makes the new one current.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from filelock import FileLock

from imgsim.core.config import Settings
from imgsim.core.errors import BusyError, ImgsimError
from imgsim.core.files import read_plain, write_atomic
from imgsim.core.ids import is_version_id
from imgsim.core.progress import data_of
from imgsim.core.text import one_line
from imgsim.storage import store
from imgsim.storage.folder import ModelFolder

START_GRACE_S = 60  # a run that has not reported its pid by then never started
STOP_GRACE_S = 5  # after SIGTERM, seconds to unwind before the process exits regardless
START_SLACK_S = 1.5  # two readings of one process's start time may differ by a second: same_start
KINDS = ("train", "index")  # what a background run does: train a new version, or index the folder's changes
DEMO_SHARE = 0.15  # of the progress bar, when the demo collection is built first
CURVE_POINTS = 400  # of the training loss kept in the status
MEASURE_EPOCHS, MEASURE_KEYS = 500, 30  # entries of `measures` kept, and values in one


def status_path(model_dir) -> Path:
    return ModelFolder(model_dir).training_status


def log_path(model_dir) -> Path:
    return ModelFolder(model_dir).training_log


def write_status(model_dir, status: dict) -> None:
    """Replace the status file whole, so a reader never sees half of it."""
    write_atomic(status_path(model_dir), json.dumps(status, indent=1))


def read_status(model_dir) -> dict | None:
    """The status file as `valid_status` reads it: None when there is none, or it is not a run's status."""
    try:
        return valid_status(json.loads(read_plain(status_path(model_dir), 2**20).decode("utf-8")))
    except (OSError, ValueError, RecursionError):  # no link, FIFO or device followed; over 1 MB is no status
        return None


STATES = ("running", "finished", "failed")
TEXT_LIMIT = 2000  # characters of a message or an error kept


def valid_status(raw) -> dict | None:
    """The fields of a status that the pages and the CLI read, each of the type they expect; anything else is dropped.

    The file sits in the model folder, where anyone who can write there (or edit it by hand) can
    put anything: a string where a number belongs crashed every page. A field of the wrong type is
    left out (read as its default); an unknown state makes the whole file no status.
    """
    if not isinstance(raw, dict) or raw.get("state") not in STATES:
        return None
    fraction = raw.get("fraction")
    status = {"state": raw["state"], "fraction": min(1.0, max(0.0, float(fraction))) if _number(fraction) else 0.0}
    for key in ("started", "finished", "loss"):
        if _number(raw.get(key)):
            status[key] = float(raw[key])
    for key in ("epoch", "epochs"):
        if _number(raw.get(key)) and raw[key] == int(raw[key]) and raw[key] >= 0:
            status[key] = int(raw[key])
    pid = raw.get("pid")
    status["pid"] = pid if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31 else None
    if isinstance(raw.get("pid_start"), str):
        status["pid_start"] = raw["pid_start"][:100]
    for key in ("message", "error", "version", "images"):
        if isinstance(raw.get(key), str):
            status[key] = raw[key][:TEXT_LIMIT]
    status.setdefault("message", "")
    status["kind"] = raw.get("kind") if raw.get("kind") in KINDS else "train"  # files before 0.4.0 trained
    for key in ("stopped", "demo"):
        status[key] = raw.get(key) is True
    for key in ("settings", "metrics"):
        if isinstance(raw.get(key), dict):
            status[key] = raw[key]
    if isinstance(raw.get("curve"), list):
        status["curve"] = [[float(p[0]), float(p[1])] for p in raw["curve"][-CURVE_POINTS:]
                           if isinstance(p, list) and len(p) == 2 and _number(p[0]) and _number(p[1])]
    if isinstance(raw.get("measures"), list):
        status["measures"] = [{str(k)[:40]: float(v) for k, v in list(entry.items())[:MEASURE_KEYS] if _number(v)}
                              for entry in raw["measures"][-MEASURE_EPOCHS:]
                              if isinstance(entry, dict) and _number(entry.get("epoch"))]
    return status


def _number(value) -> bool:
    """A JSON number of a sane size (not NaN, not infinite, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -1e15 < value < 1e15


def process_start(pid) -> str | None:
    """When process `pid` started, as the system records it; None when there is no such process (or a zombie).

    With a pid, this tells one process from a later one that was given the same number (psutil).
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else f"start:{process.create_time()!r}"
    except psutil.Error:
        return None


def same_start(recorded, now) -> bool:
    """Whether two `process_start` readings are one process's, to START_SLACK_S.

    psutil gives a start as the ticks since boot plus the boot time, and Linux recomputes the boot time at
    each read as the clock now minus the time since boot (whole seconds): a clock stepped by the host moves
    it a second, and a live run is read as killed (the likeliest cause of one a fresh clone's suite saw,
    2026-12-07). A later process given the same pid, an imgsim.runs.jobs leading its own group, within a
    second and a half is not a real risk.
    """
    try:
        return abs(float(recorded.removeprefix("start:")) - float(now.removeprefix("start:"))) <= START_SLACK_S
    except (AttributeError, TypeError, ValueError):
        return False


def own_process(status) -> bool:
    """Whether the status's pid is its run's own process: alive, an imgsim.runs.jobs process, leading its own
    process group (what `stop_training` signals), and started when the status says it was."""
    pid = (status or {}).get("pid")
    if not pid_alive(pid) or not same_start(status.get("pid_start"), process_start(pid)):
        return False
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def pid_alive(pid) -> bool:
    """Whether `pid` is a live training process (a zombie, a reused pid or any other program is not)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and "imgsim.runs.jobs" in process.cmdline()
    except psutil.AccessDenied:
        return True  # someone else's live process: own_process's start time still has to match
    except psutil.Error:
        return False


def training_status(model_dir) -> dict | None:
    """The last run's status (state: running, finished or failed), or None when there was none.

    A "running" status whose process is gone is reported as failed: it was killed. So is one whose
    pid is some other process (a later one given the same number, or any pid written by hand).
    """
    status = read_status(model_dir)
    if status is None or status.get("state") != "running":
        return status
    if status["pid"] is None and time.time() - status.get("started", 0) < START_GRACE_S:
        return status  # launched, not yet reporting
    if not own_process(status):
        return {**status, "state": "failed",
                "error": "the training process ended without finishing (it was stopped or killed)"}
    return status


def is_running(model_dir) -> bool:
    status = training_status(model_dir)
    return bool(status and status.get("state") == "running")


def settings_path(model_dir) -> Path:
    return ModelFolder(model_dir).training_settings


def start_training(settings: Settings, build_demo_first: bool = False, kind: str = "train") -> int:
    """Launch a training run (or, with kind "index", an indexing run) in a detached process and return its pid;
    BusyError if one is running."""
    if kind not in KINDS:
        raise ValueError(f"a background run is one of {KINDS}, got {kind!r}")
    # Absolute: the child works in the model folder, where a relative path would mean something else.
    settings = settings.replace(model_dir=Path(settings.model_dir).absolute(), images=Path(settings.images).absolute())
    model_dir = settings.model_dir
    model_dir.mkdir(parents=True, exist_ok=True)
    # Two sessions pressing the button at once: the second waits here, then sees the first's status.
    with FileLock(ModelFolder(model_dir).launch_lock, timeout=10):
        if is_running(model_dir) or store.is_busy(model_dir):
            raise BusyError("a training or indexing run is already in progress")
        write_atomic(settings_path(model_dir), settings.to_json())
        write_status(model_dir, {"state": "running", "fraction": 0.0, "message": "starting", "pid": None,
                                 "started": time.time(), "settings": settings.training_dict(),
                                 "images": str(settings.images), "demo": build_demo_first, "kind": kind})
        # The child works in the model folder: never in the folder the package lives in, which may be
        # read-only site-packages.
        env = child_env()
        try:
            with open(log_path(model_dir), "wb") as log:  # the last run's output only
                proc = subprocess.Popen(
                    # --flag=value: a folder whose name starts with a dash is still a value, never an option
                    [sys.executable, "-m", "imgsim.runs.jobs", f"--model-dir={model_dir}", *(["--demo"] if build_demo_first else []),
                     *(["--index"] if kind == "index" else [])],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    cwd=model_dir, start_new_session=True)
        except OSError as exc:
            write_status(model_dir, {"state": "failed", "error": f"could not start training: {exc}", "started": time.time()})
            raise ImgsimError(f"could not start training: {exc}") from None
        status = read_status(model_dir) or {}
        if status.get("pid") is None and status.get("state") == "running":
            # Known at once, so the run can be stopped before it reports; the child writes the same pid.
            write_status(model_dir, {**status, "pid": proc.pid, "pid_start": process_start(proc.pid)})
    # Reap the child when it ends, so that its pid does not linger as a zombie of the server.
    threading.Thread(target=proc.wait, daemon=True, name=f"imgsim-training-{proc.pid}").start()
    return proc.pid


def start_scan(model_dir, version_id: str) -> int:
    """Scan a version for copies in a detached process (`python -m imgsim.runs.jobs --scan ID`); returns its pid.

    For a person allowed to write: the result is kept in the model folder (imgsim.duplicates.results),
    where every page view reads it. BusyError if a scan of that version is running."""
    from imgsim.duplicates import results

    model_dir = Path(model_dir).absolute()
    if not is_version_id(version_id):
        raise ImgsimError(f"'{version_id}' is not a version id")
    if results.scanning(model_dir, version_id):
        raise BusyError(f"a scan for copies of version {version_id} is already running")
    log = results.log_path(model_dir, version_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "imgsim.runs.jobs", f"--model-dir={model_dir}",
                                     f"--scan={version_id}"], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=child_env(), cwd=model_dir, start_new_session=True)
    except OSError as exc:
        raise ImgsimError(f"could not start the scan: {exc}") from None
    threading.Thread(target=proc.wait, daemon=True, name=f"imgsim-scan-{proc.pid}").start()
    return proc.pid


def child_env() -> dict:
    """The environment of a background process: it imports this very imgsim (a checkout or an installed package)."""
    package_parent = str(Path(__file__).resolve().parents[2])  # imgsim/runs/jobs.py -> the folder holding imgsim
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}


def scan_version(model_dir, version_id: str, progress=None) -> str:
    """Scan one version for copies and keep the result; returns the scan's summary."""
    from imgsim.duplicates import scan_and_save

    return scan_and_save(store.load_version(model_dir, version_id), progress).stats.summary()


def stop_training(model_dir) -> bool:
    """Ask the running training process to stop (SIGTERM); whether there was one."""
    status = training_status(model_dir)
    if not status or status.get("state") != "running" or not own_process(status):
        return False  # never a signal to a process the status file merely names
    try:
        os.killpg(status["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


class StatusWriter:
    """The child's side: progress calls become status file updates, at most a few a second."""

    def __init__(self, model_dir, base: dict, interval: float = 0.5):
        self.model_dir, self.interval = model_dir, interval
        self.status = {**base, "state": "running", "pid": os.getpid(), "pid_start": process_start(os.getpid()),
                       "fraction": 0.0, "message": "starting", "curve": [], "measures": []}
        self.last = 0.0
        write_status(model_dir, self.status)

    def progress(self, fraction: float, message: str) -> None:
        """A progress call; an Event's numbers (imgsim.core.progress) are kept as data, a finished epoch's at once."""
        data = data_of(message)
        self.status.update(fraction=round(float(fraction), 4), message=str(message))
        self.status.update({k: data[k] for k in ("epoch", "epochs") if isinstance(data.get(k), int)})
        loss = data.get("loss")
        finite = isinstance(loss, float) and math.isfinite(loss)
        if finite:
            self.status["loss"] = loss
        if isinstance(data.get("measures"), dict):
            entry = {"epoch": data.get("epoch"), **{k: v for k, v in data["measures"].items() if math.isfinite(v)}}
            self.status["measures"] = (self.status["measures"] + [entry])[-MEASURE_EPOCHS:]
        now = time.monotonic()
        if now - self.last >= self.interval or fraction >= 1.0 or "measures" in data:
            if finite:
                self.status["curve"] = (self.status["curve"] + [[round(float(fraction), 4), loss]])[-CURVE_POINTS:]
            self.last = now
            write_status(self.model_dir, self.status)

    def finish(self, state: str, **fields) -> None:
        self.status.update(state=state, finished=time.time(), **fields)
        write_status(self.model_dir, self.status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imgsim.runs.jobs", description="One background training run.")
    parser.add_argument("--model-dir", type=Path, required=True,
                        help="the model folder; the run's settings are its training-settings.json (Settings.to_json)")
    parser.add_argument("--demo", action="store_true", help="build the demo collection in the images folder first")
    parser.add_argument("--index", action="store_true", help="index the images folder's changes instead of training")
    parser.add_argument("--scan", metavar="VERSION", help="only scan this version for copies (no training)")
    return parser


def read_settings(model_dir) -> Settings:
    """The settings `start_training` wrote for this run; the model folder is the one the process was given."""
    path = settings_path(model_dir)
    try:
        text = read_plain(path, 2**20).decode("utf-8")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ImgsimError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return Settings.from_json(text).replace(model_dir=Path(model_dir))
    except (TypeError, ValueError) as exc:
        raise ImgsimError(f"{path}: {exc}") from None


def stop_on_sigterm(writer: StatusWriter):
    """SIGTERM: record the stop, unwind (locks released, staging removed), and exit hard if unwinding stalls.

    Unwinding can wait on worker threads (the demo build's pool finishes its queue first), so a
    timer ends the process after STOP_GRACE_S whatever it is doing; the next run clears its leftovers.
    """

    def handler(signum, frame):
        writer.finish("failed", error="training was stopped", stopped=True)
        timer = threading.Timer(STOP_GRACE_S, os._exit, args=(143,))
        timer.daemon = True
        timer.start()
        raise SystemExit(143)

    return handler


def scan_main(model_dir, version_id: str) -> int:
    """`--scan`: one version's scan for copies, its progress on the output."""
    try:
        print(one_line(scan_version(model_dir, version_id, lambda f, m: print(f"{f:.0%} {one_line(m)}", flush=True))))
        return 0
    except (ImgsimError, OSError, ValueError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


def scan_after_training(model_dir, version_id: str | None) -> None:
    """The background job's last step, after training or indexing: the new version's copies, found once here so no page
    view scans."""
    if not version_id:
        return
    try:
        print(f"scanning version {version_id} for copies: {one_line(scan_version(model_dir, version_id))}", flush=True)
    except (ImgsimError, OSError, ValueError) as exc:  # the version is made; its copies can be scanned later
        print(f"the scan for copies did not finish: {one_line(exc)}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.scan is not None:
        return scan_main(args.model_dir, args.scan)
    previous = read_status(args.model_dir) or {}
    writer = StatusWriter(args.model_dir, {"started": previous.get("started", time.time()),
                                           "images": previous.get("images", ""), "demo": args.demo,
                                           "kind": "index" if args.index else "train"})
    signal.signal(signal.SIGTERM, stop_on_sigterm(writer))
    try:
        settings = read_settings(args.model_dir)
        writer.status.update(settings=settings.training_dict(), images=str(settings.images))
        share = 0.0
        if args.demo:
            from imgsim.inputs.demo import build_demo

            share = DEMO_SHARE
            build_demo(settings.images, progress=lambda f, m: writer.progress(share * f, f"building the demo collection: {m}"))
        from imgsim.inputs.collection import collection_folder

        collection_folder(settings.images)  # a folder that is not there: said before Keras loads (9-10 CPU s)
        from imgsim.runs.indexing import index
        from imgsim.runs.training import train

        run = index if args.index else train
        report = run(settings, lambda f, m: writer.progress(share + (1 - share) * f, m))
        writer.finish("finished", fraction=1.0, version=report.version, message=report.summary(), metrics=report.metrics)
        scan_after_training(args.model_dir, report.version)
        return 0
    except (ImgsimError, ValueError) as exc:
        writer.finish("failed", error=str(exc))
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        writer.finish("failed", error="training was stopped", stopped=True)
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        writer.finish("failed", error=f"unexpected {type(exc).__name__}: {exc} (details in {log_path(args.model_dir)})")
        raise


if __name__ == "__main__":
    sys.exit(main())
