"""The near-copy scan attacked: CPU seconds and peak memory of a scan on crafted collections, against a normal one.

    .venv/bin/python benchmarks/bench_duplicates_attack.py [--model data/eval-models/photos] [--flat 4000]

Collections (made here from the shipped photographs; nothing downloaded):
- normal: 100 crops of the photographs at random places and sizes (200-400 px), saved as JPEG;
- framed: 100 crafted PNGs, one random-noise frame shared by all (200 x 200) around a different 100 x 100 picture
  each: every whole-picture hash alike, every picture full of keypoints that all agree on the frame;
- flat: 4,000 one-colour 16 x 16 PNGs (every hash alike, no keypoints).
Each is scanned (imgsim.duplicates.scan_duplicates at the default threshold, its default budget) in a process of its
own, with latents from a trained model when --model names one (the images encoded first) and with latents that call
every image alike (an attacker's best case: every pair a latent neighbour). Printed: the scan's CPU seconds (its
process, all threads), the candidate pairs, what the budget left, and the peak resident memory during the scan above
what the process held before it (the model, the vectors). Results go to benchmarks/duplicates-attack-results.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "duplicates-attack-results.txt"


def build(kind: str, folder: Path, n: int) -> None:
    from PIL import Image

    from imgsim.inputs.demo import source_photos

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    photos = list(source_photos().values())
    noise = rng.integers(0, 256, (200, 200, 3), np.uint8)
    for i in range(n):
        if kind == "flat":
            Image.new("RGB", (16, 16), tuple(int(v) for v in rng.integers(0, 256, 3))).save(folder / f"{i:05d}.png")
            continue
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = rng.uniform(0.3, 0.6)
        x, y = rng.uniform(0, 1 - side) * w, rng.uniform(0, 1 - side) * h
        crop = photo.crop((round(x), round(y), round(x + side * w), round(y + side * h)))
        if kind == "normal":
            scale = rng.uniform(200, 400) / max(crop.size)
            crop.resize((round(crop.width * scale), round(crop.height * scale))).save(folder / f"{i:05d}.jpg", quality=90)
        else:
            canvas = noise.copy()
            canvas[50:150, 50:150] = np.asarray(crop.convert("RGB").resize((100, 100)))
            Image.fromarray(canvas).save(folder / f"{i:05d}.png")


def version_of(folder: Path, model: Path | None):
    """A version-like object over the folder: latents from the model, or every one alike (model None)."""
    import hashlib
    from types import SimpleNamespace

    from imgsim.storage.engines import make_engine
    from imgsim.storage.records import Records

    paths = [str(p) for p in sorted(folder.iterdir())]
    if model is not None:
        from imgsim.search import Searcher

        kept, vectors, _, failures = Searcher.load(model).encode_files(paths, workers=1)
        assert not failures, failures
        paths = [paths[i] for i in kept]
    else:
        vectors = np.ones((len(paths), 32), np.float32)
    records = Records.build(paths, [os.path.getsize(p) for p in paths], [os.stat(p).st_mtime_ns for p in paths],
                            [hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in paths], np.zeros(len(paths), int),
                            np.zeros((len(paths), 2)))
    engine = make_engine("exact").add(records.ids, np.asarray(vectors, np.float32), records.groups)
    return SimpleNamespace(records=records, engine=lambda: engine, manifest={})


def one(folder: Path, model: str) -> dict:
    """Scan one collection in this process; what it cost."""
    import psutil

    from imgsim.duplicates import DEFAULT_THRESHOLD, scan_duplicates

    version = version_of(folder, None if model == "alike" else Path(model))
    me = psutil.Process()
    before, peak, done = me.memory_info().rss, [0], threading.Event()

    def watch():
        while not done.wait(0.01):
            peak[0] = max(peak[0], me.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cpu = time.process_time()
    scan = scan_duplicates(version, DEFAULT_THRESHOLD)
    groups = scan.groups(DEFAULT_THRESHOLD)
    cpu = time.process_time() - cpu
    done.set()
    watcher.join()
    peak[0] = max(peak[0], me.memory_info().rss)
    return {"images": len(version.records), "cpu_s": round(cpu, 2), "candidates": len(scan.candidates),
            "by_source": scan.stats.candidates, "unchecked": scan.stats.unchecked, "budget_s": scan.stats.budget_s,
            "groups": len(groups), "peak_above_mb": round((peak[0] - before) / 2**20, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "data" / "eval-models" / "photos"))
    parser.add_argument("--flat", type=int, default=4000)
    parser.add_argument("--one", nargs=2, metavar=("FOLDER", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(Path(args.one[0]), args.one[1])))
        return 0
    models = (["alike"] + ([args.model] if (Path(args.model) / "CURRENT").exists() else []))
    lines = [f"# benchmarks/bench_duplicates_attack.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} CPU cores (shared), load {os.getloadavg()[0]:.1f} at start; model {args.model}"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for kind, n in (("normal", 100), ("framed", 100), ("flat", args.flat)):
            build(kind, Path(tmp) / kind, n)
            for model in models:
                out = subprocess.run([sys.executable, __file__, "--one", str(Path(tmp) / kind), model],
                                     capture_output=True, text=True, check=True)
                rows[kind, model] = json.loads(out.stdout.strip().splitlines()[-1])
                label = "latents alike" if model == "alike" else "model latents"
                lines.append(f"{kind:7} {label:14} {json.dumps(rows[kind, model])}")
                print(lines[-1], flush=True)
        for model in models:
            normal, framed = rows["normal", model]["cpu_s"], rows["framed", model]["cpu_s"]
            lines.append(f"framed / normal CPU ({'latents alike' if model == 'alike' else 'model latents'}): "
                         f"{framed / max(normal, 1e-9):.2f} (target <= 2)")
        lines.append(f"load at the end {os.getloadavg()[0]:.1f}")
    text = "\n".join(lines) + "\n"
    print(text)
    args.results.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
