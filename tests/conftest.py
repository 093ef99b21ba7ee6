"""Fixtures shared by the test modules."""

from __future__ import annotations

import http.server
import os
import socketserver
import tempfile
import threading
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


from tests.helpers import TINY  # noqa: E402  (the tiny model's settings)

# --- a tiny real collection and model, trained once for the whole suite -------------------------

def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run once for the whole run, whatever the number of pytest-xdist workers; its folder.

    The first worker to get here builds under a folder all workers share (the run's base temporary
    folder), holding a lock; the others wait for it, then use what it built. Readers must not change it.
    """
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") \
        else tmp_path_factory.getbasetemp()
    folder, done = shared / f"shared-{name}", shared / f"shared-{name}.done"
    with FileLock(shared / f"shared-{name}.lock"):
        if not done.exists():
            if folder.exists():  # a worker killed while building: start again
                import shutil

                shutil.rmtree(folder)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_collection(tmp_path_factory) -> Path:
    """24 augmented 64 px views of the shipped photographs, one sub-folder per source photo."""
    from imgsim.inputs.demo import build_demo

    return built_once(tmp_path_factory, "collection", lambda folder: build_demo(folder / "photos", n=24, size=64, seed=3)) \
        / "photos"


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, tiny_collection) -> Path:
    """A model folder holding one tiny trained version (32 px, 1 epoch). Copy it before changing it."""
    from imgsim import Settings
    from imgsim.runs.training import train

    def build(folder):
        train(Settings(model_dir=folder / "models", images=tiny_collection, **TINY))

    return built_once(tmp_path_factory, "models", build) / "models"


@pytest.fixture
def model_copy(tmp_path, trained_model_dir) -> Path:
    """A private copy of the trained model folder, for tests that write to it."""
    import shutil

    return Path(shutil.copytree(trained_model_dir, tmp_path / "models"))


# --- pytest-xdist: what must share one worker ---------------------------------------------------

SERVER_FIXTURES = ("milvus_server", "ray_cluster")


def uses_servers(item) -> bool:
    """Whether a test needs the session's Milvus server or Ray cluster (directly, or by its parameter)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(f in item.fixturenames for f in SERVER_FIXTURES) or "milvus-server" in params.values()


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (--dist loadgroup), the tests of the real servers run on one worker, which starts
    them once, together (servers.Background); every other worker runs the rest meanwhile."""
    needed = set()
    for item in items:
        if uses_servers(item):
            item.add_marker(pytest.mark.xdist_group("servers"))
            params = getattr(getattr(item, "callspec", None), "params", {})
            needed |= {f for f in SERVER_FIXTURES if f in item.fixturenames}
            needed |= {"milvus_server"} if "milvus-server" in params.values() else set()
    config.imgsim_server_fixtures = sorted(needed)
