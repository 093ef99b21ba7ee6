"""Real servers started once per test session: a Milvus standalone server and a local Ray cluster.

Both start together, each in a thread, when the first test that needs one asks (conftest.py also
puts every such test on one pytest-xdist worker, so the other workers run the rest meanwhile).
Each server is a process tree this session started in its own process group, stopped by that
group's id at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MILVUS_COMPONENTS = ("proxy", "rootCoord", "queryCoord", "queryNode", "indexCoord", "indexNode", "dataCoord", "dataNode")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_groups(processes: list[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM the process groups this session started (each id is its leader's pid), then SIGKILL what is left."""

    def alive(process) -> bool:
        process.poll()
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        left = [p for p in processes if alive(p)]
        for process in left:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.1)


def wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {seconds:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def wait_for_log(log: Path, text: str, process: subprocess.Popen, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)


# --- Milvus ---------------------------------------------------------------------------------------


@dataclass
class MilvusServer:
    uri: str  # http://127.0.0.1:PORT
    token: str  # root:<random password>: the server runs with authentication on
    data_dir: Path
    version: str

    def client(self):
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.uri, token=self.token)


def milvus_command(data_dir: Path, port: int) -> list[str]:
    """`milvus-server` (the `milvus` package) on free ports, its data, logs and binaries in data_dir.

    Milvus 2.3.5 listens on every interface whatever its configuration says (each component's `ip`
    only sets the address it registers under; milvus-io/milvus#26538 asks for a listen address), so
    the components register as 127.0.0.1, clients connect only there, and authentication is on with
    a password set at start (see milvus_server): a neighbour on the network cannot use it.
    """
    ports = {key: free_port() for key in ("root_coord_port", "proxy_internal_port", "query_coord_port",
                                            "query_node_port", "index_coord_port", "index_node_port",
                                            "data_coord_port", "data_node_port")}
    command = [str(Path(sys.executable).parent / "milvus-server"), "--data", str(data_dir),
               "--proxy-port", str(port), "--authorization-enabled", "true"]
    for key, value in ports.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    for component in MILVUS_COMPONENTS:
        command += ["--extra-config", f"{component}.ip=127.0.0.1"]
    return command


def start_milvus(prefix: str = "imgsim-milvus-") -> tuple[MilvusServer, list[subprocess.Popen]]:
    """A real Milvus 2.3.5 standalone server for 127.0.0.1, its data in a new temporary folder; (server, processes).

    Milvus 2.3.5 listens on every interface whatever it is told (`milvus_command`), so authentication
    is on and the public default login (root:Milvus) is replaced by a random password as soon as the
    proxy answers: a neighbour on the network can use the server only in those first seconds, before
    any data is in it.
    """
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    log = data_dir / "server.log"
    # milvus-server takes its health port (METRICS_PORT) from 9091 upwards itself
    client_port, peer_port = free_port(), free_port()
    etcd = data_dir / "embedEtcd.yaml"  # the embedded etcd's own ports: its defaults (2379, 2380) are fixed otherwise
    etcd.write_text(f"listen-client-urls: http://127.0.0.1:{client_port}\n"
                    f"advertise-client-urls: http://127.0.0.1:{client_port}\n"
                    f"listen-peer-urls: http://127.0.0.1:{peer_port}\n"
                    f"initial-advertise-peer-urls: http://127.0.0.1:{peer_port}\n"
                    f"initial-cluster: default=http://127.0.0.1:{peer_port}\n")
    with open(log, "wb") as out:
        process = subprocess.Popen(milvus_command(data_dir, port), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "ETCD_CONFIG_PATH": str(etcd)})
    try:
        wait_for_port(port, process, log, 180, "milvus-server")
        from pymilvus import MilvusClient

        password = secrets.token_urlsafe(16)
        deadline = time.monotonic() + 90
        while True:  # the proxy listens before it serves
            try:
                client = MilvusClient(uri=f"http://127.0.0.1:{port}", token="root:Milvus", timeout=10)
                client.update_password("root", "Milvus", password)
                client.close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        client = MilvusClient(uri=f"http://127.0.0.1:{port}", token=f"root:{password}", timeout=10)
        version = client.get_server_version()
        client.close()
    except BaseException:
        stop_groups([process], grace=3)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return MilvusServer(f"http://127.0.0.1:{port}", f"root:{password}", data_dir, version), [process]


@contextmanager
def running_milvus(prefix: str = "imgsim-milvus-"):
    """`start_milvus` for a benchmark: yields the MilvusServer; stopped, and its data removed, on leaving."""
    server, processes = start_milvus(prefix)
    try:
        yield server
    finally:
        stop_groups(processes, grace=3)  # its data is thrown away: no need to wait for a clean shutdown
        shutil.rmtree(server.data_dir, ignore_errors=True)


# --- Ray ------------------------------------------------------------------------------------------


@dataclass
class RayCluster:
    address: str  # 127.0.0.1:PORT, for ray.init / imgsim --ray
    temp_dir: Path
    workers: list  # the worker nodes' `ray start --block` processes
    auth: dict  # RAY_AUTH_TOKEN_PATH and RAY_AUTH_MODE: what a process that joins it needs

    def env(self) -> dict:
        return {**os.environ, **self.auth, "RAY_USAGE_STATS_ENABLED": "0"}


def ray_start(args: list[str], log: Path, auth: dict) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--block", *args],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **auth, "RAY_USAGE_STATS_ENABLED": "0"})


def wait_for_nodes(address: str, count: int, auth: dict, seconds: float = 180) -> None:
    code = ("import ray, sys, time; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False);"
            "deadline = time.monotonic() + float(sys.argv[3]);\n"
            "while sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]) and time.monotonic() < deadline: time.sleep(0.5)\n"
            "print(sum(n['Alive'] for n in ray.nodes()))")
    out = subprocess.run([sys.executable, "-c", code, address, str(count), str(seconds)], capture_output=True,
                         text=True, timeout=seconds + 60, env={**os.environ, **auth, "RAY_USAGE_STATS_ENABLED": "0"})
    if out.stdout.strip() != str(count):
        pytest.fail(f"the Ray cluster has {out.stdout.strip() or '?'} of {count} nodes:\n{out.stderr[-3000:]}")


def start_ray() -> tuple[RayCluster, list[subprocess.Popen]]:
    """A real local Ray cluster: a head with no CPU for tasks and 2 workers of 1 CPU, on 127.0.0.1; (cluster, processes).

    Token authentication with a token of this session's: a local ray.init() elsewhere on this machine writes
    ~/.ray/auth_token, which Ray 2.60 processes then send (a worker failed to join with "Authentication
    token is missing or incorrect"); and Ray listens on every interface, so a neighbour on the network
    cannot join either. `RayCluster.auth` holds the two variables the processes that use it need.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="imgsim-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
    (temp_dir / "auth_token").write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_TOKEN_PATH": str(temp_dir / "auth_token"), "RAY_AUTH_MODE": "token"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--object-store-memory=100000000", "--disable-usage-stats"]
    head = ray_start(["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                      f"--temp-dir={temp_dir}", "--ray-client-server-port", str(free_port()), *common],
                     temp_dir / "head.log", auth)
    workers = []
    try:
        wait_for_port(port, head, temp_dir / "head.log", 180, "ray start --head")
        for n in range(2):  # one after the other: two raylets starting at once on one host can race for ports
            log = temp_dir / f"worker{n}.log"
            workers.append(ray_start([f"--address={address}", "--num-cpus=1", *common], log, auth))
            wait_for_log(log, "block forever", workers[-1], 180, f"ray worker {n}")
        wait_for_nodes(address, 3, auth)
    except BaseException:
        stop_groups([*workers, head])
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return RayCluster(address, temp_dir, workers, auth), [*workers, head]


# --- the fixtures: both servers start together, in the background, at the first test that needs one ----------

STARTERS = {"milvus_server": start_milvus, "ray_cluster": start_ray}


class Background:
    """The session's servers, each started in a thread of its own; `get` waits for one."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=len(STARTERS), thread_name_prefix="test-server")
        self.futures = {}
        self.stopped = False

    def start(self, names) -> None:
        for name in names:
            if name not in self.futures:
                self.futures[name] = self.pool.submit(STARTERS[name])

    def get(self, name: str):
        self.start([name])
        server, _ = self.futures[name].result()
        return server

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        processes = []
        for future in self.futures.values():
            try:
                processes += future.result()[1]
            except BaseException:  # a start that failed cleaned up after itself
                continue
        # Their data is thrown away: no clean shutdown to wait for. All at once (one server after the other, with
        # 3 s of grace each, was 10.7 s of a fresh clone's run in which its worker ran nothing).
        stop_groups(processes, grace=1)
        for future in self.futures.values():
            if future.exception() is None:
                server = future.result()[0]
                shutil.rmtree(getattr(server, "data_dir", None) or server.temp_dir, ignore_errors=True)
        self.pool.shutdown(wait=False)


@pytest.fixture(scope="session")
def background_servers(request):
    """Starts, at the first test that needs one, every server some test of this worker's session needs."""
    servers = Background()
    request.addfinalizer(servers.stop)
    request.config.imgsim_background = servers  # conftest stops them after this process's last test that uses them
    servers.start(getattr(request.config, "imgsim_server_fixtures", ()))
    return servers


@pytest.fixture(scope="session")
def milvus_server(background_servers):
    """A real Milvus 2.3.5 standalone server on 127.0.0.1, once per session; its data in a temporary folder."""
    if shutil.which("milvus-server", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("milvus-server is not installed (pip install -r requirements-dev.txt)")
    return background_servers.get("milvus_server")


@pytest.fixture(scope="session")
def ray_cluster(background_servers):
    """A real local Ray cluster, once per session (see start_ray); the processes the tests start inherit its token."""
    pytest.importorskip("ray", reason="ray is not installed (pip install -r requirements-dev.txt)")
    cluster = background_servers.get("ray_cluster")
    saved = {key: os.environ.get(key) for key in cluster.auth}
    os.environ.update(cluster.auth)
    yield cluster
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
