"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from servers import background_servers, milvus_server, ray_cluster  # noqa: F401  (session fixtures: the servers)

# pytest-xdist runs a worker a core; TensorFlow, OpenMP (faiss) and numba (UMAP) would each start a thread a core
# in every worker and in every process a test starts, so the workers' threads outnumber the cores and spin against
# each other. Each worker (and what it starts) gets its share of the cores instead.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(name, share)

# The tests compile hundreds of small JAX programs (tiny models, a few steps each), each once: XLA's optimisation
# passes cost more than they save there (the JAX pass took 118 s with them, 86 s without, same tests passing).
# What the tests check, the programs' results under JAX, does not depend on them; benchmarks/gpu_check.sh and
# people's own runs keep them. Set before JAX is imported (it reads the variable then), inherited by subprocesses.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# The session's Keras backend, fixed in the environment from the start (as backend.choose() would at the first
# import): every process a test starts inherits it, and `same_backend` below sees a test that changes it.
from imgsim.learning.backend import choose  # noqa: E402  (light: no Keras)

choose()

# Whatever a test leaves to the defaults (Settings(), `imgsim` without --model-dir) lands in a
# folder of this session's, never in the person's own data folder or the checkout.
os.environ["IMGSIM_HOME"] = tempfile.mkdtemp(prefix="imgsim-test-home-")


@pytest.fixture(autouse=True)
def same_backend():
    """A test that leaves KERAS_BACKEND changed fails: every process its worker starts later (trainings, CLI runs,
    dashboards) would run under that backend unseen (one did: "jax" left by a monkeypatch that recorded nothing)."""
    before = os.environ.get("KERAS_BACKEND")
    yield
    assert os.environ.get("KERAS_BACKEND") == before, f"KERAS_BACKEND left at {os.environ.get('KERAS_BACKEND')!r}"


@pytest.fixture(autouse=True)
def same_main_module():
    """Streamlit's AppTest installs the script it runs as `__main__` and leaves it there; a later test on the same
    worker that starts a process by multiprocessing's spawn then ran that script again in the child (a fresh
    clone's run: test_access's script raised "... cannot be read" in test_annotations' two writers, both exited 1).
    The worker's own `__main__` is put back after every test."""
    before = sys.modules.get("__main__")
    yield
    if before is not None and sys.modules.get("__main__") is not before:
        sys.modules["__main__"] = before


class LocalServer(HTTPServer):
    """pytest-httpserver's real HTTP server (werkzeug, in a thread) on a loopback address, with the fixed
    answers most tests register (`serve`); `requests` lists (path as sent, Host header) of every request
    received, so a test can tell whether, and how, the server was reached. Unknown paths answer 404.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port, threaded=True)  # as a real server: a slow client does not hold up the next
        self.no_handler_status_code = 404
        self.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def serve(self, path: str, body: bytes, status: int = 200, content_type: str = "image/png", headers=()) -> str:
        """Answer GET `path` (as the server decodes it) with a fixed response; returns the path's URL."""
        self.expect_request(path).respond_with_data(body, status=status, content_type=content_type,
                                                    headers=dict(headers))
        return self.url(path)

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return [(request.environ.get("RAW_URI", request.full_path), request.headers.get("Host"))
                for request, _ in self.log]

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def close(self) -> None:
        self.stop()


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


def uses_a_module_fixture(item) -> bool:
    """Whether a test uses (directly or through another fixture) a fixture built once a module: a model trained,
    a server started... for the module's tests on each worker that runs one of them."""
    definitions = getattr(item, "_fixtureinfo", None)
    definitions = definitions.name2fixturedefs if definitions else {}
    return any(defs and defs[-1].scope == "module" for name in item.fixturenames for defs in [definitions.get(name)])


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook: see the end
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (--dist loadgroup), the tests of the real servers run on one worker, which starts
    them once, together (servers.Background); every other worker runs the rest meanwhile. So do a module's
    tests that share a module-scoped fixture (otherwise each worker builds it: test_duplicates' model was
    trained twice in a fresh clone's run, 29.8 s and 20.2 s), each module on one worker."""
    needed = set()
    for item in items:
        if uses_servers(item):
            item.add_marker(pytest.mark.xdist_group("servers"))
            params = getattr(getattr(item, "callspec", None), "params", {})
            needed |= {f for f in SERVER_FIXTURES if f in item.fixturenames}
            needed |= {"milvus_server"} if "milvus-server" in params.values() else set()
        elif item.get_closest_marker("xdist_group") is None and uses_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))  # xdist would join two groups
    config.imgsim_server_fixtures = sorted(needed)
    if getattr(config.option, "loadgroup", False):  # a pytest-xdist worker under --dist loadgroup
        group_by_node_id(items)


@pytest.hookimpl(wrapper=True)  # after the test's own fixtures are torn down (one may still talk to a server)
def pytest_runtest_teardown(item, nextitem):
    """Stop the servers once this process has run its last test that uses them: idle, Milvus and Ray take about a
    tenth of a core (6.6 CPU s a minute here) from the tests still running. Under --dist loadgroup their tests reach
    one worker together and run one after the other (the next item is the next one run); in one process, the
    collection order tells. Under another pytest-xdist mode they stay up to the end."""
    result = yield
    servers = getattr(item.config, "imgsim_background", None)
    if servers is None or not uses_servers(item):
        return result
    if os.environ.get("PYTEST_XDIST_WORKER"):
        last = getattr(item.config.option, "loadgroup", False) and (nextitem is None or not uses_servers(nextitem))
    else:
        items = item.session.items
        last = not any(uses_servers(later) for later in items[items.index(item) + 1:])
    if last:
        servers.stop()
    return result


def group_by_node_id(items) -> None:
    """What pytest-xdist 3.8 means to do for --dist loadgroup: a test's groups as a suffix of its node id, which
    the scheduler splits on. Its own hook sets `item._nodeid`, which pytest 9 no longer reads (node ids live in
    `_id`): every xdist_group was ignored, and the servers' tests could run on both workers, each starting the
    servers (the fresh clone's CI run at 17:45 set test_engines' Milvus collection up twice, 28.2 s and 25.2 s)."""
    from _pytest.nodeid import coerce_node_id

    for item in items:
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                        for mark in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")
