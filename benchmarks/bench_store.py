"""A growing collection: what `index` writes and how long it takes, and a query process's memory at scale.

    .venv/bin/python benchmarks/bench_store.py                      # 100,000 + 1,000 images; 1,000,000 vectors
    .venv/bin/python benchmarks/bench_store.py --base 20000 --vectors 200000   # a quick look

1. `index` adding 1,000 images to a 100,000-image collection. The collection is real files (hard
   links to a few small JPEGs, so that 100,000 of them cost seconds to make), its version holds
   synthetic vectors under a real tiny model; the 1,000 new files are real images. Prints the
   bytes `index` wrote (new segment files + the version folder) against the new data (1,000
   vectors and records), and its time against encoding the 1,000 alone.
   Targets: bytes <= 2x the new data plus manifests; time <= encode time + 5 s.
2. Peak RSS of a query process over N vectors (fresh process: load the version, one query), per
   engine, against a process that loads TensorFlow and the model alone.
   Target: <= TensorFlow's baseline + 1.2 x the vector bytes.

Each measurement runs in its own process, so that peak RSS is its own (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "store"


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def folder_files(folder: Path) -> dict[str, tuple[int, int]]:
    """path -> (inode, size) of every file: a hard link to an older file is no new data."""
    return {str(p): (p.stat().st_ino, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


def tiny_model(model_dir: Path, images: Path) -> None:
    """A real model (32 px) trained on a few images: only its encoder matters here."""
    from imgsim import Settings
    from imgsim.runs.training import train

    train(Settings(model_dir=model_dir, images=images, image_size=32, latent_dim=128, epochs=1, batch_size=8,
                   clusters=4, workers=2))


def synthetic_version(model_dir: Path, paths: list[str], dim: int, engine: str, seed: int = 0) -> None:
    """Replace the current version's collection with `paths` and clustered synthetic vectors (no encoding)."""
    import numpy as np

    from imgsim.inputs.collection import scan_folder
    from imgsim.learning.groups import predict_groups
    from imgsim.storage import store
    from imgsim.storage.manifest import Manifest
    from imgsim.storage.records import Records

    parent = store.load_version(model_dir)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 64, len(paths))] + 0.3 * rng.normal(size=(len(paths), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    infos = {f.path: f for f in scan_folder(Path(paths[0]).parent)} if paths and Path(paths[0]).exists() else {}
    sizes = [infos[p].size if p in infos else 1 for p in paths]
    mtimes = [infos[p].mtime_ns if p in infos else 1 for p in paths]
    records = Records.build(paths, sizes, mtimes, [f"{i:040x}" for i in range(len(paths))],
                            predict_groups(vectors, parent.centres), rng.normal(size=(len(paths), 2)))
    entries, state = store.save_collection(model_dir, engine, records, vectors)
    manifest = Manifest(kind="train", settings=parent.manifest["settings"], libraries=parent.manifest.get("libraries", {}),
                        metrics=parent.manifest.get("metrics", {}), images_root=str(Path(paths[0]).parent) if paths else "")
    version = store.write_version(model_dir, manifest=manifest, records=entries, engine=state, centres=parent.centres,
                                  history={}, save_model=lambda p: store.link_or_copy(parent.model_path, p))
    print(f"  synthetic version {version}: {len(paths):,} images, {engine} engine", flush=True)


def child_encode(paths_file: str, model_dir: str) -> dict:
    from imgsim.search import Searcher

    paths = json.loads(Path(paths_file).read_text())
    searcher = Searcher.load(model_dir)
    searcher.encode_files(paths[:64])  # warm up
    start = time.perf_counter()
    searcher.encode_files(paths)
    return {"seconds": time.perf_counter() - start}


def child_index(images: str, model_dir: str) -> dict:
    from imgsim import Settings
    from imgsim.runs.indexing import index

    start = time.perf_counter()
    report = index(Settings(model_dir=model_dir, images=images))
    return {"seconds": time.perf_counter() - start, "added": report.added, "removed": report.removed,
            "rss_mb": peak_rss_mb()}


def child_baseline(model_dir: str) -> dict:
    """TensorFlow and the model alone: what any query process pays before the collection."""
    from imgsim.learning.model import compile_encoder, load_encoder
    from imgsim.storage import store

    version = store.load_version(model_dir)
    encode = compile_encoder(load_encoder(version.model_path))
    import numpy as np

    encode(np.zeros((1, version.image_size, version.image_size, 3), np.float32))
    return {"rss_mb": peak_rss_mb()}


def child_query(model_dir: str, query: str) -> dict:
    from imgsim.search import Searcher

    start = time.perf_counter()
    searcher = Searcher.load(model_dir)
    loaded = time.perf_counter() - start
    times = []
    for scope in ("all", "cluster") * 10:
        t = time.perf_counter()
        searcher.query(query, 10, scope)
        times.append(time.perf_counter() - t)
    times.sort()
    return {"load_s": loaded, "query_p50_ms": 1000 * times[len(times) // 2], "rss_mb": peak_rss_mb()}


def run_child(name: str, *args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", name, *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode:
        sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_files(folder: Path, n: int, sources: list[Path], prefix: str) -> list[str]:
    """n files named prefix-000001.jpg ..., hard links to the sources in turn (seconds for 100,000)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"{prefix}-{i:07d}.jpg"
        if not path.exists():
            os.link(sources[i % len(sources)], path)
        out.append(str(path))
    return out


def grow(base: int, added: int) -> None:
    from imgsim.inputs.demo import build_demo

    work = OUT / f"grow-{base}"
    shutil.rmtree(work, ignore_errors=True)
    seeds = build_demo(work / "seeds", n=64, size=64, seed=5)
    sources = sorted(seeds.rglob("*.jpg"))
    model_dir = work / "models"
    tiny_model(model_dir, seeds)
    photos = work / "photos"
    start = time.perf_counter()
    paths = make_files(photos, base, sources[:8], "base")
    print(f"  {base:,} files made in {time.perf_counter() - start:.1f} s", flush=True)
    synthetic_version(model_dir, paths, 128, "auto" if base < 20000 else "faiss")
    before = folder_files(model_dir)
    new = [str(photos / f"new-{i:05d}.jpg") for i in range(added)]
    for i, path in enumerate(new):  # real, distinct images: copies of the demo views, one byte apart
        data = sources[i % len(sources)].read_bytes()
        Path(path).write_bytes(data + i.to_bytes(4, "big"))
    (work / "new.json").write_text(json.dumps(new))
    encode = run_child("encode", work / "new.json", model_dir)
    indexed = run_child("index", photos, model_dir)
    after = folder_files(model_dir)
    old_inodes = {inode for inode, _ in before.values()}
    written = {p: size for p, (inode, size) in after.items() if inode not in old_inodes}
    manifests = sum(s for p, s in written.items() if p.endswith("manifest.json"))
    new_data = added * (128 * 4 + 8 + 8 + 8 + 40 + 8 + 8) + sum(len(json.dumps(p)) for p in new)
    total = sum(written.values())
    print(f"index: +{indexed['added']:,} images to {base:,}: wrote {total / 1e6:.2f} MB in {len(written)} files "
          f"({manifests / 1e3:.0f} kB of manifests); new data {new_data / 1e6:.2f} MB -> "
          f"{(total - manifests) / new_data:.2f}x the new data (target <= 2x)")
    print(f"index: {indexed['seconds']:.1f} s against {encode['seconds']:.1f} s to encode the {added:,} alone "
          f"(+{indexed['seconds'] - encode['seconds']:.1f} s; target <= +5 s); peak RSS {indexed['rss_mb']:.0f} MiB")
    for path, size in sorted(written.items(), key=lambda kv: -kv[1])[:6]:
        print(f"    {size / 1e3:9.1f} kB  {Path(path).relative_to(model_dir)}")


def memory(n: int, engines: list[str]) -> None:
    from imgsim.inputs.demo import build_demo

    work = OUT / f"memory-{n}"
    shutil.rmtree(work, ignore_errors=True)
    seeds = build_demo(work / "seeds", n=64, size=64, seed=5)
    query = sorted(seeds.rglob("*.jpg"))[0]
    baseline = None
    for engine in engines:
        model_dir = work / f"models-{engine}"
        tiny_model(model_dir, seeds)
        if baseline is None:
            baseline = run_child("baseline", model_dir)["rss_mb"]
            print(f"memory: TensorFlow + model alone: {baseline:.0f} MiB", flush=True)
        start = time.perf_counter()
        synthetic_version(model_dir, [f"/collection/photo-{i:07d}.jpg" for i in range(n)], 128, engine)
        built = time.perf_counter() - start
        result = run_child("query", model_dir, query)
        vector_mb = n * 128 * 4 / 2**20
        over = result["rss_mb"] - baseline
        print(f"memory: {engine:6s} {n:,} vectors ({vector_mb:.0f} MiB): query process peak {result['rss_mb']:.0f} MiB "
              f"= baseline + {over:.0f} MiB = {over / vector_mb:.2f}x the vector bytes (target <= 1.2x); "
              f"load {result['load_s']:.1f} s, query p50 {result['query_p50_ms']:.1f} ms; built in {built:.0f} s", flush=True)
        shutil.rmtree(model_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--base", type=int, default=100_000)
    parser.add_argument("--added", type=int, default=1_000)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--engines", default="exact,faiss")
    args = parser.parse_args()
    if args.child:
        name, *rest = args.child
        print(json.dumps({"encode": child_encode, "index": child_index, "baseline": child_baseline,
                          "query": child_query}[name](*rest)))
        return
    print(f"# bench_store: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}", flush=True)
    if args.base:
        grow(args.base, args.added)
    if args.vectors:
        memory(args.vectors, args.engines.split(","))


if __name__ == "__main__":
    main()
