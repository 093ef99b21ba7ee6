"""Each image's K nearest others: the kNN graph that propagation, suggestions and review walk.

Computed once per version through the version's vector engine (`search_many` in batches, never an
N x N matrix) and kept on disk (imgsim.storage.annotations.graph_path); held in memory for the
last few versions.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

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
    """The version's kNN graph: from memory, from disk, or computed through its engine (and saved)."""
    key = (str(version.model_dir), version.id, k)
    with _graphs_lock:
        if key in _graphs:
            return _graphs[key]
    path = graph_path(version.model_dir, version.id, k)
    graph = None
    try:
        with np.load(path, allow_pickle=False) as data:
            graph = Graph(data["rows"].astype(np.int64), data["sims"].astype(np.float32))
        if len(graph) != len(version) or graph.rows.shape[1] != k or graph.rows.max(initial=-1) >= len(version):
            graph = None
    except (OSError, ValueError, KeyError):
        graph = None
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
