"""Helpers the test modules import: the dashboard's real server, the tiny training settings, synthetic versions.

Fixtures live in conftest.py (pytest finds them); plain functions and constants live here, so no
test imports conftest as a module.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest


def in_threads(target, count: int) -> None:
    """Run `target` in `count` threads at once and wait for all of them."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# --- the dashboard's real server -------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, log, seconds: float = 90) -> None:
    """Return once the dashboard at `url` answers /_stcore/health; fail with `log()` if it exits or takes too long."""
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + seconds
    while True:
        try:
            if no_proxy.open(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the dashboard did not start:\n{log()}")
        time.sleep(0.3)


@contextmanager
def running_dashboard(log_path: Path, env: dict, args=()):
    """`imgsim serve` as run.sh starts it, on a free port; yields (url, port) once /_stcore/health answers.

    `args` go to `imgsim serve`; the server's own options follow a `--` there.
    """
    port = free_port()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "imgsim", "serve", "--port", str(port), *args, "--", "--server.fileWatcherType=none"],
            cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, server, lambda: log_path.read_text()[-3000:])
        yield url, port
    finally:
        server.terminate()  # `imgsim serve` stops its dashboard server with it
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()



# --- the tiny training settings every trained fixture uses ------------------------------------------

# Two encoder stages, not the default four: the graph TensorFlow traces to start a training is a third
# smaller (a tiny training's first step 9.5 -> 6.5 s on 2 cores), and nothing in these tests needs depth.
TINY_ARCHITECTURE = dict(stage_filters=(8, 16), stage_depth=(0, 1), decoder_filters=(8, 8))
TINY = dict(image_size=32, latent_dim=16, epochs=1, batch_size=8, clusters=3, seed=0, workers=1, **TINY_ARCHITECTURE)
# the same architecture as `imgsim train` flags
TINY_FLAGS = [text for name, values in TINY_ARCHITECTURE.items()
              for text in (f"--{name.replace('_', '-')}", *map(str, values))]


# --- a version of clustered random vectors, for what never encodes (labelling) ---------------------

def vector_version(model_dir, n: int, classes: int, dim: int = 32, spread: float = 0.6, seed: int = 0,
                   folder: str = "/collection", weights=None):
    """Write and load a version whose n vectors lie around `classes` random centres; returns (version, truth).

    `weights`: each class's share of the vectors (default: alike).

    Its model file is empty: enough for everything but encoding. Paths are folder/class-C/NNNNNN.jpg.
    """
    import numpy as np

    from imgsim.storage import store
    from imgsim.storage.engines import choose_engine
    from imgsim.storage.manifest import Manifest
    from imgsim.storage.records import Records

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    truth = rng.integers(0, classes, n) if weights is None else rng.choice(classes, n, p=np.divide(weights, sum(weights)))
    vectors = centres[truth] + rng.normal(scale=spread, size=(n, dim)).astype(np.float32)
    paths = [f"{folder}/class-{c}/{i:06d}.jpg" for i, c in enumerate(truth.tolist())]
    records = Records.build(paths, [1] * n, [0] * n, [f"{i:040x}" for i in range(n)], truth % 4,
                            np.zeros((n, 2), np.float32))
    with store.writer_lock(model_dir):
        entries, state = store.save_collection(model_dir, choose_engine("auto", n), records, vectors)
        store.write_version(model_dir, manifest=Manifest(kind="train", settings={"image_size": 32, "seed": 0},
                                                          images_root=folder),
                            records=entries, engine=state, centres=centres[:4], history={},
                            save_model=lambda path: path.write_bytes(b""))
    return store.load_version(model_dir), truth


# --- the HTTP API in a real server ---------------------------------------------------------------

@contextmanager
def running_api(app, host: str = "127.0.0.1"):
    """`app` (imgsim.api.app.create_app) served by a real uvicorn server in a thread; yields its base URL.

    Returns once the server listens (uvicorn's startup, lifespan included, has finished), and stops it after.
    """
    import threading

    import uvicorn

    started = threading.Event()

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            started.set()

    port = free_port()
    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True, name="imgsim-api-test")
    thread.start()
    try:
        while not started.wait(0.2):
            if not thread.is_alive():
                pytest.fail("the API server did not start")
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
