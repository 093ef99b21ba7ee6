"""One query's latency with and without the re-check of its top answers, over 10,000 images; prints figures.

A model trained on an evaluation collection (benchmarks/quality_rerank.py's, or any `imgsim train` folder
with its collection) is copied to a temporary folder, `imgsim index` adds its local features, and its
images are replicated (each copy's latent moved by a little noise, its features the original's) into a
version of --count images that shares the model file. Then query files from the collection (not in the
version: their paths differ) are answered as `imgsim query` answers them (read, decode, encode, search;
with the re-check also the query's features and the check of rerank.CANDIDATES candidates), with and
without the re-check in turn, so both see the same load. Wall and CPU time per query, p50 and p99, and
the re-check's own parts. Target (issue 32): p50 <= 50 ms with re-checking at 10,000 images.

    .venv/bin/python benchmarks/bench_rerank.py --model data/eval-models/photos-hard-8 \\
        --images data/eval/photos-hard-8 [--count 10000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from imgsim import Settings  # noqa: E402


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def replicated(model_dir: Path, images: Path, count: int, work: Path) -> Path:
    """A version of `count` images: the trained collection's, replicated with noisy latents and their features."""
    from imgsim.runs.indexing import index
    from imgsim.search import rerank
    from imgsim.storage import store
    from imgsim.storage.engines import choose_engine
    from imgsim.storage.keypoints import KeypointStore, save_segment, segments_of
    from imgsim.storage.manifest import Manifest
    from imgsim.storage.records import Records
    from imgsim.storage.store import save_collection

    source = work / "source"
    shutil.copytree(model_dir, source, ignore=shutil.ignore_patterns(".lock", "staging"))
    index(Settings(model_dir=source, images=images))
    version = store.load_version(source)
    found = KeypointStore(source, rerank.LAYOUT, segments_of(version.manifest, rerank.LAYOUT))
    n = len(version)
    take = np.arange(count) % n
    rng = np.random.default_rng(0)
    vectors = version.vectors[take] + rng.normal(0, 0.02, (count, version.vectors.shape[1])).astype(np.float32)
    paths = [f"/replica/{i // n:03d}/{Path(version.paths[r]).name}" for i, r in enumerate(take.tolist())]
    records = Records.build(paths, version.records.sizes[take], version.records.mtimes[take],
                            [f"{i:040x}" for i in range(count)], version.groups[take], version.map2d[take])
    target = work / "replicated"
    with store.writer_lock(target):
        entries, state = save_collection(target, choose_engine("auto", count), records, vectors)
        columns = found.gather(version.ids[take])
        columns["ids"] = records.ids
        keypoints = rerank.manifest_entry([save_segment(target, rerank.LAYOUT, columns)])
        manifest = Manifest(kind="train", settings=version.manifest["settings"], images_root="/replica",
                            libraries=version.manifest.get("libraries") or {}, keypoints=keypoints)
        store.write_version(target, manifest=manifest, records=entries, engine=state, centres=version.centres,
                            history=version.history, save_model=lambda path: store.link_or_copy(version.model_path, path))
    return target


def percentiles(values) -> str:
    values = np.asarray(values) * 1000
    return f"p50 {np.percentile(values, 50):.1f} ms, p99 {np.percentile(values, 99):.1f} ms"


def measure(model: Path, queries: list[Path], scope: str) -> dict:
    from imgsim.inputs.images import read_bytes
    from imgsim.search import Searcher

    searcher = Searcher.load(model)
    searcher.query(str(queries[0]), 8, scope)  # loads the features, traces the encoder
    times = {True: ([], []), False: ([], [])}
    for path in queries:
        for recheck in (True, False):
            wall, cpu = time.perf_counter(), time.process_time()
            searcher.query(str(path), 8, scope, data=read_bytes(path), recheck=recheck)
            times[recheck][0].append(time.perf_counter() - wall)
            times[recheck][1].append(time.process_time() - cpu)
    return times


def parts(model: Path, queries: list[Path]) -> str:
    """The re-check's own parts: the query's features, then the check of the candidates, CPU p50."""
    from imgsim.inputs.images import decode, read_bytes
    from imgsim.search import Searcher, rerank

    searcher = Searcher.load(model)
    store = searcher.keypoints
    describe, check = [], []
    for path in queries:
        image = decode(read_bytes(path), searcher.image_size)
        start = time.process_time()
        found = rerank.query_features(image)
        describe.append(time.process_time() - start)
        ids = [i for i, _ in searcher.engine.search(searcher.encode(image[None])[0], rerank.CANDIDATES)]
        start = time.process_time()
        rerank.agreement(store, found, ids)
        check.append(time.process_time() - start)
    return (f"query features CPU p50 {np.median(describe) * 1000:.1f} ms; check of {rerank.CANDIDATES} candidates "
            f"CPU p50 {np.median(check) * 1000:.1f} ms")


def worst_case(repeats: int = 20) -> str:
    """The check's most work: a query whose every candidate is a picture like it, all of whose keypoints match (the
    same view of a busy photograph, stored 50 times), so that every match goes on to the geometric fit. CPU p50."""
    from imgsim.features import local
    from imgsim.features.matching import agreeing
    from imgsim.inputs.demo import augment, source_photos
    from imgsim.search import rerank

    picture = augment(source_photos()["grass"], np.random.default_rng(0), local.SIDE, area=(0.6, 0.8), colour=0.3)
    query = rerank.query_features(np.asarray(picture, np.float32) / 255)
    stacked = local.stack([query.plain] * rerank.CANDIDATES)
    columns = (stacked["points"], stacked["angles"], local.scales_of(stacked["levels"]), stacked["descriptors"],
               stacked["counts"])
    times = []
    for _ in range(repeats):
        start = time.process_time()
        inliers, _ = agreeing([query.plain, query.mirrored], *columns)
        times.append(time.process_time() - start)
    return (f"worst case ({len(query.plain)} query keypoints, {rerank.CANDIDATES} candidates each agreeing on "
            f"{int(inliers.min())}): CPU p50 {np.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder trained on --images")
    parser.add_argument("--images", type=Path, required=True, help="the collection it was trained on")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    from imgsim.runs.evaluation import labelled_images

    queries = labelled_images(args.images)[0]
    queries = [queries[i] for i in np.random.default_rng(1).permutation(len(queries))[:args.queries]]
    with tempfile.TemporaryDirectory(prefix="imgsim-bench-rerank-") as work:
        model = replicated(args.model, args.images, args.count, Path(work))
        print(f"{args.count:,} images (replicated from {args.images.name}), {len(queries)} query files; {load()}")
        for scope in ("cluster", "all"):
            times = measure(model, queries, scope)
            for recheck in (False, True):
                wall, cpu = times[recheck]
                print(f"  scope {scope}, {'with' if recheck else 'without'} re-check: wall {percentiles(wall)}; "
                      f"CPU {percentiles(cpu)}")
            print(f"  ({load()})")
        print("  " + parts(model, queries) + f" ({load()})")
        print("  " + worst_case() + f" ({load()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
