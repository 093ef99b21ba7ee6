"""Encoding spread over a real local Ray cluster (head + 2 workers on 127.0.0.1, tests/servers.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from servers import ROOT

from imgsim.storage import store


def imgsim_cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgsim", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}, timeout=timeout)


def add_images(folder: Path, source: Path, count: int, name: str = "new") -> list[Path]:
    """`count` new files in folder/name: copies of the source's images under new names (a new image each to index)."""
    originals = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    added = []
    (folder / name).mkdir(exist_ok=True)
    for n in range(count):
        target = folder / name / f"copy-{n:03d}{originals[n % len(originals)].suffix}"
        shutil.copyfile(originals[n % len(originals)], target)
        added.append(target)
    return added


def vectors_by_path(model_dir) -> dict[str, np.ndarray]:
    version = store.load_version(model_dir)
    return dict(zip(version.paths, version.vectors))


@pytest.fixture
def two_copies(tmp_path, trained_model_dir, tiny_collection):
    """Two identical model folders over one collection grown by 40 images, for a plain and a Ray index."""
    images = Path(shutil.copytree(tiny_collection, tmp_path / "photos"))
    add_images(images, tiny_collection, 40)
    copies = []
    for name in ("plain", "ray"):
        model_dir = Path(shutil.copytree(trained_model_dir, tmp_path / name))
        copies.append(model_dir)
    return images, copies


def processes():
    """(pid, parent pid, process group, command line) of every process that can be read."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                title = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            yield int(entry), int(stat[1]), int(stat[2]), title


def map_actors(cluster) -> list[int]:
    """Process ids of the Ray Data map actors (each holding an Encoder) on this session's worker nodes.

    Ray titles an actor's process `ray::_MapWorker...` and starts it, in its own process group,
    from the node's raylet; only raylets in the process groups this session's `ray start`
    commands lead are looked at.
    """
    groups = {p.pid for p in cluster.workers}
    table = list(processes())
    raylets = {pid for pid, _, group, title in table if group in groups and "raylet" in title.split("\0")[0]}
    return [pid for pid, parent, _, title in table
            if parent in raylets and title.startswith("ray::") and "MapWorker" in title]


def cpu_seconds(pid: int) -> float:
    try:
        return psutil.Process(pid).cpu_times().user
    except psutil.Error:
        return 0.0


def test_index_on_ray_gives_the_vectors_of_a_plain_index_with_a_worker_killed_midway(ray_cluster, two_copies):
    """One Ray run does both (each costs a driver and two encoder actors starting Keras): the vectors of a plain
    index, the same files skipped, and nothing lost or doubled when an encoder's process is killed while work remains."""
    images, (plain, on_ray) = two_copies
    add_images(images, images / "new", 200, "more")  # enough batches of 16 that the kill lands while work remains
    (images / "new" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # skipped by both, the same way
    env = {"IMGSIM_RAY_BATCH": "16"}
    process = subprocess.Popen([sys.executable, "-m", "imgsim", "index", "--model-dir", str(on_ray), "--images",
                                str(images), "--ray", ray_cluster.address], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **env})
    killed = []

    def kill_one_actor():
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline and process.poll() is None:
            pids = map_actors(ray_cluster)
            # once it has worked on a batch or two (2 s of CPU: the model loaded, images encoded)
            if pids and cpu_seconds(pids[0]) > 2.0:
                os.kill(pids[0], 9)  # one encoder actor's process, by its pid
                killed.append(pids[0])
            else:
                time.sleep(0.2)

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    stdout, stderr = process.communicate(timeout=400)
    killer.join()
    assert killed, "no encoder actor was found to kill"
    assert process.returncode == 0, stderr
    assert "broken.png" in stdout
    version = store.load_version(on_ray)
    assert len(set(version.paths)) == len(version.paths)  # nothing twice
    assert sum("/more/" in p for p in version.paths) == 200
    # the plain index in this process (Keras loaded already; the CLI's own index runs are tested in test_cli)
    from imgsim import Settings
    from imgsim.runs.indexing import index

    report = index(Settings(model_dir=plain, images=images))
    assert [Path(p).name for p in report.skipped.reasons] == ["broken.png"]
    want, got = vectors_by_path(plain), vectors_by_path(on_ray)
    assert sorted(got) == sorted(want) and sum("/new/" in p for p in got) == 40  # nothing lost
    cosines = np.array([float(want[p] @ got[p]) for p in want])
    assert cosines.min() >= 0.9999, cosines.min()


def test_ray_errors_are_one_line_and_touch_nothing(model_copy, tiny_collection, tmp_path, http_server):
    before = sorted(p.name for p in model_copy.rglob("*"))
    no_ray = tmp_path / "no-ray" / "ray"
    no_ray.mkdir(parents=True)
    (no_ray / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    listening = http_server.url("/").split("//")[1].rstrip("/")
    cases = [
        ((), {"PYTHONPATH": str(no_ray.parent)}, "needs the ray package"),
        # checked before Keras starts (a second, not ten): a backend that cannot load is not reached
        (("--ray", "127.0.0.1:1"), {"KERAS_BACKEND": "nonsense"}, "cannot reach a Ray cluster"),
        (("--ray", "http://example.org"), {}, "expected the Ray cluster's HOST:PORT"),
        (("--ray", listening), {}, "not a Ray cluster"),
    ]
    for number, (args, env, message) in enumerate(cases):
        args = args or ("--ray", "127.0.0.1:6379")
        commands = [("index", "--images", str(tiny_collection))]
        if number == 0:  # train checks the same way, before anything (each run here costs an imgsim start)
            commands.append(("train", "--images", str(tiny_collection)))
        for command in commands:
            started = time.monotonic()
            out = imgsim_cli(*command, "--model-dir", str(model_copy), *args, env=env, timeout=60)
            assert out.returncode == 2, (command, args, out.stderr)
            assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
            assert time.monotonic() - started < 30
    assert sorted(p.name for p in model_copy.rglob("*")) == before
