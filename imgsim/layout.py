"""A 2-D map of the latent space for the dashboard's scatter: UMAP, or PCA when too few images."""

from __future__ import annotations

import warnings

import numpy as np


def map_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) latents -> (N, 2) coordinates; cosine UMAP, falling back to PCA under 10 images."""
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if n < 10:
        from sklearn.decomposition import PCA

        coords = PCA(n_components=min(2, n, vectors.shape[1])).fit_transform(vectors) if n > 1 else np.zeros((1, 1))
        return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1]))).astype(np.float32)
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap warns that a seed disables parallelism: wanted here
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, metric="cosine", random_state=seed)
        return reducer.fit_transform(vectors).astype(np.float32)
