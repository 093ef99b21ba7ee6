"""Groups of similar images: KMeans on the latent vectors, and silhouette scores to choose k."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin, silhouette_score

# Above this many vectors, MiniBatchKMeans. Measured (benchmarks/groups-results.txt, 2 cores): its
# inertia stays within 0.2-1.6 % of full KMeans (10 starts) at every size from 5K to 200K, while
# full KMeans takes up to 4 s at 20K and 19 s at 100K (k = 12) against 0.4 and 2.5 s.
MINIBATCH_ABOVE = 20_000
SILHOUETTE_SAMPLE = 4_000


def fit_groups(vectors: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """KMeans on the vectors: (centres k x D, each vector's group). k is capped at the vector count."""
    k = max(1, min(k, len(vectors)))
    if len(vectors) > MINIBATCH_ABOVE:
        kmeans = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=4096, random_state=seed).fit(vectors)
        labels = predict_groups(vectors, kmeans.cluster_centers_)
    else:
        kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(vectors)
        labels = kmeans.labels_
    return kmeans.cluster_centers_.astype(np.float32), np.asarray(labels, np.int32)


# Up to this many vectors (a query, a batch of them), the nearest centre is found with numpy in the calling
# thread: scikit-learn's OpenMP reduction wakes a thread per core for each call, 0.16 s a search on the
# shared 2 cores at load 25-37 (benchmarks/bench_api.py's profile), for one product with a few centres.
FEW = 256


def predict_groups(vectors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The nearest centre of each vector: what a fitted KMeans' predict does, from saved centres."""
    vectors = np.atleast_2d(vectors)
    if len(vectors) <= FEW:
        centres = np.asarray(centres, vectors.dtype if vectors.dtype.kind == "f" else np.float64)
        distances = np.square(centres).sum(axis=1)[None, :] - 2.0 * (vectors @ centres.T)  # |x|^2 is the same per row
        return np.argmin(distances, axis=1).astype(np.int32)
    return pairwise_distances_argmin(vectors, centres).astype(np.int32)


def silhouette_by_k(vectors: np.ndarray, ks=range(2, 11), seed: int = 0,
                    sample: int = SILHOUETTE_SAMPLE) -> dict[int, float]:
    """Silhouette score of KMeans for each k (higher separates better), fitted and scored on a seeded sample."""
    vectors = np.asarray(vectors)
    if len(vectors) > sample:
        vectors = vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), sample, replace=False))]
    scores = {}
    for k in ks:
        if k >= len(vectors):
            break
        _, labels = fit_groups(vectors, k, seed)
        if len(set(labels.tolist())) < 2:
            continue
        scores[k] = float(silhouette_score(vectors, labels))
    return scores
