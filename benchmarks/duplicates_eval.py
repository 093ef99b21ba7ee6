"""Near-duplicate finding measured against perceptual hashing and raw pixels, on labelled copies; and the scan's time.

    .venv/bin/python benchmarks/duplicates_eval.py                 # mild sets and edit sets (seeds 1, 2) + 100K scan
    .venv/bin/python benchmarks/duplicates_eval.py --seeds 1 --edits --scan 0   # one mild set only
    .venv/bin/python benchmarks/duplicates_eval.py --seeds --edits 1 2 --scan 0  # the real-world edit sets only

1. A labelled collection per seed, built from the photographs shipped in scikit-image and
   scikit-learn (nothing downloaded). Per photograph, two "originals" (its left and right 55 %:
   they overlap on 18 % of each one's area) and one singleton (its middle top, < 50 % overlap with
   either). Per original: 4 near copies, each one of: JPEG re-encode at quality 50-95, resize
   50-200 %, crop <= 10 % of each side, brightness +-10 %, rotation <= 3 degrees (then saved as
   JPEG 75-95 or PNG), and for every other original an exact copy (the same bytes under another
   name). An original and its copies are one family; duplicate pairs are pairs of one family.
   Hard negatives: the other original and the singleton of the same photograph (other crops, not
   copies) and the other photographs (several are similar scenes: grass/gravel/brick textures,
   coins/page/text scans, micrographs).
2. imgsim is trained on it with its default settings (imgsim.runs.training.train); then pair
   precision, recall and F1 for imgsim (find_duplicates: latent neighbours confirmed by pHash;
   swept over its cosine threshold, then over its pHash distance (6-26 in steps of 4); and its latents alone), a
   64-bit pHash (imagehash.phash,
   Hamming distance; default 10 = imagededup's max_distance_threshold) and raw pixels (32x32
   grey, mean removed, cosine), each at its best threshold and at its default. Every method's
   pairs come from the same grouping (connected components of the pairs above its threshold).
3. The real-world edit sets (benchmarks/make_edit_set.py: borders and letterboxes, caption bars,
   watermarks, 10-25 % crops, 2-5 degree turns, colour grading, screenshots, two edits together;
   hard negatives: burst shots shifted by 30-40 %, other crops of the photograph), encoded by the
   model trained on the photographs' crops in data/eval-models/photos (reused: not trained here),
   against pHash, dHash and wHash (imagehash, 64 bits) at their default (10 bits) and best
   thresholds, overall and per edit kind, and imgsim with latents that propose nothing (random vectors).
4. The scan alone: find_duplicates over 100K synthetic 128-d vectors in the faiss engine, and the
   verification's cost per image and per pair.

Results go to benchmarks/duplicates-results.txt. Trained models are kept in benchmarks/out/
duplicates/ and reused when present (delete the folder to retrain).
"""

from __future__ import annotations

import argparse
import io
import itertools
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "out" / "duplicates"
RESULTS = ROOT / "benchmarks" / "duplicates-results.txt"
ORIGINAL_SIDE = 320
PHASH_DEFAULT = 10
COSINES = np.round(np.r_[np.arange(0.80, 0.95, 0.01), np.arange(0.95, 1.0001, 0.0025)], 4)  # thresholds swept


# --- the labelled collection ------------------------------------------------------------------

def save(img: Image.Image, path: Path, rng) -> None:
    if rng.random() < 0.5:
        img.save(path.with_suffix(".jpg"), quality=int(rng.integers(75, 96)))
    else:
        img.save(path.with_suffix(".png"))


def near_copy(img: Image.Image, kind: str, rng) -> tuple[Image.Image, bytes | None]:
    """One near copy of `img`; returns (image, JPEG bytes when the copy is a re-encode)."""
    w, h = img.size
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(50, 96)))
        return img, buf.getvalue()
    if kind == "resize":
        scale = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        return img.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.LANCZOS), None
    if kind == "crop":
        left, right = rng.uniform(0, 0.05, 2) * w
        top, bottom = rng.uniform(0, 0.05, 2) * h
        return img.crop((round(left), round(top), round(w - right), round(h - bottom))), None
    if kind == "brightness":
        return ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1)), None
    if kind == "rotate":
        turned = img.rotate(rng.uniform(-3, 3), Image.Resampling.BICUBIC)
        m = 0.03  # cut the corners the turn leaves empty
        return turned.crop((round(w * m), round(h * m), round(w * (1 - m)), round(h * (1 - m)))), None
    raise ValueError(kind)


def fit_side(img: Image.Image, side: int = ORIGINAL_SIDE) -> Image.Image:
    scale = side / max(img.size)
    return img.resize((max(8, round(img.width * scale)), max(8, round(img.height * scale))), Image.Resampling.LANCZOS)


def build_collection(folder: Path, seed: int) -> dict[str, str]:
    """Write the collection; returns path -> family (originals and their copies share one)."""
    from imgsim.inputs.demo import source_photos

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    families = {}
    kinds = ["jpeg", "resize", "crop", "brightness", "rotate"]
    for name, photo in source_photos().items():
        w, h = photo.size
        jitter = rng.uniform(-0.03, 0.03)  # each seed cuts the photographs a little differently
        regions = {"left": (0, 0, 0.55 + jitter, 1), "right": (0.45 + jitter, 0, 1, 1), "middle": (0.25, 0, 0.75, 0.7)}
        for part, (x0, y0, x1, y1) in regions.items():
            original = fit_side(photo.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h))))
            family = f"{name}-{part}"
            stem = folder / name / f"{part}"
            stem.parent.mkdir(exist_ok=True)
            save(original, stem, rng)
            first = next(stem.parent.glob(f"{part}.*"))
            families[str(first)] = family
            if part == "middle":
                continue  # the singleton: a hard negative for the two originals
            if rng.random() < 0.5:
                exact = stem.parent / f"{part} copy{first.suffix.replace('.jpg', '.jpeg')}"
                shutil.copyfile(first, exact)
                families[str(exact)] = family
            for i, kind in enumerate(rng.permutation(kinds)[:4]):
                copy, data = near_copy(original, str(kind), rng)
                path = stem.parent / f"{part}-{i}-{kind}"
                if data is not None:
                    path = path.with_suffix(".jpg")
                    path.write_bytes(data)
                else:
                    save(copy, path, rng)
                    path = next(stem.parent.glob(f"{part}-{i}-{kind}.*"))
                families[str(path)] = family
    return {str(Path(p).resolve()): f for p, f in families.items()}


# --- pairs and scores -------------------------------------------------------------------------

def group_pairs(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {(a, b) if a < b else (b, a) for g in groups for a, b in itertools.combinations(g, 2)}


def components(n: int, edges) -> list[list[int]]:
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges:
        parent[find(a)] = find(b)
    out = {}
    for i in range(n):
        out.setdefault(find(i), []).append(i)
    return [g for g in out.values() if len(g) > 1]


def prf(predicted: set, truth: set) -> tuple[float, float, float]:
    tp = len(predicted & truth)
    p = tp / len(predicted) if predicted else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def similarity_groups(sim: np.ndarray, threshold: float) -> list[list[int]]:
    a, b = np.nonzero(np.triu(sim >= threshold, 1))
    return components(len(sim), zip(a.tolist(), b.tolist()))


def phash_matrix(paths) -> np.ndarray:
    """Negated Hamming distance between 64-bit pHashes (higher is more similar, like the cosines)."""
    import imagehash

    bits = []
    for p in paths:
        with Image.open(p) as img:
            bits.append(imagehash.phash(img.convert("RGB")).hash.reshape(-1))
    bits = np.asarray(bits, np.int32)
    return -(bits[:, None, :] != bits[None, :, :]).sum(-1).astype(np.float32)


def pixel_matrix(paths, size: int = 32) -> np.ndarray:
    rows = []
    for p in paths:
        with Image.open(p) as img:
            v = np.asarray(img.convert("L").resize((size, size), Image.Resampling.BILINEAR), np.float32).ravel()
        v -= v.mean()
        rows.append(v / max(np.linalg.norm(v), 1e-6))
    rows = np.asarray(rows)
    return rows @ rows.T


def sweep(groups_at, thresholds, truth) -> list[tuple[float, tuple]]:
    return [(t, prf(group_pairs(groups_at(t)), truth)) for t in thresholds]


def evaluate(seed: int, lines: list[str], default_threshold: float) -> dict:
    from imgsim import Settings, duplicates
    from imgsim.runs.training import train
    from imgsim.storage import store

    folder = OUT / f"seed{seed}"
    images, model_dir = folder / "images", folder / "models"
    if not images.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        build_collection(images, seed)
    families = {str(p.resolve()): p.parent.name + "-" + p.name.split("-")[0].split(" ")[0].split(".")[0]
                for p in sorted(images.rglob("*")) if p.is_file()}
    train_seconds = None
    if not (model_dir / "CURRENT").exists():
        start = time.perf_counter()
        train(Settings(model_dir=model_dir, images=images))
        train_seconds = time.perf_counter() - start
    version = store.load_version(model_dir)
    paths = version.paths
    index = {p: i for i, p in enumerate(paths)}
    labels = [families[p] for p in paths]
    truth = group_pairs([[i for i, lab in enumerate(labels) if lab == f] for f in set(labels)])

    scan = duplicates.scan_duplicates(version, float(COSINES[0]))  # one scan serves every threshold from its floor

    def imgsim_groups(threshold):
        return [[index[m.path] for m in g.images] for g in scan.groups(threshold)]

    phash, pixels = phash_matrix(paths), pixel_matrix(paths)
    results = {
        "imgsim find_duplicates (cosine)": (sweep(imgsim_groups, COSINES, truth), default_threshold),
        "pHash 64-bit (Hamming)": (sweep(lambda t: similarity_groups(phash, -t), range(33), truth), PHASH_DEFAULT),
        "raw pixels 32x32 grey (cosine)": (sweep(lambda t: similarity_groups(pixels, t),
                                                 np.round(np.r_[np.arange(0.5, 0.8, 0.01), COSINES], 4), truth),
                                           default_threshold),
    }
    n_neg = len(paths) * (len(paths) - 1) // 2 - len(truth)
    lines.append(f"seed {seed}: {len(paths)} images, {len(set(labels))} families, {len(truth)} duplicate pairs, "
                 f"{n_neg} non-duplicate pairs; model: {version.manifest['settings']}"
                 + (f"; trained in {train_seconds:.0f} s" if train_seconds else " (model reused)"))
    lines.append(f"{'method':34} {'threshold':>10} {'precision':>9} {'recall':>7} {'F1':>6}")
    for method, (curve, default) in results.items():
        best_t, best = max(curve, key=lambda c: (c[1][2], c[0]))
        at_default = dict(curve).get(default) or {round(t, 4): v for t, v in curve}.get(round(default, 4))
        for label, t, (p, r, f) in (("best", best_t, best), ("default", default, at_default)):
            lines.append(f"{method:34} {label + ' ' + format(t, 'g'):>10} {p:9.3f} {r:7.3f} {f:6.3f}")
    for method in ("imgsim find_duplicates (cosine)",):
        curve = results[method][0]
        lines.append(f"{method.strip()}, F1 by threshold: "
                     + "  ".join(f"{t:g}:{f:.3f}" for t, (_, _, f) in curve if t >= 0.9))
    lines.append("")
    return {m: {"curve": c, "default": d} for m, (c, d) in results.items()}


# --- real-world edits (benchmarks/make_edit_set.py) --------------------------------------------

HASHES = ("phash", "dhash", "whash")
EDIT_MODEL = ROOT / "data" / "eval-models" / "photos"  # trained on the photographs' crops (data/eval/photos)


def edit_version(images: Path, model_dir: Path):
    """The edit set encoded by a trained model (reused, never trained here unless absent), as a version-like object."""
    import hashlib

    from imgsim import Settings
    from imgsim.search import Searcher
    from imgsim.storage.engines import make_engine
    from imgsim.storage.records import Records

    if not (model_dir / "CURRENT").exists():
        from imgsim.runs.training import train

        model_dir = OUT / "edits-model"
        if not (model_dir / "CURRENT").exists():
            train(Settings(model_dir=model_dir, images=images, epochs=4))
    searcher = Searcher.load(model_dir)
    paths = [str(p.resolve()) for p in sorted(images.rglob("*.*"))]
    kept, vectors, sha1s, failures = searcher.encode_files(paths, workers=1)
    assert not failures, failures
    paths = [paths[i] for i in kept]
    records = Records.build(paths, [Path(p).stat().st_size for p in paths], [Path(p).stat().st_mtime_ns for p in paths],
                            [hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in paths], np.zeros(len(paths), int),
                            np.zeros((len(paths), 2)))
    engine = make_engine("exact").add(records.ids, vectors, records.groups)
    return SimpleNamespace(records=records, engine=lambda: engine, manifest={}, paths=paths), searcher.version.id


def hash_matrix(paths, kind: str) -> np.ndarray:
    """Negated Hamming distance between 64-bit imagehash hashes of the whole pictures."""
    import imagehash

    fn = {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash}[kind]
    bits = []
    for p in paths:
        with Image.open(p) as img:
            bits.append(fn(img.convert("RGB")).hash.reshape(-1))
    bits = np.asarray(bits, np.int32)
    return -(bits[:, None, :] != bits[None, :, :]).sum(-1).astype(np.float32)


def by_kind(predicted: set, truth: set, kinds: list[str], names, families) -> dict[str, tuple]:
    """Per kind of copy: precision, recall, F1 of the pairs (copy, its original) against the pairs made with the
    copy that are either that one or wrong (pairs among one family's copies are left out); for a hard
    negative, the number of pairs wrongly made with it. 'all': every pair of the set."""
    out = {"all": prf(predicted, truth)}
    for name in names:
        def counted(pair):
            a, b = pair
            if kinds[b] == name:
                a, b = b, a
            return kinds[a] == name and (kinds[b] == "original" or (pair not in truth))
        p, t = {q for q in predicted if counted(q)}, {q for q in truth if counted(q)}
        out[name] = prf(p, t) if t else (len(p),)
    return out


def evaluate_edits(seed: int, lines: list[str], threshold: float) -> None:
    from make_edit_set import KINDS, NEGATIVES, build, labels

    from imgsim import duplicates
    from imgsim.storage.engines import make_engine

    images = OUT / f"edits-seed{seed}"
    if not images.is_dir():
        build(images, seed)
    version, model_id = edit_version(images, EDIT_MODEL)
    paths = version.paths
    label = labels(images)
    families, kinds = [label[p][0] for p in paths], [label[p][1] for p in paths]
    truth = group_pairs([[i for i, f in enumerate(families) if f == fam] for fam in set(families)])
    names = ["exact", *KINDS, *NEGATIVES]

    def pairs_of(groups):
        return group_pairs([[paths.index(m.path) for m in g.images] for g in groups])

    start = time.process_time()
    scan = duplicates.scan_duplicates(version, threshold)
    scan_seconds = time.process_time() - start
    groups = scan.groups(threshold)
    full = pairs_of(groups)
    evidence = {}
    for g in groups:
        for m in g.images:
            evidence[m.match] = evidence.get(m.match, 0) + 1
    # the same scan with latents that propose nothing (random vectors): what the pictures alone find
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(len(paths), 32)).astype(np.float32)
    blind_engine = make_engine("exact").add(version.records.ids, noise / np.linalg.norm(noise, axis=1, keepdims=True),
                                            version.records.groups)
    blind = SimpleNamespace(records=version.records, engine=lambda: blind_engine, manifest={}, paths=paths)
    start = time.process_time()
    blind_scan = duplicates.scan_duplicates(blind, threshold)
    blind_seconds = time.process_time() - start
    methods = {"imgsim (default)": {"default": full},
               "imgsim, latents proposing nothing": {"default": pairs_of(blind_scan.groups(threshold))}}
    thresholds = {}
    for kind in HASHES:
        matrix = hash_matrix(paths, kind)
        curve = {t: group_pairs(similarity_groups(matrix, -t)) for t in range(33)}
        best = max(curve, key=lambda t: (prf(curve[t], truth)[2], -t))
        thresholds[kind] = (PHASH_DEFAULT, best, curve)
        methods[f"{kind} (default <= {PHASH_DEFAULT})"] = {"default": curve[PHASH_DEFAULT]}
        methods[f"{kind} (best <= {best})"] = {"default": curve[best]}
    n_neg = len(paths) * (len(paths) - 1) // 2 - len(truth)
    lines.append(f"edit set seed {seed}: {len(paths)} images, {len(set(families))} families "
                 f"({len(set(f for f in families if '/' not in f))} photographs + their hard negatives), "
                 f"{len(truth)} duplicate pairs, {n_neg} non-duplicate pairs; model {EDIT_MODEL.name}/{model_id} "
                 f"(reused); threshold {threshold}; scan {scan_seconds:.1f} s of CPU ({scan.stats.summary()}; "
                 f"candidates by source {scan.stats.candidates}); with latents proposing nothing "
                 f"{blind_seconds:.1f} s ({blind_scan.stats.summary()})")
    lines.append("members by evidence: " + ", ".join(f"{k or '(none)'} {v}" for k, v in sorted(evidence.items())))
    lines.append(f"{'method':40} {'precision':>9} {'recall':>7} {'F1':>6}")
    for method, pairs in methods.items():
        p, r, f = prf(pairs["default"], truth)
        lines.append(f"{method:40} {p:9.3f} {r:7.3f} {f:6.3f}")
    lines.append("")
    lines.append("per edit kind: P/R/F1 of (copy, its original) pairs, counting as wrong every pair made with the copy "
                 "outside its family; for a hard negative, the wrong pairs made with it. Hashes at their default (10), "
                 "at their best threshold over the whole set, and 'best/kind': their best F1 over thresholds 0-32 for "
                 "that kind alone (the threshold).")
    header = f"{'kind':11} {'imgsim P/R/F1':>17} {'blind F1':>8}"
    for kind in HASHES:
        header += f" {kind + ' dflt':>11} {kind + ' best':>11} {'best/kind':>11}"
    lines.append(header)
    ours = by_kind(full, truth, kinds, names, families)
    before = by_kind(methods["imgsim, latents proposing nothing"]["default"], truth, kinds, names, families)
    per_hash = {}
    for kind in HASHES:
        default, best, curve = thresholds[kind]
        per_t = {t: by_kind(curve[t], truth, kinds, names, families) for t in curve}
        per_hash[kind] = (per_t[default], per_t[best], per_t)
    for name in ["all", *names]:
        if len(ours[name]) == 1:  # a hard negative: wrong pairs made with it
            row = f"{name:11} {ours[name][0]:>17} {before[name][0]:>8}"
            for kind in HASHES:
                default_row, best_row, per_t = per_hash[kind]
                row += f" {default_row[name][0]:>11} {best_row[name][0]:>11} {'':>11}"
        else:
            p, r, f = ours[name]
            row = f"{name:11} {f'{p:.3f}/{r:.3f}/{f:.3f}':>17} {before[name][2]:8.3f}"
            for kind in HASHES:
                default_row, best_row, per_t = per_hash[kind]
                t_best = max(per_t, key=lambda t: (per_t[t][name][2], -t))
                row += f" {default_row[name][2]:11.3f} {best_row[name][2]:11.3f} {f'{per_t[t_best][name][2]:.3f} ({t_best})':>11}"
        lines.append(row)
    lines.append("")


# --- the scan at scale ------------------------------------------------------------------------

def scan_timing(n: int, dim: int, lines: list[str]) -> None:
    """find_duplicates over n synthetic vectors in the faiss engine: clusters, with 1 % planted near copies."""
    from imgsim import features
    from imgsim.duplicates import find_duplicates, finding, signatures
    from imgsim.storage.engines import make_engine
    from imgsim.storage.records import Records

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(256, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 256, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    planted = rng.choice(n, n // 100, replace=False)
    copies = planted[rng.permutation(len(planted))]
    vectors[copies[: len(copies) // 2]] = vectors[copies[len(copies) // 2:]] + 0.01 * rng.normal(size=(len(copies) // 2, dim))
    paths = [f"/nonexistent/{i:06d}.jpg" for i in range(n)]
    records = Records.build(paths, np.full(n, 1000), np.arange(n), [f"{i:040x}" for i in range(n)], np.zeros(n, int),
                            np.zeros((n, 2)))
    start = time.perf_counter()
    engine = make_engine("faiss").add(records.ids, vectors, records.groups)
    engine.search(vectors[0], 1)  # the first search builds the ANN indexes: timed as the build
    build = time.perf_counter() - start
    version = SimpleNamespace(records=records, engine=lambda: engine)
    real_read = signatures.read_all
    blank = features.Signature(np.zeros(8, np.uint8), np.zeros(8, np.uint8), np.zeros((8, 8, 3), np.uint8), None)
    # synthetic vectors have no files: every one reads as the same flat picture, so every latent pair is confirmed
    signatures.read_all = lambda paths, progress=None, deadline=None: ([blank] * len(paths), len(paths), False)
    try:
        start = time.perf_counter()
        groups = find_duplicates(version)  # above CONTENT_SCAN_LIMIT: no content hashes unless asked
        seconds = time.perf_counter() - start
    finally:
        signatures.read_all = real_read
    sample = sorted((OUT / "edits-seed1").rglob("*.*"))[:120] or sorted((OUT / "seed1" / "images").rglob("*.*"))[:120]
    costs = {}
    for name, fn in (("pHash", features.picture_hash), ("signature", features.signature)):
        start = time.perf_counter()
        results = [fn(str(path)) for path in sample]
        costs[name] = (time.perf_counter() - start) / max(len(sample), 1) * 1000
    points = [k.keypoints for k in results if k is not None and k.keypoints is not None]
    pairs = list(zip(points[:-1], points[1:])) + [(k, k) for k in points[:40]]
    start = time.perf_counter()
    for a, b in pairs:
        features.same_scene(a, b)
    per_pair = (time.perf_counter() - start) / max(len(pairs), 1) * 1000
    lines.append(f"scan: find_duplicates over {n:,} synthetic {dim}-d vectors, faiss engine ({engine.params}): "
                 f"{seconds:.1f} s (engine built beforehand in {build:.1f} s); {len(groups)} groups "
                 f"({len(copies) // 2} planted pairs); target <= 60 s.")
    lines.append(f"per image, read once (the edit set's 230-500 px files, one thread): pHash alone "
                 f"{costs['pHash']:.1f} ms; its whole signature (decode, frame, two pHashes, ORB keypoints) "
                 f"{costs['signature']:.1f} ms (every image, up to {finding.CONTENT_SCAN_LIMIT:,} by default; kept per "
                 f"version); per pair, matching + RANSAC {per_pair:.2f} ms ({len(pairs)} pairs, {len(pairs) - 40} "
                 "different pictures, 40 the same)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2], help="mild sets (0.3.0's evaluation)")
    parser.add_argument("--edits", type=int, nargs="*", default=[1, 2], help="real-world edit sets (make_edit_set.py)")
    parser.add_argument("--scan", type=int, default=100_000, help="vectors for the scan timing (0: skip)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the table")
    args = parser.parse_args(argv)
    import os

    from imgsim.duplicates import DEFAULT_THRESHOLD

    lines = [(f"# benchmarks/duplicates_eval.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} CPU cores (shared, loaded); DEFAULT_THRESHOLD = {DEFAULT_THRESHOLD}"), ""]
    for seed in args.seeds:
        evaluate(seed, lines, DEFAULT_THRESHOLD)
        print("\n".join(lines), flush=True)
    for seed in args.edits:
        evaluate_edits(seed, lines, DEFAULT_THRESHOLD)
        print("\n".join(lines[-40:]), flush=True)
    if args.scan:
        scan_timing(args.scan, 128, lines)
    text = "\n".join(lines) + "\n"
    print(text)
    args.results.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
