"""Each image's K nearest others: the kNN graph that propagation, suggestions and review walk.

Computed once per version through the version's vector engine (`search_many` in batches, never an
N x N matrix) and kept on disk (imgsim.storage.annotations.graph_path); held in memory for the
last few versions. A training or indexing run keeps a better one first where it can (`verified`:
each image's neighbours re-checked as a search re-checks a query's answers, imgsim.runs.neighbours);
a version without one gets the latents' graph on first use.
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

# A pair a geometric check did not call the same scene, in a graph where it called some (`verified`), weighs this
# times its latents' weight: such pairs were 0.57 right on photos-hard-12 (whose classes are halves of one
# photograph) and the checked ones 1.00 (0.93 and 0.985 on digits). benchmarks/bench_labelling.py at 2 labels a
# class, photos-hard-12 / digits / icons-8: 0.760 / 0.976 / 0.853 over the latents alone; 0.855 / 0.967 at 0.3,
# 0.889 / 0.977 at 0.1, 0.940 / 0.976 / 0.891 at 0.03, 0.940 / 0.971 / 0.870 at 0.01, each with the checked pairs
# first (before imgsim.runs.neighbours.LEAD; docs/results.md, issue 32; chosen on the collections reported).
LOOK_ALIKE = 0.03
K = 10  # neighbours per image in the graph (benchmarks/bench_labelling.py: 10 beat 15 and 30)
BATCH = 4_096


@dataclass
class Graph:
    """Each row's K nearest other rows (-1 where fewer exist) and their cosine similarity, best first; and whether
    a geometric check called the pair the same scene (`verified`; all False in a graph of the latents alone)."""

    rows: np.ndarray  # (n, k) int64
    sims: np.ndarray  # (n, k) float32
    same: np.ndarray | None = None  # (n, k) bool

    def __post_init__(self):
        if self.same is None:
            self.same = np.zeros(self.rows.shape, bool)

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
    graph = read_graph(graph_path(version.model_dir, version.id, k), len(version), k)
    if graph is None:
        graph = keep_graph(version, compute_graph(version, k))
    with _graphs_lock:
        _graphs[key] = graph
        while len(_graphs) > 4:
            _graphs.pop(next(iter(_graphs)))
    return graph


def keep_graph(version: store.Version, graph: Graph) -> Graph:
    """Save the version's graph (of graph.rows.shape[1] neighbours) where `neighbour_graph` reads it; returns it.
    A model folder that cannot be written keeps nothing (logged): it is computed again next time."""
    path = graph_path(version.model_dir, version.id, graph.rows.shape[1])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic_with(path, lambda fh: np.savez(fh, rows=graph.rows.astype(np.int32), sims=graph.sims,
                                                    same=graph.same.astype(np.uint8)))
    except OSError as exc:
        log.info("kNN graph not saved (%s)", exc)
    return graph


MEMBERS = {"rows.npy": np.dtype("<i4"), "sims.npy": np.dtype("<f4"), "same.npy": np.dtype("|u1")}  # `keep_graph`'s
OLD_MEMBERS = {"rows.npy", "sims.npy"}  # a graph kept before `same` (0.3): read as one nothing verified
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
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode) or os.fstat(fh.fileno()).st_size > 9 * n * k + HEADROOM:
                raise ValueError("not a plain file of the expected size")
            with zipfile.ZipFile(fh) as archive:
                members = archive.infolist()
                if {m.filename for m in members} not in (set(MEMBERS), OLD_MEMBERS) or len(members) > len(MEMBERS) or any(
                        m.compress_type != zipfile.ZIP_STORED or m.file_size > 4 * n * k + HEADROOM for m in members):
                    raise ValueError("not the graph's uncompressed arrays")
                for member in members:
                    with archive.open(member) as part:
                        arrays[member.filename] = read_npy(part, MEMBERS[member.filename], (n, k))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: not a kNN graph of this version (%s); rebuilt", path, exc)
        return None
    rows, sims = arrays["rows.npy"].astype(np.int64), arrays["sims.npy"]
    same = arrays.get("same.npy", np.zeros((n, k), np.uint8))
    if ((rows < -1) | (rows >= n) | (rows == np.arange(n)[:, None])).any() or not np.isfinite(sims).all() or (
            same > 1).any():
        log.warning("%s: neighbours out of range, similarities not finite or flags not 0/1; rebuilt", path)
        return None
    return Graph(rows, sims.astype(np.float32), same.astype(bool) & (rows >= 0))


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
    return Graph(*nearest(version, k))


def verified(rows: np.ndarray, sims: np.ndarray, same: np.ndarray, k: int = K) -> Graph:
    """The graph of each row's first k candidates (rows, their cosine, whether a geometric check called them
    the same scene; in the order the check left them, imgsim.search.rerank.recheck_neighbours).
    `affinity` weighs the pairs not called the same scene LOOK_ALIKE times their latents' weight."""
    rows, sims, same = rows[:, :k], sims[:, :k], same[:, :k]
    return Graph(rows.astype(np.int64), sims.astype(np.float32), same & (rows >= 0))


def nearest(version: store.Version, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, sims): each image's k nearest other rows (-1 where fewer) and their cosine, best first."""
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
    return rows, sims


def affinity(graph: Graph) -> sparse.csr_matrix:
    """Symmetric weights from the kNN graph: w = exp((s - 1) / sigma), sigma the median distance to a neighbour;
    times LOOK_ALIKE for a pair that a geometric check did not call the same scene in a graph where it called
    some (`verified`): a graph of latents alone keeps its weights (a common factor changes no spreading)."""
    n, k = graph.rows.shape
    valid = graph.rows >= 0
    distance = 1.0 - graph.sims
    sigma = float(np.median(distance[valid])) if valid.any() else 1.0
    weights = np.exp(-distance / max(sigma, 1e-6)) * np.where(graph.same, 1.0, LOOK_ALIKE) * valid
    w = sparse.csr_matrix((weights[valid], (np.repeat(np.arange(n), k)[valid.ravel()], graph.rows[valid])), shape=(n, n))
    return w.maximum(w.T).tocsr()
