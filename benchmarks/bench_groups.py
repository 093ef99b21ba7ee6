"""KMeans against MiniBatchKMeans on clustered latent-like vectors: time and quality, to place MINIBATCH_ABOVE.

    .venv/bin/python benchmarks/bench_groups.py        # 5K ... 200K vectors, k = 4 and 12

Prints, per size: seconds for each, the inertia ratio (mini-batch / full; 1.00 = as tight) and the
adjusted Rand index between the two labelings. imgsim.learning.groups switches to mini-batches above
MINIBATCH_ABOVE.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def vectors(n: int, d: int = 128, clusters: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.8 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    from imgsim.learning.groups import MINIBATCH_ABOVE

    print(f"# KMeans (n_init=10) vs MiniBatchKMeans (n_init=3, batch 4096); imgsim switches above {MINIBATCH_ABOVE:,}")
    print(f"{'n':>8} {'k':>3} {'full s':>8} {'mini s':>8} {'speed-up':>9} {'inertia':>8} {'ARI':>6}")
    for n in (5_000, 20_000, 50_000, 100_000, 200_000):
        x = vectors(n)
        for k in (4, 12):
            t = time.perf_counter()
            full = KMeans(n_clusters=k, n_init=10, random_state=0).fit(x)
            t_full = time.perf_counter() - t
            t = time.perf_counter()
            mini = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=4096, random_state=0).fit(x)
            labels = mini.predict(x)
            t_mini = time.perf_counter() - t
            inertia = ((x - mini.cluster_centers_[labels]) ** 2).sum() / full.inertia_
            print(f"{n:>8,} {k:>3} {t_full:>8.2f} {t_mini:>8.2f} {t_full / t_mini:>8.1f}x {inertia:>8.3f} "
                  f"{adjusted_rand_score(full.labels_, labels):>6.3f}", flush=True)


if __name__ == "__main__":
    main()
