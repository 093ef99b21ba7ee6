"""What to label next: representatives that cover the collection first, then what the propagation doubts.

The most typical image of each large cluster that holds no label yet (TypiClust, Hacohen et al.
2022, the strongest low-budget choice in its benchmarks), clusters where the propagation is
unsure before sure ones; images a person labelled are never suggested again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgsim.core.errors import ImgsimError
from imgsim.labelling.graph import Graph, neighbour_graph
from imgsim.labelling.propagation import Propagation, propagate
from imgsim.storage import store

SUGGEST_FIT_SAMPLE = 4_000  # clusters for suggestions are fitted on at most this many vectors
MIN_CLUSTER = 3  # a cluster smaller than this is noise, not something to cover


@dataclass(frozen=True)
class Suggestion:
    row: int
    path: str
    suggested: str | None
    confidence: float
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "suggested": self.suggested, "confidence": round(float(self.confidence), 4),
                "reason": self.reason}


def typicality(graph: Graph) -> np.ndarray:
    """How typical each image is of its neighbourhood: its mean similarity to its K nearest (TypiClust's density)."""
    valid = graph.rows >= 0
    return np.where(valid.any(axis=1), (graph.sims * valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1), 0.0)


def fine_clusters(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Each vector's cluster among at most k, KMeans fitted on an even sample of SUGGEST_FIT_SAMPLE vectors.

    k is capped at a quarter of the sample: smaller clusters are noise, not regions to cover (past
    that, suggestions come from the propagation's doubt). One BLAS thread: with more, k-means++
    spun 6x slower beside a training run on 2 cores (3.2 s against 0.5 s at 8,000 x 110).
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from imgsim.learning.groups import predict_groups

    sample = vectors
    if len(vectors) > SUGGEST_FIT_SAMPLE:
        sample = vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), SUGGEST_FIT_SAMPLE, replace=False))]
    k = max(1, min(k, len(sample) // 4 or 1))
    with threadpool_limits(1):
        kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=100).fit(sample)
        if sample is vectors:
            return kmeans.labels_.astype(np.int64)
        return predict_groups(vectors, kmeans.cluster_centers_).astype(np.int64)


def suggest(version: store.Version, n: int = 10, propagation: Propagation | None = None,
            graph: Graph | None = None) -> list[Suggestion]:
    """The n images whose labels would help most, best first; never one a person labelled.

    The collection is cut into (labelled + n) clusters; clusters without a person's label are
    taken largest-and-least-sure first, and each gives its most typical unlabelled image. When
    those run out, the images the propagation is least sure of fill the rest, never two
    neighbours of each other.
    """
    if n < 1:
        raise ImgsimError("-n must be at least 1")
    graph = graph or neighbour_graph(version)
    propagation = propagation or propagate(version, graph=graph)
    free = ~propagation.person
    if not free.any():
        return []
    typical = typicality(graph)
    seed = int(version.manifest.get("settings", {}).get("seed", 0))
    clusters = fine_clusters(version.vectors, int(propagation.person.sum()) + n, seed)
    covered = set(clusters[propagation.person].tolist())
    unsure = 1.0 - propagation.confidence
    candidates = []
    for c in np.unique(clusters):
        members = np.flatnonzero((clusters == c) & free)
        if c in covered or len(members) < MIN_CLUSTER:
            continue
        doubt = float(unsure[members].mean()) if propagation.classes else 1.0
        candidates.append((len(members) * doubt, int(members[np.argmax(typical[members])]), len(members), doubt))
    candidates.sort(key=lambda item: (-item[0], item[1]))
    picked, blocked, out = set(), set(), []

    def take(row: int, reason: str) -> None:
        picked.add(row)
        blocked.update(graph.rows[row][graph.rows[row] >= 0].tolist())
        out.append(Suggestion(row, version.paths[row], propagation.name(row), float(propagation.confidence[row]), reason))

    for _, row, size, doubt in candidates:
        if len(out) >= n:
            break
        if row in blocked:  # a neighbour of one already picked: two views of the same thing
            continue
        why = (f"typical of {size} similar images that have no label yet" if not propagation.classes else
               f"typical of {size} similar images with no label among them (propagation {1 - doubt:.0%} sure there)")
        take(row, why)
    if len(out) < n:  # then the images the propagation is least sure of
        margin = np.sort(propagation.scores, axis=1)
        gap = margin[:, -1] - (margin[:, -2] if margin.shape[1] > 1 else 0) if margin.shape[1] else np.zeros(len(free))
        order = np.lexsort((np.arange(len(free)), -typical, gap))
        for row in order.tolist():
            if len(out) >= n:
                break
            if free[row] and row not in picked and row not in blocked:
                take(row, f"the propagation is unsure: {propagation.confidence[row]:.0%} for "
                          f"{propagation.name(row) or 'any label'}")
    return out
