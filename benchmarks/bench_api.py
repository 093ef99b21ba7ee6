"""Figures for docs/results.md and docs/scale.md: the HTTP API under load (`imgsim api`), on this machine.

    python benchmarks/bench_api.py prepare --dir /work/data/api-bench        # 10,000 images and a model (once)
    python benchmarks/bench_api.py load --dir /work/data/api-bench --workers 2 --clients 20 --seconds 300
    python benchmarks/bench_api.py scale --dir /work/data/api-bench --workers 1 2 4 --seconds 60
    python benchmarks/bench_api.py scale --dir /work/data/api-bench --workers 2 --clients 1 [--similar]  # one caller
    python benchmarks/bench_api.py milvus --dir /work/data/api-bench        # /similar over a Milvus server

`prepare` builds 10,000 demo images (imgsim.inputs.demo, 128 px JPEGs of the shipped photographs)
and trains the default architecture (128 px, 128-d latent) on them with a short budget (speed does
not depend on the weights), exact engine. `load` starts `imgsim api --workers N` and N threads of
closed-loop clients (one keep-alive connection each) sending `POST /search` with a 512 x 512 JPEG
(scikit-image's astronaut), then `GET /images/{id}/similar`; with `--publish`, half-way through
the search phase it adds 20 images to the collection and runs `imgsim index`, a real new version,
and counts failed requests and the versions that answered. The clients run in this process on the
same 2 cores as the server: their CPU time is printed beside the server's. Every figure is printed
with the machine's load average (it is shared).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the collection and its model ----------------------------------------------------------------

def prepare(args) -> None:
    from imgsim import Settings
    from imgsim.inputs.demo import build_demo
    from imgsim.runs.training import train

    images, models = args.dir / "images", args.dir / "models"
    t = time.perf_counter()
    build_demo(images, n=args.images, size=128, seed=5)
    print(f"{args.images} images in {time.perf_counter() - t:.0f} s ({load()})", flush=True)
    t = time.perf_counter()
    report = train(Settings(model_dir=models, images=images, max_steps=args.steps, min_steps=0, engine="exact"))
    print(f"trained and encoded: {report.summary()} in {time.perf_counter() - t:.0f} s ({load()})", flush=True)


def prepare_synthetic(args) -> None:
    """A version of `--images` clustered 128-d vectors over the default architecture's model with fresh weights:
    what a search costs does not depend on the weights or the vectors' values (bench_scale.py does the same)."""
    from imgsim.learning.model import build_autoencoder
    from imgsim.storage import store
    from imgsim.storage.manifest import Manifest
    from imgsim.storage.records import Records

    models, n = args.dir / "models", args.images
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 128)).astype(np.float32)
    groups = rng.integers(0, 4, n)
    vectors = centres[groups] + rng.normal(scale=0.8, size=(n, 128)).astype(np.float32)
    paths = [f"{args.dir}/images/g{g}/{i:06d}.jpg" for i, g in enumerate(groups.tolist())]
    records = Records.build(paths, [50_000] * n, [0] * n, [f"{i:040x}" for i in range(n)], groups,
                            np.zeros((n, 2), np.float32))
    with store.writer_lock(models):
        entries, state = store.save_collection(models, "exact", records, vectors)
        store.write_version(models, manifest=Manifest(kind="train", settings={"image_size": 128, "latent_dim": 128},
                                                      images_root=str(args.dir / "images")),
                            records=entries, engine=state, centres=centres, history={},
                            save_model=lambda path: build_autoencoder(128, 128).save(path))
    print(f"a synthetic version of {n} vectors, default architecture, exact engine, in {models} ({load()})")


def republished(version):
    """The manifest of an `index` version that follows `version` with its data: every field a run writes, kept."""
    from dataclasses import fields

    from imgsim.storage.manifest import Manifest

    kept = {f.name: version.manifest[f.name] for f in fields(Manifest) if f.name in version.manifest}
    return Manifest(**{**kept, "kind": "index", "parent": version.id})


def republish(model_dir: Path, note: list) -> None:
    """A new version made current while the clients run: the current one's data under a new id, written as
    `index` writes one (segments shared, the model linked), so every worker loads a new model."""
    from imgsim.storage import store

    t = time.perf_counter()
    version = store.load_version(model_dir)
    manifest = republished(version)
    with store.writer_lock(model_dir):
        new = store.write_version(model_dir, manifest=manifest,
                                  records=version.manifest["records"], engine=version.manifest["engine"],
                                  centres=version.centres, history=version.history,
                                  save_model=lambda path: store.link_or_copy(version.model_path, path))
    note.append(f"published {new} (after {version.id}) during the load in {time.perf_counter() - t:.1f} s")


def query_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    out = io.BytesIO()
    Image.fromarray(data.astronaut()).save(out, "JPEG", quality=90)  # 512 x 512
    return out.getvalue()


# --- the server ----------------------------------------------------------------------------------

class Server:
    """`imgsim api` as a person starts it, in its own process group; stopped with it."""

    def __init__(self, model_dir: Path, workers: int, env: dict | None = None):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="imgsim-api-bench-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imgsim", "api", "--port", str(self.port), "--model-dir", str(model_dir),
             "--workers", str(workers)], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True)
        deadline = time.monotonic() + 600
        while True:
            try:
                if self.get("/health")[0] == 200 and self.all_workers_ready(workers):
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                why = Path(self.log.name).read_text()[-3000:]
                self.stop()  # never left running: its workers would load the machine for nothing
                raise SystemExit(f"imgsim api did not start (in 600 s, or it exited):\n{why}")
            time.sleep(1)

    def get(self, path: str):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()

    def all_workers_ready(self, workers: int) -> bool:
        """Every worker has loaded its model: each reports the version it serves in /metrics."""
        text = self.get("/metrics")[1].decode()
        return sum(1 for line in text.splitlines() if line.startswith("imgsim_api_model_version{")
                   and line.endswith(" 1.0")) >= workers

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[int, float]:
        """CPU seconds so far of the server's process and each of its children (the workers), by pid."""
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            seconds = {}
            for p in [root, *root.children(recursive=True)]:
                times = p.cpu_times()
                seconds[p.pid] = times.user + times.system
            return seconds
        except psutil.NoSuchProcess:
            return {}

    def stop(self) -> None:
        import signal

        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        os.unlink(self.log.name)


def split(before: dict[int, float], after: dict[int, float]) -> str:
    """Each process's share of the server CPU between two readings, largest first: an uneven split shows
    connections held by one worker."""
    used = sorted((after[pid] - before.get(pid, 0.0) for pid in after), reverse=True)
    return "per process " + " / ".join(f"{u:.0f}" for u in used if u >= 0.5)


# --- the clients ---------------------------------------------------------------------------------

def connected(port: int) -> http.client.HTTPConnection:
    """A keep-alive connection with Nagle's algorithm off, as urllib3 (imgsim.Client, requests) and httpx open
    theirs. Without it a search's body (larger than http.client joins to its headers) waited for the server's
    delayed ACK of the headers: about 40 ms added to every POST, none of it the server's work."""
    import socket

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def run_clients(port: int, clients: int, seconds: float, request, on_half=None) -> dict:
    """`clients` closed-loop threads for `seconds`; `request()` -> (method, path, body, headers). Returns the figures."""
    records, lock, stop = [], threading.Lock(), threading.Event()
    start = time.perf_counter()

    def client():
        connection, mine = None, []
        while not stop.is_set():
            method, path, body, headers = request()
            t = time.perf_counter()
            try:
                if connection is None:
                    connection = connected(port)
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                version = json.loads(data).get("version") if response.status == 200 else None
                mine.append((t - start, time.perf_counter() - t, response.status, version))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                mine.append((t - start, time.perf_counter() - t, type(exc).__name__, None))
                connection = None
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    cpu = time.process_time()
    for thread in threads:
        thread.start()
    if on_half:
        stop.wait(seconds / 2)
        on_half()
        stop.wait(max(0.0, seconds - (time.perf_counter() - start)))
    else:
        stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(120)
    elapsed = time.perf_counter() - start
    ok = np.array([r[1] for r in records if r[2] == 200]) * 1000
    errors = [r for r in records if r[2] != 200]
    return {"requests": len(records), "errors": len(errors), "error_kinds": sorted({str(r[2]) for r in errors}),
            "seconds": elapsed, "rps": len(ok) / elapsed, "client_cpu": time.process_time() - cpu,
            "p50": float(np.percentile(ok, 50)) if len(ok) else None,
            "p99": float(np.percentile(ok, 99)) if len(ok) else None,
            "versions": sorted({r[3] for r in records if r[3]}), "records": records}


def describe(name: str, figures: dict, server_cpu: float) -> str:
    return (f"{name}: {figures['requests']} requests in {figures['seconds']:.0f} s = {figures['rps']:.1f}/s, "
            f"p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, errors {figures['errors']} "
            f"{figures['error_kinds'] or ''}; CPU s: server {server_cpu:.0f}, clients {figures['client_cpu']:.0f}")


def search_request(jpeg: bytes):
    boundary = "imgsimbenchboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"astronaut.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + jpeg + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return lambda: ("POST", "/search?n=8", body, headers)


def similar_request(ids: list[str]):
    rng = np.random.default_rng(0)
    return lambda: ("GET", f"/images/{ids[rng.integers(len(ids))]}/similar?n=8", None, {})


def publish(args, model_dir: Path, images: Path, note: list) -> None:
    """A real new version while the clients run: 20 more images, then `imgsim index`."""
    from PIL import Image

    folder = images / "added-during-load"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(int(time.time()))
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / f"new-{i:02d}.jpg")
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "imgsim", "index", "--model-dir", str(model_dir), "--images",
                           str(images)], cwd=ROOT, capture_output=True, text=True)
    note.append(f"published during the load: `imgsim index` exit {done.returncode} in {time.perf_counter() - t:.0f} s: "
                f"{done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]}")


def load_test(args) -> None:
    from imgsim.storage import store

    model_dir = args.dir / "models"
    work = Path(tempfile.mkdtemp(prefix="imgsim-api-bench-"))
    if args.publish:  # a copy: the published version must not change the prepared folder
        shutil.copytree(args.dir / "models", work / "models")
        model_dir = work / "models"
    if args.publish and not args.synthetic:
        shutil.copytree(args.dir / "images", work / "images")
        version = store.load_version(model_dir)
        manifest = dict(version.manifest, images_root=str(work / "images"))
        (version.path / "manifest.json").write_text(json.dumps(manifest))  # not in the checksums
    version = store.load_version(model_dir)
    ids = [str(int(i)) for i in version.ids[:: max(1, len(version) // 500)]]
    print(f"{len(version)} images, engine {version.manifest['engine']['engine']}, {args.workers} worker(s), "
          f"{args.clients} clients ({load()})", flush=True)
    server = Server(model_dir, args.workers)
    try:
        note = []
        cpu = server.cpu_seconds()
        if args.publish and args.synthetic:
            half = lambda: republish(model_dir, note)  # noqa: E731
        elif args.publish:
            half = lambda: publish(args, model_dir, work / "images", note)  # noqa: E731
        else:
            half = None
        search = run_clients(server.port, args.clients, args.seconds, search_request(query_jpeg()), half)
        print(describe("POST /search (512x512 JPEG)", search, server.cpu_seconds() - cpu) + f" ({load()})", flush=True)
        for line in note:
            print(line + f"; versions that answered: {', '.join(search['versions'])}", flush=True)
        cpu = server.cpu_seconds()
        similar = run_clients(server.port, args.clients, args.similar_seconds, similar_request(ids))
        print(describe("GET /images/{id}/similar", similar, server.cpu_seconds() - cpu) + f" ({load()})", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def scale(args) -> None:
    """`POST /search` (or, with --similar, `GET /images/{id}/similar`) with each number of workers in turn."""
    from imgsim.storage import store

    model_dir = args.dir / "models"
    if args.similar:
        version = store.load_version(model_dir)
        request, what = similar_request([str(int(i)) for i in version.ids[:: max(1, len(version) // 500)]]), "GET /images/{id}/similar"
    else:
        request, what = search_request(query_jpeg()), "POST /search"
    for workers in args.workers:
        server = Server(model_dir, workers)
        try:
            cpu = server.cpu_by_process()
            figures = run_clients(server.port, args.clients, args.seconds, request)
            after = server.cpu_by_process()
            print(describe(f"{workers} worker(s), {args.clients} client(s), {what}", figures,
                           sum(after.values()) - sum(cpu.values())) + f"; {split(cpu, after)} ({load()})", flush=True)
        finally:
            server.stop()


def milvus(args) -> None:
    """The prepared version moved into a Milvus server (`imgsim index --engine milvus`), then /similar there."""
    from servers import milvus_command, stop_groups

    from imgsim.storage import store
    from imgsim.storage.engines import milvus as engine_module

    work = Path(tempfile.mkdtemp(prefix="imgsim-api-milvus-"))
    data_dir = work / "milvus"
    data_dir.mkdir()
    port, client_port, peer_port = free_port(), free_port(), free_port()
    etcd = data_dir / "embedEtcd.yaml"
    etcd.write_text(f"listen-client-urls: http://127.0.0.1:{client_port}\nadvertise-client-urls: http://127.0.0.1:{client_port}\n"
                    f"listen-peer-urls: http://127.0.0.1:{peer_port}\ninitial-advertise-peer-urls: http://127.0.0.1:{peer_port}\n"
                    f"initial-cluster: default=http://127.0.0.1:{peer_port}\n")
    with open(data_dir / "server.log", "wb") as log:
        milvus_server = subprocess.Popen(milvus_command(data_dir, port), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**os.environ, "ETCD_CONFIG_PATH": str(etcd)})
    env = {"IMGSIM_MILVUS_URI": f"http://127.0.0.1:{port}", "IMGSIM_MILVUS_TOKEN": "root:Milvus"}
    server = None
    try:
        wait_for_milvus(env)
        shutil.copytree(args.dir / "models", work / "models")
        os.environ.update(env)
        t = time.perf_counter()
        into_milvus(work / "models")
        version = store.load_version(work / "models")
        print(f"moved {len(version)} vectors into Milvus 2.3.5 in {time.perf_counter() - t:.0f} s ({load()})", flush=True)
        engine = version.engine()
        vectors = engine.vectors_of(version.ids[:200])
        for level in ("Strong", "Bounded"):
            engine_module.READ_CONSISTENCY = level
            engine.search(vectors[0], 9)
            times = []
            for vector in vectors[1:101]:
                t = time.perf_counter()
                engine.search(vector, 9, group=0)
                times.append((time.perf_counter() - t) * 1000)
            print(f"engine search in one group, {level}: p50 {np.percentile(times, 50):.1f} ms, "
                  f"p99 {np.percentile(times, 99):.1f} ms over 100 ({load()})", flush=True)
            times = []
            for image in version.ids[1:101]:
                t = time.perf_counter()
                engine.vectors_of([image])
                times.append((time.perf_counter() - t) * 1000)
            print(f"engine vectors_of one id, {level}: p50 {np.percentile(times, 50):.1f} ms ({load()})", flush=True)
        engine.close()
        from imgsim.api.collection import Collection

        collection, times = Collection(work / "models"), []
        collection.similar(str(int(version.ids[0])), 8)
        for image in version.ids[1:51]:
            t = time.perf_counter()
            collection.similar(str(int(image)), 8)
            times.append((time.perf_counter() - t) * 1000)
        print(f"in process, Collection.similar: p50 {np.percentile(times, 50):.1f} ms ({load()})", flush=True)
        ids = [str(int(i)) for i in version.ids[:: max(1, len(version) // 500)]]
        server = Server(work / "models", args.workers, env)
        for clients in (1, args.clients):
            cpu = server.cpu_seconds()
            figures = run_clients(server.port, clients, args.seconds, similar_request(ids))
            print(describe(f"Milvus server, {args.workers} worker(s), {clients} client(s), GET /images/{{id}}/similar",
                           figures, server.cpu_seconds() - cpu) + f" ({load()})", flush=True)
    finally:
        if server:
            server.stop()
        stop_groups([milvus_server], grace=3)
        shutil.rmtree(work, ignore_errors=True)


def into_milvus(model_dir: Path) -> None:
    """The current version's vectors copied into the Milvus server ($IMGSIM_MILVUS_URI) as a new version, as
    `imgsim index --engine milvus` moves them (without re-encoding), for a version with or without its images."""
    from imgsim.storage import store

    version = store.load_version(model_dir)
    manifest = republished(version)
    with store.writer_lock(model_dir):
        engine = store.copy_engine(version.engine(), "milvus", collection="api_bench")
        state = engine.save(model_dir)
        store.write_version(model_dir, manifest=manifest,
                            records=version.manifest["records"], engine=state, centres=version.centres,
                            history=version.history, save_model=lambda path: store.link_or_copy(version.model_path, path))


def wait_for_milvus(env: dict, seconds: float = 300) -> None:
    import secrets

    from pymilvus import MilvusClient

    deadline = time.monotonic() + seconds
    while True:
        try:  # Milvus 2.3.5 listens on every interface: a random root password the moment it answers
            password = secrets.token_urlsafe(16)
            MilvusClient(uri=env["IMGSIM_MILVUS_URI"], token="root:Milvus", timeout=5).update_password(
                "root", "Milvus", password)
            env["IMGSIM_MILVUS_TOKEN"] = f"root:{password}"
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=50, help="training steps (speed does not depend on them)")
    for name in ("load", "scale", "milvus"):
        p = sub.add_parser(name)
        p.add_argument("--dir", type=Path, required=True)
        p.add_argument("--clients", type=int, default=20)
        p.add_argument("--seconds", type=float, default=300 if name == "load" else 60)
        if name == "scale":
            p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
        else:
            p.add_argument("--workers", type=int, default=2 if name == "load" else 1)
    sub.choices["load"].add_argument("--similar-seconds", type=float, default=60)
    sub.choices["scale"].add_argument("--similar", action="store_true", help="GET /images/{id}/similar instead of a search")
    sub.choices["load"].add_argument("--publish", action="store_true", help="publish a new version half-way")
    sub.choices["load"].add_argument("--synthetic", action="store_true",
                                     help="the prepared version is synthetic (prepare --synthetic): publish a copy")
    sub.choices["prepare"].add_argument("--synthetic", action="store_true",
                                        help="synthetic vectors and a fresh model instead of images and training")
    args = parser.parse_args()
    if args.what == "prepare" and args.synthetic:
        return prepare_synthetic(args)
    {"prepare": prepare, "load": load_test, "scale": scale, "milvus": milvus}[args.what](args)


if __name__ == "__main__":
    main()
