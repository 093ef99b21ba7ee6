"""Nearest-neighbour search over L2-normalised latent vectors (cosine similarity)."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors


def normalise(vectors) -> np.ndarray:
    """Rows scaled to unit length, so that cosine similarity is a dot product."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Index:
    """KNN over vectors with stable integer ids: fit / add / remove / search.

    Brute-force cosine through scikit-learn's NearestNeighbors: exact, and under a millisecond
    for tens of thousands of vectors. A faster or distributed engine can replace this class as
    long as it keeps these four methods.
    """

    def __init__(self, metric: str = "cosine"):
        self.metric = metric

    def fit(self, vectors, ids=None):
        self.vectors_ = normalise(vectors)
        self.ids_ = np.arange(len(self.vectors_)) if ids is None else np.asarray(list(ids))
        if len(self.ids_) != len(self.vectors_):
            raise ValueError(f"{len(self.ids_)} ids for {len(self.vectors_)} vectors")
        self.knn_ = NearestNeighbors(metric=self.metric, algorithm="brute")
        if len(self.vectors_):
            self.knn_.fit(self.vectors_)
        return self

    def add(self, vectors, ids):
        return self.fit(np.concatenate([self.vectors_, normalise(vectors)]), np.concatenate([self.ids_, list(ids)]))

    def remove(self, ids):
        keep = ~np.isin(self.ids_, list(ids))
        return self.fit(self.vectors_[keep], self.ids_[keep])

    def __len__(self) -> int:
        return len(self.ids_)

    def search(self, query, n: int, exclude=()) -> list[tuple[int, float]]:
        """The n most similar ids with their cosine similarity, best first, never an excluded id."""
        exclude = set(exclude)
        available = len(self.ids_) - len(exclude & set(self.ids_.tolist())) if exclude else len(self.ids_)
        n = min(n, available)
        if n <= 0:
            return []
        query = normalise(query)[:1]
        k = min(len(self.ids_), n + len(exclude))
        distances, positions = self.knn_.kneighbors(query, n_neighbors=k)
        hits = [(self.ids_[p].item(), 1.0 - float(d)) for d, p in zip(distances[0], positions[0]) if self.ids_[p].item() not in exclude]
        return hits[:n]
