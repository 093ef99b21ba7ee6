"""Groups of similar images: KMeans on the latent vectors, and silhouette scores to choose k."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances_argmin, silhouette_score


def fit_groups(vectors: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """KMeans on the vectors: (centres k x D, each vector's group). k is capped at the vector count."""
    k = max(1, min(k, len(vectors)))
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(vectors)
    return kmeans.cluster_centers_.astype(np.float32), kmeans.labels_.astype(np.int32)


def predict_groups(vectors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The nearest centre of each vector: what a fitted KMeans' predict does, from saved centres."""
    return pairwise_distances_argmin(np.atleast_2d(vectors), centres).astype(np.int32)


def silhouette_by_k(vectors: np.ndarray, ks=range(2, 11), seed: int = 0, sample: int = 2000) -> dict[int, float]:
    """Silhouette score of KMeans for each k (higher separates better), on a sample for speed."""
    scores = {}
    for k in ks:
        if k >= len(vectors):
            break
        _, labels = fit_groups(vectors, k, seed)
        if len(set(labels.tolist())) < 2:
            continue
        scores[k] = float(silhouette_score(vectors, labels, sample_size=min(sample, len(vectors)), random_state=seed))
    return scores
