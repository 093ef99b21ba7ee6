"""Re-checking the top answers (imgsim.search.rerank): precision@k with and without it, same trained model.

For each evaluation collection (benchmarks/make_eval_sets.py) with a model trained on it by `imgsim train`
(--models DIR holds one model folder per collection name; a missing one is trained there with the
defaults), the model folder is copied to a temporary folder and `imgsim index` adds the local features
a version made before them lacks. Then every image queries the collection as `imgsim query --scope all`
does (itself left out) through imgsim.search.Searcher, once with the re-check and once without, on the
same latent: precision@k (k = views - 1, at most 10, as benchmarks/quality.py), the baselines of
benchmarks/quality.py in the same run, the worst classes, the commonest confusions, and how many of
the re-checked candidates were called the same scene rightly and wrongly.

    .venv/bin/python benchmarks/quality_rerank.py --models data/models [--eval data/eval] [--only photos-hard-8]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from make_eval_sets import precision_k  # noqa: E402

from imgsim import Settings  # noqa: E402
from imgsim.runs import evaluation  # noqa: E402


def model_for(collection: Path, models: Path, work: Path) -> Path:
    """A copy of the collection's trained model (trained first if there is none) with local features added."""
    from imgsim.runs.indexing import index
    from imgsim.runs.training import train

    source = models / collection.name
    if not (source / "CURRENT").is_file():
        print(f"training a model on {collection} in {source} (default settings)", flush=True)
        train(Settings(model_dir=source, images=collection))
    copy = work / collection.name
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".lock", "staging"))
    index(Settings(model_dir=copy, images=collection))  # no new images: adds the features a version lacks
    return copy


def answers(searcher, paths, labels, recheck: bool, n: int):
    """Each query's n first results as labels, their inliers (-1: not re-checked) and same-scene verdicts, and
    the CPU seconds per query."""
    from imgsim.inputs.images import read_bytes

    row_label = {str(p): label for p, label in zip(paths, labels)}
    found, inliers, same, cpu = [], [], [], 0.0
    for path in paths:
        data = read_bytes(path)
        start = time.process_time()
        result = searcher.query(path, n, "all", data=data, recheck=recheck)
        cpu += time.process_time() - start
        found.append([row_label[h.path] for h in result.results])
        inliers.append([-1 if h.inliers is None else h.inliers for h in result.results])
        same.append([bool(h.same_scene) for h in result.results])
    return np.array(found), np.array(inliers), np.array(same), cpu / len(paths)


def report(name: str, labels: np.ndarray, found: np.ndarray, k: int) -> tuple[float, dict]:
    right = found[:, :k] == labels[:, None]
    per_class = {c: float(right[labels == c].mean()) for c in np.unique(labels)}
    confusions = collections.Counter((q, w) for q, row in zip(labels, found[:, :k]) for w in row if w != q)
    worst = sorted(per_class.items(), key=lambda item: item[1])[:5]
    print(f"  {name}: precision@{k} {right.mean():.3f}; worst " + ", ".join(f"{c} {v:.2f}" for c, v in worst))
    print("    commonest confusions (query -> wrong answer, of its top k): "
          + ", ".join(f"{q}->{w} {c}" for (q, w), c in confusions.most_common(6)))
    return float(right.mean()), per_class


def score(collection: Path, models: Path, work: Path) -> dict:
    from imgsim.search import Searcher, rerank

    paths, labels = evaluation.labelled_images(collection)
    labels = np.asarray(labels)
    k = precision_k(labels)
    searcher = Searcher.load(model_for(collection, models, work))
    n = max(k, rerank.CANDIDATES)
    plain, _, _, cpu_plain = answers(searcher, paths, labels, False, n)
    expansion, rerank.EXPANSION = rerank.EXPANSION, 0.0
    try:
        unexpanded, _, _, _ = answers(searcher, paths, labels, True, n)
    finally:
        rerank.EXPANSION = expansion
    hops, rerank.HOPS = rerank.HOPS, 0
    try:
        direct, _, _, _ = answers(searcher, paths, labels, True, n)
    finally:
        rerank.HOPS = hops
    checked, inliers, same, cpu_checked = answers(searcher, paths, labels, True, n)
    base = evaluation.evaluate(evaluation.baselines(paths), labels, k=k)
    print(f"\n== {collection.name}: {len(paths)} images, {len(set(labels))} classes, k={k}, model {searcher.version.id} "
          f"(features for {len(searcher.keypoints or [])} images)")
    before, classes_before = report("latents alone", labels, plain, k)
    alone, _ = report("re-check, the rest in the latents' order (EXPANSION 0)", labels, unexpanded, k)
    report("re-check and expansion, no answer's features asked (HOPS 0)", labels, direct, k)
    after, classes_after = report(f"re-check, the rest by the expanded query (EXPANSION {rerank.EXPANSION}, HOPS {rerank.HOPS})", labels,
                                  checked, k)
    truth = checked == labels[:, None]
    moved = sorted(((classes_after[c] - classes_before[c], c) for c in classes_before), reverse=True)
    print(f"  re-check: {after - before:+.3f} precision@{k}; called the same scene: {int((same & truth).sum())} right, "
          f"{int((same & ~truth).sum())} wrong, of {int((inliers >= 0).sum())} candidates compared "
          f"({int((inliers.max(1, initial=-1) < 0).sum())} queries with none); most agreeing keypoints on a wrong "
          f"answer {int(inliers[~truth].max(initial=-1))}")
    print("  classes moved most: " + ", ".join(f"{c} {d:+.2f}" for d, c in moved[:3])
          + "; least: " + ", ".join(f"{c} {d:+.2f}" for d, c in moved[-3:]))
    print("  baselines: " + ", ".join(f"{row['name']} {row[f'precision@{k}']:.3f}" for row in base))
    print("  CPU per query (decode, encode, search; with: and the query's features and the re-check): "
          f"{cpu_plain * 1000:.1f} ms without, {cpu_checked * 1000:.1f} ms with")
    sys.stdout.flush()
    return {"collection": collection.name, "k": k, "latents": before, "unexpanded": alone, "rechecked": after}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=ROOT / "data" / "eval")
    parser.add_argument("--models", type=Path, default=ROOT / "data" / "eval-models",
                        help="one model folder per collection name (trained there when missing)")
    parser.add_argument("--only", action="append", help="collection name(s) to run (default: all)")
    args = parser.parse_args(argv)
    collections_ = sorted(p for p in args.eval.iterdir() if p.is_dir() and not p.name.startswith("."))
    collections_ = [c for c in collections_ if not args.only or c.name in args.only]
    if not collections_:
        print(f"{args.eval}: no collections; run benchmarks/make_eval_sets.py first", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="imgsim-rerank-") as work:
        for collection in collections_:
            rows.append(score(collection, args.models, Path(work)))
    print("\n| collection | k | latents alone | re-check, no expansion | re-check (default) | change |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['collection']} | {row['k']} | {row['latents']:.3f} | {row['unexpanded']:.3f} | "
              f"{row['rechecked']:.3f} | {row['rechecked'] - row['latents']:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
