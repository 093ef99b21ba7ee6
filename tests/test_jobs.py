"""Background training: a real detached process, its status file, one run at a time."""

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from imgsim import BusyError, Settings
from imgsim.cli import main
from imgsim.core.progress import Event, annotate
from imgsim.duplicates import load_scan
from imgsim.runs import jobs
from imgsim.storage import store
from tests.helpers import TINY


def wait_until_done(model_dir, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = jobs.training_status(model_dir)
        if status and status["state"] != "running":
            return status
        time.sleep(0.5)
    jobs.stop_training(model_dir)
    pytest.fail(f"training did not finish in {timeout} s: {jobs.training_status(model_dir)}")


def test_a_background_run_reports_progress_and_makes_its_version_current(model_copy, tiny_collection):
    settings = Settings(model_dir=model_copy, images=tiny_collection, **TINY)
    before = store.current_id(model_copy)

    pid = jobs.start_training(settings)
    assert jobs.training_status(model_copy)["state"] == "running"
    with pytest.raises(BusyError, match="already in progress"):
        jobs.start_training(settings)  # a second trigger is told, and launches nothing
    assert store.current_id(model_copy) == before  # searches keep the current version meanwhile

    status = wait_until_done(model_copy)
    assert status["state"] == "finished", (status.get("error"), status, jobs.log_path(model_copy).read_text()[-2000:])
    assert status["pid"] == pid and status["fraction"] == 1.0
    assert status["version"] == store.current_id(model_copy) != before
    assert status["settings"]["image_size"] == TINY["image_size"]
    assert status["curve"] and status["epochs"] == TINY["epochs"]
    assert [m["epoch"] for m in status["measures"]] == list(range(1, TINY["epochs"] + 1))  # each epoch's, as data
    assert status["measures"][-1]["loss"] == pytest.approx(status["loss"], rel=0.5)
    assert len(store.list_versions(model_copy)) == 2
    assert Settings.from_json(jobs.settings_path(model_copy).read_text()) == settings  # what the process was given
    # then the same process scans the new version for copies, so that no page view has to
    with contextlib.suppress(psutil.NoSuchProcess):  # the server's reaper thread may have collected it already
        psutil.Process(pid).wait(timeout=600)
    scan = load_scan(store.load_version(model_copy))
    assert scan is not None and scan.stats.images == len(store.load_version(model_copy).records)


def test_a_background_index_run_adds_the_new_files_as_a_version(model_copy, tiny_collection, tmp_path):
    import shutil

    images = Path(shutil.copytree(tiny_collection, tmp_path / "photos"))
    shutil.copy(next(images.rglob("*.jpg")), images / "added.jpg")
    before = store.load_version(model_copy)
    jobs.start_training(Settings(model_dir=model_copy, images=images, **TINY), kind="index")
    assert jobs.training_status(model_copy)["kind"] == "index"
    status = wait_until_done(model_copy)
    assert status["state"] == "finished" and status["kind"] == "index", jobs.log_path(model_copy).read_text()[-2000:]
    after = store.load_version(model_copy)
    assert status["version"] == after.id != before.id and len(after) == len(before) + 1
    assert after.manifest["kind"] == "index" and str(images / "added.jpg") in after.paths


def test_progress_numbers_are_kept_from_events_and_text_is_only_text(tmp_path):
    writer = jobs.StatusWriter(tmp_path, {"started": 1.0}, interval=0.0)
    writer.progress(0.2, "epoch 9/9 · loss 0.5 · 3 s left")  # text that looks like numbers is not read as them
    assert "loss" not in jobs.read_status(tmp_path) and jobs.read_status(tmp_path)["curve"] == []
    writer.progress(0.3, Event("epoch 1/2 · loss 0.4000", epoch=1, epochs=2, loss=0.4))
    writer.progress(0.5, Event("epoch 1/2 done", epoch=1, epochs=2, loss=0.35,
                               measures={"loss": 0.35, "twin_mrr": 0.6, "val_loss": float("nan")}))
    writer.progress(0.6, annotate(Event("epoch 2/2 · loss nan", epoch=2, epochs=2, loss=float("nan")), after=" · a first model"))
    status = jobs.read_status(tmp_path)
    assert status["message"] == "epoch 2/2 · loss nan · a first model" and status["epoch"] == 2
    assert status["curve"] == [[0.3, 0.4], [0.5, 0.35]] and status["loss"] == 0.35  # nan kept out
    assert status["measures"] == [{"epoch": 1.0, "loss": 0.35, "twin_mrr": 0.6}]


def test_the_process_reads_its_settings_as_json_and_a_bad_file_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs.signal, "signal", lambda *args: None)  # the handler is for the real child
    jobs.settings_path(tmp_path).write_text('{"epochs": 2, "colour": "blue"}')
    assert jobs.main([f"--model-dir={tmp_path}"]) == 2
    assert jobs.read_status(tmp_path)["error"] == f"{jobs.settings_path(tmp_path)}: unknown setting(s): 'colour'"
    jobs.settings_path(tmp_path).write_text("{")
    assert jobs.main([f"--model-dir={tmp_path}"]) == 2
    assert "training-settings.json: settings are not JSON" in jobs.read_status(tmp_path)["error"]


def test_a_run_that_was_killed_is_reported_as_failed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    jobs.write_status(tmp_path, {"state": "running", "pid": dead.pid, "started": time.time(), "fraction": 0.4})
    status = jobs.training_status(tmp_path)
    assert status["state"] == "failed" and "killed" in status["error"]
    assert not jobs.is_running(tmp_path) and not jobs.stop_training(tmp_path)

    jobs.write_status(tmp_path, {"state": "running", "pid": None, "started": time.time()})
    assert jobs.is_running(tmp_path)  # launched a moment ago, not yet reporting its pid
    jobs.write_status(tmp_path, {"state": "running", "pid": None, "started": time.time() - 3600})
    assert jobs.training_status(tmp_path)["state"] == "failed"


@pytest.mark.parametrize("kind", [[], ["--index"]])
def test_a_run_for_a_folder_that_is_not_there_fails_before_loading_keras(tmp_path, monkeypatch, kind):
    """The trainer and the indexer are not imported (9-10 CPU s of Keras in a fresh process) for a folder that a
    person mistyped: here they cannot be, so reaching them would fail otherwise than in plain words."""
    (tmp_path / "models").mkdir()
    missing = tmp_path / "mis\tsing"  # the error keeps the name as it is; whoever prints it escapes it, once
    jobs.write_atomic(jobs.settings_path(tmp_path / "models"), Settings(images=missing, **TINY).to_json())
    for module in ("imgsim.runs.training", "imgsim.runs.indexing"):
        monkeypatch.setitem(sys.modules, module, None)  # an import of either raises ImportError
    assert jobs.main([f"--model-dir={tmp_path / 'models'}", *kind]) == 2
    status = jobs.read_status(tmp_path / "models")
    assert status["state"] == "failed" and status["error"] == f"{missing}: no such folder"


def test_a_run_can_be_stopped_and_a_bad_collection_fails_in_plain_words(tmp_path, tiny_collection, monkeypatch):
    monkeypatch.chdir(tmp_path)  # folders given relative to here; the process works in the model folder
    settings = Settings(model_dir="models", images="missing", **TINY)
    jobs.start_training(settings)
    status = wait_until_done(settings.model_dir)
    assert status["state"] == "failed" and f"{tmp_path / 'missing'}: no such folder" in status["error"]

    settings = settings.replace(model_dir=tmp_path / "models")
    jobs.start_training(settings.replace(images=tiny_collection))
    deadline = time.monotonic() + 30
    while not jobs.pid_alive((jobs.read_status(settings.model_dir) or {}).get("pid")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs.stop_training(settings.model_dir)
    assert wait_until_done(settings.model_dir, timeout=60)["state"] == "failed"
    assert store.current_id(settings.model_dir) is None


@pytest.fixture
def decoy():
    """A live process that looks like a training run (its command line names imgsim.runs.jobs) and leads its own group."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "imgsim.runs.jobs"], start_new_session=True)
    deadline = time.monotonic() + 10
    while not jobs.pid_alive(proc.pid) and time.monotonic() < deadline:  # until its exec shows that command line
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("pid_start", [None, "ticks:1", "not a time", 7])
def test_stop_never_signals_a_process_the_status_merely_names(tmp_path, decoy, pid_start):
    """A pid in training.json (written by hand, or left by a run whose number was given to another process) is
    signalled only when that process started when the status says: SIGTERM goes to a whole process group."""
    jobs.write_status(tmp_path, {"state": "running", "pid": decoy.pid, "pid_start": pid_start, "started": time.time()})
    assert not jobs.stop_training(tmp_path)
    assert jobs.training_status(tmp_path)["state"] == "failed" and not jobs.is_running(tmp_path)
    time.sleep(0.2)
    assert decoy.poll() is None  # still running: nothing was sent


def test_the_run_s_own_process_is_recognised_and_stopped(tmp_path, decoy):
    jobs.write_status(tmp_path, {"state": "running", "pid": decoy.pid, "pid_start": jobs.process_start(decoy.pid),
                                 "started": time.time()})
    assert jobs.is_running(tmp_path)
    assert jobs.stop_training(tmp_path)
    assert decoy.wait(timeout=10) == -15  # SIGTERM


def test_a_start_read_after_the_clock_moved_a_second_is_still_the_run_s_own_process(tmp_path, decoy, monkeypatch):
    """Linux recomputes the boot time at each read (the clock now minus the time since boot), and psutil adds it to
    a process's start: a clock stepped by the host moves it a second between two readings, and a live run was read
    as killed (the likeliest cause of one a fresh clone's suite saw). Five seconds apart is another process."""
    import psutil._pslinux

    jobs.write_status(tmp_path, {"state": "running", "pid": decoy.pid, "pid_start": jobs.process_start(decoy.pid),
                                 "started": time.time()})
    boot_time = psutil._pslinux.boot_time
    for shift, own in ((1.0, True), (-1.0, True), (5.0, False)):
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda shift=shift: boot_time() + shift)
        assert jobs.is_running(tmp_path) is own, shift
    monkeypatch.undo()
    assert jobs.is_running(tmp_path)


@pytest.mark.parametrize("hostile", [
    {"state": "finished", "fraction": "lots", "started": "yesterday", "message": ["not", "text"], "curve": [["a", 1], 3]},
    {"state": "running", "fraction": None, "started": {"$date": 0}, "pid": True, "message": 5},
    {"state": "failed", "error": {"x": 1}, "stopped": "yes", "fraction": 1e400, "epoch": "3",
     "measures": [{"epoch": "1"}, {"epoch": 1, "loss": "low", "twin_mrr": 0.5}, 3, {"epoch": 2, "x": [1]}]},
    {"state": "exploded"}, [1, 2], "running", {"state": "running", "fraction": float("nan"), "started": 10**400},
])
def test_a_hand_written_status_file_is_read_as_data(tmp_path, hostile):
    jobs.status_path(tmp_path).write_text(json.dumps(hostile))
    status = jobs.training_status(tmp_path)
    if not isinstance(hostile, dict) or hostile.get("state") not in jobs.STATES:
        assert status is None
        return
    assert isinstance(status["fraction"], float) and 0 <= status["fraction"] <= 1
    assert isinstance(status["message"], str) and isinstance(status.get("error", ""), str)
    assert isinstance(status.get("started", 0.0), float) and status["stopped"] in (True, False)
    assert all(isinstance(x, float) for point in status.get("curve", []) for x in point)
    assert all(isinstance(v, float) for entry in status.get("measures", []) for v in entry.values())
    if "measures" in hostile:
        assert status["measures"] == [{"epoch": 1.0, "twin_mrr": 0.5}, {"epoch": 2.0}]
    assert main(["status", f"--model-dir={tmp_path}"]) in (0, 2)  # the CLI's line, not a traceback
