"""Encoding spread over a Ray cluster: `imgsim index --ray ADDRESS` and `imgsim train --ray ADDRESS`.

Ray Data streams the file list through a pool of actors (`map_batches` with `Encoder`); each actor
loads the version's encoder once, then decodes and encodes a batch of files at a time. The vectors
come back to the driver, which writes them to the engine exactly as a local run does, so `index`
stays atomic: nothing is written until every file has been encoded or skipped. A worker that dies
loses nothing: its actor is restarted and its batch retried (Ray Data's defaults for actors,
`max_restarts=-1` and `max_task_retries=-1`). The images must be readable at the same paths on
every worker (a shared file system); the model travels to the workers through Ray's object store.

Ray is imported only here, and only when asked for, so the core works without it.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

import numpy as np

from imgsim.core.errors import ImgsimError

BATCH = 256  # files per Ray Data batch: Ray's per-batch overhead measured under 15 % of the encode time here
ADDRESS = re.compile(r"^(?:ray://)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})$")
PROBE_S = 5.0


def check_address(address: str) -> tuple[str, int]:
    """(host, port) of a HOST:PORT Ray address, or a one-line error."""
    match = ADDRESS.match(str(address).strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise ImgsimError(f"--ray {address!r}: expected the Ray cluster's HOST:PORT (as `ray start --head` prints it)")
    return match["host"].strip("[]"), int(match["port"])


def probe(address: str) -> None:
    """Fail in a few seconds when no Ray cluster answers at `address` (ray.init itself retries for minutes)."""
    host, port = check_address(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_S):
            pass
    except OSError as exc:
        raise ImgsimError(f"--ray {address}: cannot reach a Ray cluster there ({exc.strerror or exc})") from None
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # a Ray without these stubs: ray.init will tell
        return
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
            gcs_service_pb2.GetClusterIdRequest(), timeout=PROBE_S)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:  # a Ray head with token authentication: ray.init sends it
            return
        raise ImgsimError(f"--ray {address}: something answers there, but not a Ray cluster's head "
                          f"({exc.code().name.lower()})") from None
    finally:
        channel.close()


def connect(address: str):
    """The `ray` module, connected to the cluster at `address`; one-line errors for every way that fails."""
    try:
        import ray
    except ImportError:
        raise ImgsimError("--ray needs the ray package: pip install 'imgsim[ray]' (or pip install 'ray[data]')") from None
    if ray.is_initialized():
        return ray
    probe(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(address=str(address).strip(), logging_level="ERROR", log_to_driver=False,
                 configure_logging=True)
    except Exception as exc:  # a version mismatch, a cluster going away while connecting
        raise ImgsimError(f"--ray {address}: cannot join the Ray cluster ({one_line_of(exc)})") from None
    return ray


def one_line_of(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


class Encoder:
    """A Ray Data actor: loads the encoder once, then decodes and encodes one batch of files per call."""

    def __init__(self, model: bytes, size: int):
        from imgsim.learning.model import compile_encoder, load_encoder

        with tempfile.TemporaryDirectory(prefix="imgsim-ray-model-") as folder:  # loaded into memory, then gone
            path = Path(folder) / "model.keras"
            path.write_bytes(model)
            self.encode = compile_encoder(load_encoder(path))
        self.size = size

    def __call__(self, batch: dict) -> dict:
        from imgsim.core.errors import ImageError
        from imgsim.inputs.collection import load_for_model
        from imgsim.storage.engines import normalise

        images, hashes, errors = [], [], []
        for path in batch["path"]:
            try:
                image, digest = load_for_model(str(path), self.size)
            except ImageError as exc:
                image, digest, error = None, "", str(exc)
            else:
                error = ""
            images.append(image)
            hashes.append(digest)
            errors.append(error)
        good = [i for i, image in enumerate(images) if image is not None]
        vectors = None
        if good:
            encoded = normalise(self.encode(np.stack([images[i] for i in good])))
            vectors = np.zeros((len(images), encoded.shape[1]), np.float32)
            vectors[good] = encoded
        else:
            vectors = np.zeros((len(images), 1), np.float32)
        return {"i": np.asarray(batch["i"], np.int64), "vector": vectors,
                "hash": np.array(hashes, dtype=object), "error": np.array(errors, dtype=object)}


def model_bytes(model) -> bytes:
    """A saved .keras model's bytes; `model` is its path or an in-memory Keras model (saved to a temporary file)."""
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()
    with tempfile.TemporaryDirectory(prefix="imgsim-ray-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def encode_files(address: str, model, paths: list[str], size: int, progress=None, start: float = 0.0,
                 share: float = 1.0, batch_size: int | None = None, workers: int | None = None):
    """imgsim.learning.encoding.encode_files over a Ray cluster; the same return value, in the same order.

    `model` is a .keras autoencoder file (a version's model) or an in-memory autoencoder (a training
    run's). `workers` actors of one CPU each (default: every CPU in the cluster).
    """
    ray = connect(address)
    batch_size = batch_size or int(os.environ.get("IMGSIM_RAY_BATCH") or BATCH)
    if not paths:
        return [], np.zeros((0, 0), np.float32), [], {}
    from ray import data as ray_data

    context = ray_data.DataContext.get_current()
    context.enable_progress_bars = False
    context.verbose_stats_logs = False
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    items = ray_data.from_items([{"i": i, "path": p} for i, p in enumerate(paths)],
                                override_num_blocks=max(1, -(-len(paths) // batch_size)))
    encoded = items.map_batches(Encoder, fn_constructor_kwargs={"model": model_bytes(model), "size": size},
                                batch_size=batch_size, batch_format="numpy", num_cpus=1,
                                compute=ray_data.ActorPoolStrategy(min_size=1, max_size=workers))
    order, chunks, hashes, failures = [], [], [], {}
    done = 0
    try:
        for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
            ok = batch["error"] == ""
            for i, error in zip(batch["i"][~ok], batch["error"][~ok]):
                failures[paths[int(i)]] = str(error)
            if ok.any():  # a batch of unreadable files only has vectors 1 wide
                order.append(batch["i"][ok])
                chunks.append(batch["vector"][ok])
                hashes.extend(batch["hash"][ok].tolist())
            done += len(batch["i"])
            if progress:
                progress(start + share * done / len(paths), f"encoding {done}/{len(paths)} images on Ray")
    except Exception as exc:
        raise ImgsimError(f"--ray {address}: encoding failed on the cluster ({one_line_of(exc)}); nothing was written") from None
    order = np.concatenate(order) if order else np.zeros(0, np.int64)
    rank = np.argsort(order, kind="stable")
    kept = order[rank].tolist()
    vectors = np.concatenate(chunks)[rank] if kept else np.zeros((0, 0), np.float32)
    hashes = [hashes[r] for r in rank]
    return kept, vectors, hashes, failures

