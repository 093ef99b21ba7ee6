"""A 2-D map of the latent space for the dashboard's scatter: UMAP, or PCA when too few images.

UMAP is fitted on a seeded sample of at most FIT_SAMPLE vectors and the rest are placed with its
`transform`, so a large collection costs one bounded fit. Images added later by `index` are
placed without refitting (`place_new`): each goes to the similarity-weighted mean of its nearest
mapped neighbours, which keeps every earlier point where the user last saw it.
"""

from __future__ import annotations

import functools
import sys
import warnings

import numpy as np

from imgsim.learning.backend import import_blocked

FIT_SAMPLE = 20_000
NEIGHBOURS = 8
PARAMETRIC = "umap.parametric_umap"  # imports TensorFlow: see umap_with_cache


def map_2d(vectors: np.ndarray, seed: int = 0, fit_sample: int = FIT_SAMPLE) -> np.ndarray:
    """(N, D) latents -> (N, 2) coordinates; cosine UMAP, falling back to PCA under 10 images."""
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if n < 10:
        from sklearn.decomposition import PCA

        coords = PCA(n_components=min(2, n, vectors.shape[1])).fit_transform(vectors) if n > 1 else np.zeros((1, 1))
        return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1]))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap warns that a seed disables parallelism: wanted here
        umap = umap_with_cache()
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, metric="cosine", random_state=seed)
        if n <= fit_sample:
            return reducer.fit_transform(vectors).astype(np.float32)
        sample = np.sort(np.random.default_rng(seed).choice(n, fit_sample, replace=False))
        coords = np.empty((n, 2), np.float32)
        coords[sample] = reducer.fit_transform(vectors[sample])
        rest = np.setdiff1d(np.arange(n), sample)
        for start in range(0, len(rest), 50_000):
            chunk = rest[start:start + 50_000]
            coords[chunk] = reducer.transform(vectors[chunk])
        return coords


@functools.cache  # once a process: the modules' functions are looked over at the first map, not at each
def umap_with_cache():
    """The umap module, its numba functions (and pynndescent's) compiled once for every later process.

    Most of umap's are jitted without numba's on-disk cache, so each new process compiled them again:
    10.5-11.8 s on 2 cores before the first map of a small collection (the training child, each CLI
    run), 0.07-0.10 s with the cache, the same coordinates. `enable_caching` is what `jit(cache=True)`
    itself calls; the cache sits in the package's __pycache__, or numba's user cache folder where that
    is read-only. Functions that take a function (pynndescent's `nn_descent`, from 4,096 points up) are
    compiled each time still: `warm_up` below.

    umap's package imports ParametricUMAP, which imports TensorFlow (5.4 s, several hundred MB) even
    under JAX or PyTorch; imgsim never uses it, so that one import is blocked while umap loads (its
    `ParametricUMAP` is then umap's own stand-in that says TensorFlow is needed) and unblocked after,
    for whoever imports `umap.parametric_umap` later in the same process.
    """
    with import_blocked(PARAMETRIC), warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportWarning)  # umap's "Tensorflow not installed": not so
        import umap
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    # a copy taken in one step: building a list item by item can run a finalizer (a garbage collection), and so
    # another thread's import, midway ("dictionary changed size during iteration": the warm-up thread of a
    # training died so under JAX); inspect.getmodule copies it too
    for name, module in sys.modules.copy().items():
        if name.partition(".")[0] in ("umap", "pynndescent") and module is not None:
            for function in vars(module).copy().values():
                if isinstance(function, Dispatcher) and isinstance(function._cache, NullCache) \
                        and function.__module__ == name:
                    try:
                        function.enable_caching()
                    except RuntimeError:  # no writable place for a cache (numba: "no locator available"): compiled
                        return umap       # in this process, as before
    return umap


def warm_up(n: int) -> None:
    """Compile UMAP's numba code for a collection of n vectors, on random ones, so that the first
    real map does not wait for it (about 11 s in a new process on 2 cores; 0.7 s afterwards).
    UMAP takes another path from 4,096 points up, hence the size."""
    if n >= 10:
        map_2d(np.random.default_rng(0).normal(size=(min(n, 4_200), 8)).astype(np.float32))


def place_new(vectors: np.ndarray, engine, records) -> np.ndarray:
    """Map coordinates for new vectors from their nearest neighbours already on the map (no refit).

    `engine` searches the collection as it was before these vectors were added; `records` gives
    the neighbours' coordinates. With nothing mapped yet, everything lands at the origin.
    """
    coords = np.zeros((len(vectors), 2), np.float32)
    if not len(vectors) or not len(records):
        return coords
    for start in range(0, len(vectors), 1024):
        batch = vectors[start:start + 1024]
        for i, hits in enumerate(engine.search_many(batch, NEIGHBOURS)):
            if not hits:
                continue
            rows = records.rows_of([h[0] for h in hits])
            weights = np.maximum(np.array([h[1] for h in hits], np.float32), 1e-3)[rows >= 0]
            if len(weights):
                coords[start + i] = (records.map2d[rows[rows >= 0]] * weights[:, None]).sum(0) / weights.sum()
    return coords
