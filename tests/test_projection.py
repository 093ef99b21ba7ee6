"""The latent map's UMAP: its numba code compiled once for every later process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from imgsim.learning.projection import map_2d

ROOT = Path(__file__).resolve().parent.parent

# A new process maps 24 vectors, then says how often it loaded the small path's numba functions from
# numba's on-disk cache (hits) and how often it compiled them (misses), and whether TensorFlow was loaded
# (umap's ParametricUMAP imports it; imgsim blocks that while umap loads) or that import left blocked.
CHILD = textwrap.dedent("""
    import json, sys, numpy as np
    from imgsim.learning.projection import map_2d
    coords = map_2d(np.random.default_rng(0).normal(size=(24, 16)).astype(np.float32))
    tensorflow, blocked = "tensorflow" in sys.modules, "umap.parametric_umap" in sys.modules
    import umap.umap_, umap.utils
    functions = {"smooth_knn_dist": umap.umap_.smooth_knn_dist, "fast_knn_indices": umap.utils.fast_knn_indices}
    print(json.dumps({"coords": coords.tolist(), "tensorflow": tensorflow, "blocked": blocked,
                      **{name: [sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())]
                         for name, f in functions.items()}}))
""")


def test_a_new_process_loads_umaps_compiled_code_instead_of_compiling_it_and_no_tensorflow():
    # This process maps first: it compiles and writes the cache, or loads what an earlier one wrote.
    here = map_2d(np.random.default_rng(0).normal(size=(24, 16)).astype(np.float32))
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["smooth_knn_dist"] == [1, 0] and child["fast_knn_indices"] == [1, 0]  # loaded, not compiled
    assert np.allclose(child["coords"], here, atol=1e-4)  # the loaded code draws the same map
    assert child["tensorflow"] is False and child["blocked"] is False  # nor left umap.parametric_umap unimportable


def test_without_a_writable_place_for_the_cache_umap_still_maps(monkeypatch):
    """numba refuses a cache it cannot write anywhere ("no locator available"): the map is compiled in-process."""
    import umap.umap_
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    from imgsim.learning.projection import umap_with_cache

    def refuse(self):
        raise RuntimeError(f"cannot cache function {self.py_func.__name__!r}: no locator available")

    monkeypatch.setattr(umap.umap_.smooth_knn_dist, "_cache", NullCache())  # as before any cache was turned on
    monkeypatch.setattr(Dispatcher, "enable_caching", refuse)
    assert umap_with_cache.__wrapped__() is umap  # the look-over itself (the cached call has run already)
    assert isinstance(umap.umap_.smooth_knn_dist._cache, NullCache)
    assert map_2d(np.random.default_rng(0).normal(size=(24, 16)).astype(np.float32)).shape == (24, 2)


def test_the_look_over_survives_modules_imported_while_it_reads_them():
    """The warm-up thread looks umap's functions over while the training imports: a garbage collection midway
    (here forced at every allocation) runs finalizers, and through them other threads, which add modules. Read
    item by item, sys.modules then changed size during the reading and the thread died ("dictionary changed size
    during iteration", seen in the JAX pass)."""
    import gc
    import types

    import umap

    from imgsim.learning.projection import umap_with_cache

    added = []

    class Garbage:  # a reference cycle whose finalizer imports (adds a module) and leaves more garbage
        def __init__(self):
            self.me = self

        def __del__(self):
            if len(added) < 300:
                added.append(f"imgsim_test_module_{len(added)}")
                sys.modules[added[-1]] = types.ModuleType(added[-1])
                Garbage()

    threshold = gc.get_threshold()
    try:
        gc.set_threshold(1)
        Garbage()
        assert umap_with_cache.__wrapped__() is umap
    finally:
        gc.set_threshold(*threshold)
        for name in added:
            sys.modules.pop(name, None)
    assert added  # finalizers did run during the look-over
