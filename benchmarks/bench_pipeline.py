"""Pipeline throughput, query latency and peak memory, measured in one run; prints figures.

    .venv/bin/python benchmarks/bench_pipeline.py                 # 2,500 and 5,000 images at 512 px
    .venv/bin/python benchmarks/bench_pipeline.py --counts 500    # a quick look

Writes N 512x512 JPEGs (augmented views of the shipped photographs) under benchmarks/out/,
trains a model on a sample of them, and then, each in a fresh process so that peak RSS is its
own: the floors (decode-only and encode-only images/s), `index` of the whole folder (encode
stage and end to end, with peak RSS), and query latency (decode + encode + search of one file).
Targets on 2 CPU cores: indexing >= 50% of the slower floor; peak RSS of indexing 5K images
<= 1.5 GB and flat as N doubles; one query p50 <= 30 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child started by a
    parent holding a trained model would report the parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_collection(n: int, size: int) -> Path:
    from imgsim.inputs.demo import build_demo

    return build_demo(OUT / f"images-{n}-{size}", n=n, size=size, seed=11)


def child_floors(folder: str, model_dir: str) -> dict:
    """Decode-only and encode-only throughput, each alone, as the pipeline runs them."""
    import numpy as np

    from imgsim.inputs.collection import iter_decoded, scan_folder
    from imgsim.search import Searcher

    paths = [f.path for f in scan_folder(folder)]
    searcher = Searcher.load(model_dir)
    size = searcher.image_size
    start = time.perf_counter()
    for _ in iter_decoded(paths, size, batch_size=64, workers=2):
        pass
    decode = len(paths) / (time.perf_counter() - start)
    batch = np.random.default_rng(0).random((64, size, size, 3), dtype=np.float32)
    searcher.encode(batch)  # warm up the traced function
    reps = max(4, len(paths) // 64 // 4)
    start = time.perf_counter()
    for _ in range(reps):
        searcher.encode(batch)
    encode = reps * 64 / (time.perf_counter() - start)
    return {"decode_per_s": decode, "encode_per_s": encode}


def child_index(folder: str, model_dir: str) -> dict:
    """`index` of a whole folder new to the model: encode stage alone, then end to end."""
    from imgsim import Settings
    from imgsim.runs.indexing import index

    stages = {}

    def progress(fraction, message):
        message = str(message)  # an imgsim.core.progress.Event's text
        if message.startswith("encoding") and "start" not in stages:
            stages["start"] = time.perf_counter()
        if message == "mapping":
            stages["encoded"] = time.perf_counter()

    start = time.perf_counter()
    report = index(Settings(model_dir=model_dir, images=folder), progress)
    total = time.perf_counter() - start
    encode_seconds = stages["encoded"] - stages["start"]
    return {"images": report.added, "encode_stage_per_s": report.added / encode_seconds,
            "end_to_end_per_s": report.added / total, "end_to_end_s": total, "peak_rss_mb": peak_rss_mb()}


def child_query(folder: str, model_dir: str, count: int = 200) -> dict:
    import numpy as np

    from imgsim.inputs.collection import scan_folder
    from imgsim.search import Searcher

    paths = [f.path for f in scan_folder(folder)][:count]
    searcher = Searcher.load(model_dir)
    for p in paths[:5]:
        searcher.query(p, n=8)
    times = []
    for p in paths:
        start = time.perf_counter()
        searcher.query(p, n=8, scope="cluster")
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)), "queries": len(times)}


def run_child(kind: str, *args) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_base_model(folder: Path, model_dir: Path, sample: int) -> dict:
    """Train on the first `sample` images (2 epochs) so the floors and index have a real model."""
    from imgsim import Settings
    from imgsim.runs.training import train

    sample_dir = OUT / f"train-sample-{sample}"
    if not sample_dir.exists():
        files = sorted(folder.rglob("*.jpg"))[:sample]
        for f in files:
            (sample_dir / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, sample_dir / f.parent.name / f.name)
    shutil.rmtree(model_dir, ignore_errors=True)
    report = train(Settings(model_dir=model_dir, images=sample_dir, epochs=2, patience=5, min_steps=0))
    return {"train_images_per_s": report.metrics["train_images_per_second"], "train_images": report.images}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2500, 5000])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--train-sample", type=int, default=512)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        print(json.dumps({"floors": child_floors, "index": child_index, "query": child_query}[kind](*rest)))
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    folders = {n: make_collection(n, args.size) for n in args.counts}
    largest = folders[max(args.counts)]
    base = OUT / "model-base"
    trained = train_base_model(largest, base, args.train_sample)
    print(f"training: {trained['train_images_per_s']:.1f} images/s (on {trained['train_images']} images, 128 px)")
    floors = run_child("floors", largest, base)
    slower = min(floors["decode_per_s"], floors["encode_per_s"])
    print(f"floors: decode {floors['decode_per_s']:.0f} images/s, encode {floors['encode_per_s']:.0f} images/s")
    for n, folder in folders.items():
        model_dir = OUT / f"model-{n}"
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.copytree(base, model_dir)
        # Start from a version that knows none of these files, so `index` encodes all n.
        stats = run_child("index", folder, model_dir)
        print(f"index {n} images: encode stage {stats['encode_stage_per_s']:.0f} images/s "
              f"({stats['encode_stage_per_s'] / slower:.0%} of the slower floor), end to end "
              f"{stats['end_to_end_per_s']:.0f} images/s ({stats['end_to_end_s']:.1f} s incl. UMAP), "
              f"peak RSS {stats['peak_rss_mb']:.0f} MB")
    q = run_child("query", largest, OUT / f"model-{max(args.counts)}")
    print(f"query (decode + encode + search, {q['queries']} files of {args.size} px): "
          f"p50 {q['p50_ms']:.1f} ms, p95 {q['p95_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
