"""Real servers started once per test session: a Milvus standalone server and a local Ray cluster.

Test modules import the fixtures they use (`from servers import milvus_server`). Each server is a
process tree this session started in its own process group, stopped by that group's id at the end.
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


@contextmanager
def running_milvus(prefix: str = "imgsim-milvus-"):
    """A real Milvus 2.3.5 standalone server for 127.0.0.1, its data in a new temporary folder; yields a MilvusServer.

    Milvus 2.3.5 listens on every interface whatever it is told (`milvus_command`), so authentication
    is on and the public default login (root:Milvus) is replaced by a random password as soon as the
    proxy answers: a neighbour on the network can use the server only in those first seconds, before
    any data is in it. Stopped, and its data removed, on leaving.
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
        wait_for_port(port, process, log, 120, "milvus-server")
        from pymilvus import MilvusClient

        password = secrets.token_urlsafe(16)
        deadline = time.monotonic() + 60
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
        yield MilvusServer(f"http://127.0.0.1:{port}", f"root:{password}", data_dir, version)
    finally:
        stop_groups([process], grace=3)  # its data is thrown away: no need to wait for a clean shutdown
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def milvus_server():
    """A real Milvus 2.3.5 standalone server on 127.0.0.1, once per session (`running_milvus`)."""
    if shutil.which("milvus-server", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("milvus-server is not installed (pip install -r requirements-dev.txt)")
    with running_milvus() as server:
        yield server


# --- Ray ------------------------------------------------------------------------------------------


@dataclass
class RayCluster:
    address: str  # 127.0.0.1:PORT, for ray.init / imgsim --ray
    temp_dir: Path
    workers: list  # the worker nodes' `ray start --block` processes

    def env(self) -> dict:
        return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def ray_start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--block", *args],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def wait_for_nodes(address: str, count: int, seconds: float = 120) -> None:
    code = ("import ray, sys, time; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False);"
            "deadline = time.monotonic() + float(sys.argv[3]);\n"
            "while sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]) and time.monotonic() < deadline: time.sleep(0.5)\n"
            "print(sum(n['Alive'] for n in ray.nodes()))")
    out = subprocess.run([sys.executable, "-c", code, address, str(count), str(seconds)], capture_output=True,
                         text=True, timeout=seconds + 60, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    if out.stdout.strip() != str(count):
        pytest.fail(f"the Ray cluster has {out.stdout.strip() or '?'} of {count} nodes:\n{out.stderr[-3000:]}")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster, once per session: a head with no CPU for tasks and 2 workers of 1 CPU, on 127.0.0.1."""
    pytest.importorskip("ray", reason="ray is not installed (pip install -r requirements-dev.txt)")
    temp_dir = Path(tempfile.mkdtemp(prefix="imgsim-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
    # Token authentication with a token of this session's: a local ray.init() elsewhere on this machine writes
    # ~/.ray/auth_token, which Ray 2.60 processes then send (a worker failed to join with "Authentication
    # token is missing or incorrect"); and Ray listens on every interface, so a neighbour on the network
    # cannot join either. The imgsim processes the tests start inherit both variables.
    saved = {key: os.environ.get(key) for key in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    (temp_dir / "auth_token").write_text(secrets.token_hex(32))
    os.environ.update(RAY_AUTH_TOKEN_PATH=str(temp_dir / "auth_token"), RAY_AUTH_MODE="token")
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--object-store-memory=100000000", "--disable-usage-stats"]
    head = ray_start(["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                      f"--temp-dir={temp_dir}", "--ray-client-server-port", str(free_port()), *common],
                     temp_dir / "head.log")
    workers = []
    try:
        wait_for_port(port, head, temp_dir / "head.log", 120, "ray start --head")
        for n in range(2):  # one after the other: two raylets starting at once on one host can race for ports
            log = temp_dir / f"worker{n}.log"
            workers.append(ray_start([f"--address={address}", "--num-cpus=1", *common], log))
            wait_for_log(log, "block forever", workers[-1], 120, f"ray worker {n}")
        wait_for_nodes(address, 3)
        yield RayCluster(address, temp_dir, workers)
    finally:
        stop_groups([*workers, head])
        shutil.rmtree(temp_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
