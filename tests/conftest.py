"""Fixtures shared by the test modules."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from servers import milvus_server, ray_cluster  # noqa: F401  (session fixtures: a Milvus server, a Ray cluster)

# Whatever a test leaves to the defaults (Settings(), `imgsim` without --model-dir) lands in a
# folder of this session's, never in the person's own data folder or the checkout.
os.environ["IMGSIM_HOME"] = tempfile.mkdtemp(prefix="imgsim-test-home-")


class LocalServer:
    """A real HTTP server on a loopback address, in a thread; each test registers what its paths answer.

    `requests` lists (path, Host header) of every request received, so a test can tell whether,
    and how, the server was reached.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.routes = {}
        self.requests = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Host")))
                route = owner.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up, as a size or time limit makes it do

            def log_message(self, format, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def server_bind(self):
                # HTTPServer.server_bind looks the host up with getfqdn, which can wait on DNS.
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = self.server_address[:2]

        self.httpd = Server((host, port), Handler)
        self.host, self.port = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def route(self, path: str, handler) -> str:
        """Answer GET `path` with `handler(request_handler)`; returns the path's URL."""
        self.routes[path] = handler
        return self.url(path)

    def serve(self, path: str, body: bytes, status: int = 200, content_type: str = "image/png", headers=()) -> str:
        """Answer GET `path` with a fixed response; returns the path's URL."""

        def respond(request):
            request.send_response(status)
            request.send_header("Content-Type", content_type)
            request.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                request.send_header(name, value)
            request.end_headers()
            request.wfile.write(body)

        return self.route(path, respond)

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def http_server():
    """One real HTTP server on 127.0.0.1 for the whole session; reaching it needs IMGSIM_ALLOW_PRIVATE_URLS=1."""
    server = LocalServer()
    yield server
    server.close()


@pytest.fixture
def make_http_server():
    """Start more real HTTP servers for one test, e.g. LocalServer("127.0.0.2", port); they stop after it."""
    servers = []

    def make(host: str = "127.0.0.1", port: int = 0) -> LocalServer:
        servers.append(LocalServer(host, port))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


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


# --- a tiny real collection and model, trained once for the whole suite -------------------------

TINY = dict(image_size=32, latent_dim=16, epochs=1, batch_size=8, clusters=3, seed=0, workers=1)


@pytest.fixture(scope="session")
def tiny_collection(tmp_path_factory) -> Path:
    """24 augmented 64 px views of the shipped photographs, one sub-folder per source photo."""
    from imgsim.inputs.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("collection") / "photos", n=24, size=64, seed=3)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, tiny_collection) -> Path:
    """A model folder holding one tiny trained version (32 px, 1 epoch). Copy it before changing it."""
    from imgsim import Settings
    from imgsim.runs.training import train

    model_dir = tmp_path_factory.mktemp("models") / "models"
    train(Settings(model_dir=model_dir, images=tiny_collection, **TINY))
    return model_dir


@pytest.fixture
def model_copy(tmp_path, trained_model_dir) -> Path:
    """A private copy of the trained model folder, for tests that write to it."""
    import shutil

    return Path(shutil.copytree(trained_model_dir, tmp_path / "models"))


# --- a version of clustered random vectors, for what never encodes (labelling) ---------------------

def vector_version(model_dir, n: int, classes: int, dim: int = 32, spread: float = 0.6, seed: int = 0,
                   folder: str = "/collection"):
    """Write and load a version whose n vectors lie around `classes` random centres; returns (version, truth).

    Its model file is empty: enough for everything but encoding. Paths are folder/class-C/NNNNNN.jpg.
    """
    import numpy as np

    from imgsim.runs.training import save_collection
    from imgsim.storage import store
    from imgsim.storage.engines import choose_engine
    from imgsim.storage.records import Records

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    truth = rng.integers(0, classes, n)
    vectors = centres[truth] + rng.normal(scale=spread, size=(n, dim)).astype(np.float32)
    paths = [f"{folder}/class-{c}/{i:06d}.jpg" for i, c in enumerate(truth.tolist())]
    records = Records.build(paths, [1] * n, [0] * n, [f"{i:040x}" for i in range(n)], truth % 4,
                            np.zeros((n, 2), np.float32))
    with store.writer_lock(model_dir):
        entries, state = save_collection(model_dir, choose_engine("auto", n), records, vectors)
        store.write_version(model_dir, manifest={"kind": "train", "settings": {"image_size": 32, "seed": 0},
                                                 "images_root": folder},
                            records=entries, engine=state, centres=centres[:4], history={},
                            save_model=lambda path: path.write_bytes(b""))
    return store.load_version(model_dir), truth
