"""Figures for docs/scale.md: per-worker encode rate, Ray's overhead per batch, Milvus server inserts, FAISS IVF-PQ.

    nice -n 10 .venv/bin/python benchmarks/bench_scale.py encode            # one process: decode + encode images/s
    nice -n 10 .venv/bin/python benchmarks/bench_scale.py ray               # the same batches through Ray Data
    nice -n 10 .venv/bin/python benchmarks/bench_scale.py milvus            # rows/s into a Milvus 2.3.5 server
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_scale.py faiss --n 10000000  # IVF-PQ, ~15 min here

The model is the default architecture (128 px, 128-d latent) with fresh weights: speed does not
depend on training. Images are the demo collection's (imgsim.inputs.demo, 128 px JPEGs of the shipped
photographs). The CPU is shared by other work: every figure is noisy, and is printed with the
machine's load. FAISS vectors are clustered like benchmarks/bench_engines.py's (200 clusters,
32-d intrinsic, unit length), generated a million at a time so that only the index is held.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
DIM, CLUSTERS, INTRINSIC = 128, 200, 32


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def demo_images(n: int, folder: Path) -> list[str]:
    from imgsim.inputs.demo import build_demo

    build_demo(folder, n=n, seed=1)
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))


def fresh_model(folder: Path) -> Path:
    from imgsim.learning.model import build_autoencoder

    path = folder / "model.keras"
    build_autoencoder(128, 128).save(path)
    return path


# --- encoding, in one process and over Ray ---------------------------------------------------------


def bench_encode(args) -> None:
    from imgsim.learning.encoding import encode_files
    from imgsim.learning.model import compile_encoder, load_encoder

    with tempfile.TemporaryDirectory() as tmp:
        paths = demo_images(args.images, Path(tmp) / "demo")
        encoder = compile_encoder(load_encoder(fresh_model(Path(tmp))))
        encode_files(encoder, paths[:64], 128, workers=1)  # trace once
        for workers in (1, 2):
            start = time.perf_counter()
            kept, _, _, _ = encode_files(encoder, paths, 128, workers=workers)
            seconds = time.perf_counter() - start
            print(f"encode  in one process, {workers} decode thread(s): {len(kept)} images in {seconds:.1f} s = "
                  f"{len(kept) / seconds:.0f} images/s ({1000 * seconds / len(kept):.2f} ms an image; {load()})")


class TimedEncoder:
    """imgsim.runs.distributed.Encoder that also reports the seconds its call spent (decode + encode) per batch."""

    def __init__(self, model: bytes, size: int):
        from imgsim.runs.distributed import Encoder

        self.inner = Encoder(model, size)

    def __call__(self, batch):
        start = time.time()  # wall clock: the driver on the same machine compares against it
        out = self.inner(batch)
        out["started"] = np.full(len(out["i"]), start)
        out["seconds"] = np.full(len(out["i"]), time.time() - start)
        return out


def bench_ray(args) -> None:
    """Ray's cost per batch: everything in the steady state that is not the actor's own decode + encode.

    One actor on a local one-CPU Ray, so batches run one after another. From the moment the actor
    starts its second batch (the first traces the model) to the moment the driver holds the last
    batch, every second the actor is not decoding or encoding is Ray's: handing it the next batch
    of paths, moving vectors back through the object store, the driver's iteration.
    """
    import ray
    import ray.data

    from imgsim.runs.distributed import model_bytes

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory() as tmp:
        paths = demo_images(args.images, Path(tmp) / "demo")
        model = model_bytes(fresh_model(Path(tmp)))
        ray.init(num_cpus=1, object_store_memory=200_000_000, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        for batch_size in args.batches:
            items = ray.data.from_items([{"i": i, "path": p} for i, p in enumerate(paths)],
                                        override_num_blocks=max(1, -(-len(paths) // batch_size)))
            out = items.map_batches(TimedEncoder, fn_constructor_kwargs={"model": model, "size": 128},
                                    batch_size=batch_size, batch_format="numpy", concurrency=1, num_cpus=1)
            batches = []
            start = time.time()
            for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
                batches.append((float(batch["started"][0]), float(batch["seconds"][0]), len(batch["i"])))
            done = time.time()
            batches.sort()
            steady = batches[1:]
            wall = done - steady[0][0]
            work = sum(s for _, s, _ in steady)
            images = sum(n for _, _, n in steady)
            overhead = (wall - work) / work
            print(f"ray     batch {batch_size}: {images} images in {len(steady)} steady batches; "
                  f"wall {1000 * wall / images:.2f} ms an image, the actor's decode+encode {1000 * work / images:.2f} ms; "
                  f"Ray's overhead {100 * overhead:.1f} % of the encode time ({1000 * (wall - work) / len(steady):.0f} ms "
                  f"a batch); first batch began {batches[0][0] - start:.1f} s after the start ({load()})")
        ray.shutdown()


# --- Milvus server -------------------------------------------------------------------------------


def bench_milvus(args) -> None:
    """Rows a second into a Milvus server this run starts (tests/servers.running_milvus: authentication on, the
    default login replaced by a random password at once; Milvus 2.3.5 listens on every interface whatever it is told)."""
    from servers import running_milvus

    from imgsim.storage.engines import make_engine

    with running_milvus("imgsim-milvus-bench-") as server:
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((args.rows, DIM)).astype(np.float32)
        groups = rng.integers(0, 4, args.rows)
        engine = make_engine("milvus", uri=server.uri, token=server.token, collection="bench")
        start = time.perf_counter()
        for part in range(0, args.rows, 10_000):
            engine.add(np.arange(part, min(part + 10_000, args.rows)), vectors[part:part + 10_000],
                       groups[part:part + 10_000])
        inserted = time.perf_counter() - start
        engine.save(server.data_dir)  # flush
        flushed = time.perf_counter() - start
        engine.client.release_collection("bench")
        engine.client.load_collection("bench")
        loaded = time.perf_counter() - start
        queries = vectors[rng.choice(args.rows, 100, replace=False)] + 0.1 * rng.standard_normal((100, DIM)).astype(np.float32)
        engine.search(queries[0], 10)
        t = time.perf_counter()
        for q in queries:
            engine.search(q, 10)
        per_query = (time.perf_counter() - t) / len(queries)
        print(f"milvus  server 2.3.5, pymilvus {__import__('pymilvus').__version__}: {args.rows} rows x {DIM} "
              f"(4 groups = partitions, 10,000 an add): inserted in {inserted:.1f} s = {args.rows / inserted:,.0f} rows/s; "
              f"with flush {flushed:.1f} s = {args.rows / flushed:,.0f} rows/s; indexed and loaded after {loaded:.1f} s; "
              f"one query at a time {1000 * per_query:.1f} ms ({load()})")


# --- FAISS IVF-PQ at scale -----------------------------------------------------------------------


def chunks(n: int, size: int = 1_000_000, seed: int = 0):
    """Clustered unit vectors, `size` at a time, with the same centres throughout."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    bases = (rng.standard_normal((CLUSTERS, INTRINSIC, DIM)) * 0.35).astype(np.float32)
    for number, start in enumerate(range(0, n, size)):
        part = np.random.default_rng(seed + 1 + number)
        m = min(size, n - start)
        labels = part.integers(0, CLUSTERS, m)
        vectors = np.empty((m, DIM), np.float32)
        for c in range(CLUSTERS):
            rows = np.flatnonzero(labels == c)
            vectors[rows] = centres[c] + part.standard_normal((len(rows), INTRINSIC)).astype(np.float32) @ bases[c]
        vectors += 0.2 * part.standard_normal((m, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        yield start, vectors


def bench_faiss(args) -> None:
    import faiss

    faiss.omp_set_num_threads(1)  # OpenMP threads spin: on a shared, loaded CPU one thread is faster
    n, nq, k = args.n, 200, 10
    key = f"IVF{args.nlist},PQ{args.m}x8,Refine(SQ8)"
    rng = np.random.default_rng(99)
    first = next(chunks(min(n, 1_000_000)))[1]
    print(f"  first chunk generated ({first.shape[0]:,} rows)", flush=True)
    queries = first[rng.choice(len(first), nq, replace=False)] + 0.05 * rng.standard_normal((nq, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = faiss.index_factory(DIM, key, faiss.METRIC_INNER_PRODUCT)
    start = time.perf_counter()
    index.train(first[rng.choice(len(first), min(len(first), 64 * args.nlist), replace=False)])
    trained = time.perf_counter() - start
    print(f"  trained {key} in {trained:.0f} s", flush=True)
    best_scores = np.full((nq, k), -np.inf, np.float32)
    best_ids = np.zeros((nq, k), np.int64)
    start = time.perf_counter()
    for offset, vectors in chunks(n):
        index.add(vectors)
        scores = queries @ vectors.T  # exact answers, kept as a running top-k
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, 1)], 1)
        merged_ids = np.concatenate([best_ids, part + offset], 1)
        order = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores, best_ids = np.take_along_axis(merged_scores, order, 1), np.take_along_axis(merged_ids, order, 1)
        print(f"  added {offset + len(vectors):,} ({time.perf_counter() - start:.0f} s, peak RSS {rss_gb():.1f} GB)",
              flush=True)
    added = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        faiss.write_index(index, f"{tmp}/index")
        size = os.path.getsize(f"{tmp}/index")
    print(f"faiss   {key} over {n:,} x {DIM}: trained in {trained:.0f} s, added in {added:.0f} s; index {size / 1e9:.2f} GB "
          f"on disk ({size / n:.0f} B a vector); peak RSS {rss_gb():.1f} GB")
    ivf = faiss.extract_index_ivf(index)
    for nprobe in args.nprobes:
        for k_factor in (4, 8):
            ivf.nprobe = nprobe
            index.k_factor = k_factor
            faiss.omp_set_num_threads(1)
            index.search(queries[:5], k)
            t = time.perf_counter()
            found = np.vstack([index.search(q[None], k)[1] for q in queries])
            ms = 1000 * (time.perf_counter() - t) / nq
            recall = np.mean([len(set(f) & set(b)) / k for f, b in zip(found, best_ids)])
            print(f"faiss   nprobe {nprobe:3d}, refine x{k_factor}: recall@10 {recall:.3f}, {ms:.2f} ms a query "
                  f"(one at a time, one thread; {load()})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("encode")
    p.add_argument("--images", type=int, default=1024)
    p = sub.add_parser("ray")
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batches", type=int, nargs="+", default=[256])
    p = sub.add_parser("milvus")
    p.add_argument("--rows", type=int, default=100_000)
    p = sub.add_parser("faiss")
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--m", type=int, default=32)
    p.add_argument("--nprobes", type=int, nargs="+", default=[16, 32])
    args = parser.parse_args()
    print(f"imgsim bench_scale {args.what}: {os.cpu_count()} CPU cores, {load()}", flush=True)
    {"encode": bench_encode, "ray": bench_ray, "milvus": bench_milvus, "faiss": bench_faiss}[args.what](args)


if __name__ == "__main__":
    main()
