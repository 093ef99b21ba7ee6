"""Each image's K nearest others: the kNN graph that propagation, suggestions and review walk.

Computed once per version through the version's vector engine (`search_many` in batches, never an
N x N matrix) and kept on disk (imgsim.storage.annotations.graph_path); held in memory for the
last few versions.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from imgsim.core.files import write_atomic_with
from imgsim.storage import store
from imgsim.storage.annotations import graph_path

log = logging.getLogger(__name__)

K = 10  # neighbours per image in the graph (benchmarks/bench_labelling.py: 10 beat 15 and 30)
BATCH = 4_096


@dataclass
class Graph:
    """Each row's K nearest other rows (-1 where fewer exist) and their cosine similarity, best first."""

    rows: np.ndarray  # (n, k) int64
    sims: np.ndarray  # (n, k) float32

    def __len__(self) -> int:
        return len(self.rows)

    def transition(self) -> sparse.csr_matrix:
        """S = D^-1/2 W D^-1/2 over the symmetric affinities: what label spreading multiplies by (made once)."""
        if not hasattr(self, "_transition"):
            w = affinity(self)
            scale = 1.0 / np.sqrt(np.maximum(np.asarray(w.sum(axis=1)).ravel(), 1e-12))
            self._transition = (sparse.diags(scale) @ w @ sparse.diags(scale)).astype(np.float32).tocsr()
        return self._transition


_graphs: dict[tuple, Graph] = {}
_graphs_lock = threading.Lock()


def neighbour_graph(version: store.Version, k: int = K) -> Graph:
    """The version's kNN graph: from memory, from disk (when it passes `read_graph`), or computed through its engine (and saved)."""
    key = (str(version.model_dir), version.id, k)
    with _graphs_lock:
        if key in _graphs:
            return _graphs[key]
    path = graph_path(version.model_dir, version.id, k)
    graph = read_graph(path, len(version), k)
    if graph is None:
        graph = compute_graph(version, k)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic_with(path, lambda fh: np.savez(fh, rows=graph.rows.astype(np.int32), sims=graph.sims))
        except OSError as exc:  # a read-only model folder: compute again next time
            log.info("kNN graph not saved (%s)", exc)
    with _graphs_lock:
        _graphs[key] = graph
        while len(_graphs) > 4:
            _graphs.pop(next(iter(_graphs)))
    return graph


MEMBERS = {"rows.npy": np.dtype("<i4"), "sims.npy": np.dtype("<f4")}  # what `neighbour_graph` saves
HEADROOM = 64 * 1024  # bytes a kept graph may hold beyond its arrays: the zip's and the .npy headers


def read_graph(path: Path, n: int, k: int) -> Graph | None:
    """The graph kept at `path` if it is one of n rows and k neighbours; None (so it is rebuilt) for anything else.

    The file is outside the version's checksums, so it is checked before anything is read into
    memory (issue 28): a plain file (no link followed) no larger than its two arrays, stored
    uncompressed in the zip (a deflated member can hold gigabytes in a few MB), whose .npy headers
    say (n, k) int32 and float32; then its values: rows in [-1, n), never itself, similarities finite.
    """
    arrays = {}
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode) or os.fstat(fh.fileno()).st_size > 8 * n * k + HEADROOM:
                raise ValueError("not a plain file of the expected size")
            with zipfile.ZipFile(fh) as archive:
                members = archive.infolist()
                if sorted(m.filename for m in members) != sorted(MEMBERS) or any(
                        m.compress_type != zipfile.ZIP_STORED or m.file_size > 4 * n * k + HEADROOM for m in members):
                    raise ValueError("not the two uncompressed arrays")
                for member in members:
                    with archive.open(member) as part:
                        arrays[member.filename] = read_npy(part, MEMBERS[member.filename], (n, k))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: not a kNN graph of this version (%s); rebuilt", path, exc)
        return None
    rows, sims = arrays["rows.npy"].astype(np.int64), arrays["sims.npy"]
    if ((rows < -1) | (rows >= n) | (rows == np.arange(n)[:, None])).any() or not np.isfinite(sims).all():
        log.warning("%s: neighbours out of range or similarities not finite; rebuilt", path)
        return None
    return Graph(rows, sims.astype(np.float32))


def read_npy(fh, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """An .npy array from `fh` whose header says `dtype` and `shape` (checked before its data is read)."""
    version = np.lib.format.read_magic(fh)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f".npy format {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    found_shape, fortran, found_dtype = read_header(fh)
    if tuple(found_shape) != tuple(shape) or fortran or found_dtype != dtype:
        raise ValueError(f"holds {found_dtype} {tuple(found_shape)}, not {dtype} {tuple(shape)}")
    data = fh.read(int(np.prod(shape)) * dtype.itemsize)
    if len(data) != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError("shorter than its header says")
    return np.frombuffer(data, dtype).reshape(shape)


def compute_graph(version: store.Version, k: int = K) -> Graph:
    """Each image's k nearest others by `search_many` on the version's engine, in batches."""
    n = len(version)
    rows = np.full((n, k), -1, np.int64)
    sims = np.zeros((n, k), np.float32)
    engine, vectors, records = version.engine(), version.vectors, version.records
    for lo in range(0, n, BATCH):
        hits = engine.search_many(vectors[lo:lo + BATCH], k + 1)
        found = np.full((len(hits), k + 1), -1, np.int64)
        scores = np.zeros((len(hits), k + 1), np.float32)
        for j, answer in enumerate(hits):
            if answer:
                found[j, :len(answer)], scores[j, :len(answer)] = zip(*answer)
        found = np.where(found >= 0, records.rows_of(found.ravel()).reshape(found.shape), -1)
        found[found == np.arange(lo, lo + len(hits))[:, None]] = -1  # never itself
        order = np.argsort(found < 0, axis=1, kind="stable")[:, :k]  # the first k others, best first
        rows[lo:lo + len(hits)] = np.take_along_axis(found, order, axis=1)
        sims[lo:lo + len(hits)] = np.where(rows[lo:lo + len(hits)] >= 0, np.take_along_axis(scores, order, axis=1), 0)
    return Graph(rows, sims)


def affinity(graph: Graph) -> sparse.csr_matrix:
    """Symmetric weights from the kNN graph: w = exp((s - 1) / sigma), sigma the median distance to a neighbour."""
    n, k = graph.rows.shape
    valid = graph.rows >= 0
    distance = 1.0 - graph.sims
    sigma = float(np.median(distance[valid])) if valid.any() else 1.0
    weights = np.exp(-distance / max(sigma, 1e-6)) * valid
    w = sparse.csr_matrix((weights[valid], (np.repeat(np.arange(n), k)[valid.ravel()], graph.rows[valid])), shape=(n, n))
    return w.maximum(w.T).tocsr()
