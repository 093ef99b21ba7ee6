"""Background training: a real detached process, its status file, one run at a time."""

import subprocess
import sys
import time

import pytest

from imgsim import BusyError, Settings, jobs, store
from tests.conftest import TINY


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
    assert status["state"] == "finished", (status, jobs.log_path(model_copy).read_text()[-2000:])
    assert status["pid"] == pid and status["fraction"] == 1.0
    assert status["version"] == store.current_id(model_copy) != before
    assert status["settings"]["image_size"] == TINY["image_size"]
    assert status["curve"] and status["epochs"] == TINY["epochs"]
    assert len(store.list_versions(model_copy)) == 2


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


def test_a_run_can_be_stopped_and_a_bad_collection_fails_in_plain_words(tmp_path, tiny_collection):
    settings = Settings(model_dir=tmp_path / "models", images=tmp_path / "missing", **TINY)
    jobs.start_training(settings)
    status = wait_until_done(settings.model_dir)
    assert status["state"] == "failed" and "no such folder" in status["error"]

    jobs.start_training(settings.replace(images=tiny_collection))
    deadline = time.monotonic() + 30
    while not jobs.pid_alive((jobs.read_status(settings.model_dir) or {}).get("pid")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs.stop_training(settings.model_dir)
    assert wait_until_done(settings.model_dir, timeout=60)["state"] == "failed"
    assert store.current_id(settings.model_dir) is None
