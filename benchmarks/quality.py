"""The quality table: imgsim's latents against the baselines on each evaluation collection.

For every collection under --eval (built by benchmarks/make_eval_sets.py), trains a model with
the default settings on that collection (as a user would on their own folder), then prints
leave-one-out precision@k (k = views per source - 1, at most 10) and mAP for the latents and
each baseline, computed in the same run, and the label-free twin-retrieval measure the run
reported on its held-out images.

    .venv/bin/python benchmarks/make_eval_sets.py
    .venv/bin/python benchmarks/quality.py [--eval data/eval] [--only photos] [--epochs E]
    .venv/bin/python benchmarks/quality.py --only photos-hard-8 --setting min_steps=300 --setting view_grey=0
    .venv/bin/python benchmarks/quality.py --only photos --setting batch_size=16 --json out.jsonl
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from make_eval_sets import precision_k  # noqa: E402

from imgsim import Settings  # noqa: E402
from imgsim.inputs.collection import Skipped, iter_decoded, scan_folder  # noqa: E402
from imgsim.learning.fit import fit_autoencoder  # noqa: E402
from imgsim.learning.model import compile_encoder, keras  # noqa: E402
from imgsim.runs import evaluation  # noqa: E402

TWIN = ("twin_recall@1", "twin_recall@10", "twin_mrr")


def apply_override(assignment: str) -> None:
    """`module.NAME=value` or `module.NAME.key=value` (a dict entry) on an imgsim module, for experiments."""
    target, value = assignment.split("=", 1)
    module, name, *key = target.split(".")
    if (module, name) in {("model", "VIEWS"), ("model", "LOSS_WEIGHTS"), ("fit", "LEARNING_RATE")}:
        raise SystemExit(f"--set {target}: training knobs are Settings fields now; use --setting (view_*, loss_*, "
                         "learning_rate, stage_filters, ...)")
    mod = importlib.import_module(f"imgsim.learning.{module}")  # model or fit
    value = ast.literal_eval(value)
    if key:
        getattr(mod, name)[key[0]] = value
    else:
        setattr(mod, name, value)


class PrecisionProbe(keras.callbacks.Callback):
    """precision@k of the labelled collection after each epoch, beside the label-free measure in the logs."""

    def __init__(self, paths, labels, k, size):
        super().__init__()
        self.labels, self.k, self.values = labels, k, []
        decoded = [batch for _, batch, _, _ in iter_decoded([str(p) for p in paths], size, 64, 2)]
        self.images = np.concatenate(decoded)

    def on_epoch_end(self, epoch, logs=None):
        encode = compile_encoder(self.model.encoder)
        vectors = np.concatenate([encode(self.images[i:i + 256]) for i in range(0, len(self.images), 256)])
        self.values.append(evaluation.precision_at_k(vectors, self.labels, self.k))


def agreement(history: dict) -> str:
    """Spearman correlation, over epochs, of the label-free measures with precision@k."""
    from scipy.stats import spearmanr

    probe = history.get("probe_precision") or []
    parts = []
    for name in TWIN:
        values = history.get(name) or []
        if len(values) == len(probe) >= 3:
            parts.append(f"{name} {spearmanr(values, probe).statistic:+.2f}")
    return (f"over {len(probe)} epochs, Spearman with precision: " + ", ".join(parts)) if parts else "too few epochs"


def score(folder: Path, settings: Settings, baselines_cache: dict) -> tuple[list[dict], dict, int]:
    """Train on the folder as `imgsim train` does (fit, then encode every file); rows for the latents and
    the baselines, the run's history, k."""
    paths, labels = evaluation.labelled_images(folder)
    k = precision_k(labels)
    files = [f.path for f in scan_folder(folder)]  # the order `imgsim train` sees
    probe = PrecisionProbe(paths, labels, k, settings.image_size)
    autoencoder, history = fit_autoencoder(files, settings.replace(images=folder), Skipped(), lambda *a: None, 0.85,
                                           callbacks=[probe])
    history["probe_precision"] = probe.values
    encode = compile_encoder(autoencoder.get_layer("encoder"))
    vectors = []
    for indices, images, _, failures in iter_decoded([str(p) for p in paths], settings.image_size, 64, settings.workers):
        assert not failures, failures
        vectors.append(encode(images))
    vectors = np.concatenate(vectors)  # the metrics are cosine: no need to normalise
    if folder not in baselines_cache:
        baselines_cache[folder] = evaluation.baselines(paths)
    rows = evaluation.evaluate({"imgsim latents": vectors, **baselines_cache[folder]}, labels, k=k)
    history["per_label"], history["confusions"] = per_label(vectors, labels, k)
    history["worst"] = history["per_label"][:4]
    return rows, history, k


def per_label(vectors, labels, k: int) -> tuple[list[tuple[str, float]], list[tuple[str, str, int]]]:
    """Each label's precision@k, worst first, and the confusions: (label, the label found instead, how often
    among the k nearest of that label's images), most frequent first."""
    from collections import Counter

    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    neighbours = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(vectors).kneighbors(
        return_distance=False)
    found = labels[neighbours]
    hits = (found == labels[:, None]).mean(axis=1)
    precision = sorted((float(hits[labels == name].mean()), str(name)) for name in np.unique(labels))
    wrong = Counter((str(a), str(b)) for a, row in zip(labels, found) for b in row if b != a)
    return ([(name, round(value, 3)) for value, name in precision],
            [(a, b, n) for (a, b), n in wrong.most_common()])


def worst_labels(vectors, labels, k: int, count: int = 4) -> list[tuple[str, float]]:
    """The labels whose images find the fewest of their own kind among their k nearest (cosine)."""
    return per_label(vectors, labels, k)[0][:count]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=ROOT / "data" / "eval")
    parser.add_argument("--only", action="append", help="collection name(s) to run (default: all)")
    parser.add_argument("--epochs", type=int, help="override the default epochs")
    parser.add_argument("--image-size", type=int, help="override the default image size")
    parser.add_argument("--set", action="append", default=[], help="experiment: module.NAME[.key]=literal (a constant)")
    parser.add_argument("--setting", action="append", default=[], help="experiment: Settings field=literal")
    parser.add_argument("--json", type=Path, help="also write each collection's figures to this file (JSON lines)")
    args = parser.parse_args(argv)
    for assignment in args.set:
        apply_override(assignment)
    collections = sorted(p for p in args.eval.iterdir() if p.is_dir() and not p.name.startswith(".")) if args.eval.is_dir() else []
    collections = [c for c in collections if not args.only or c.name in args.only]
    if not collections:
        print(f"{args.eval}: no collections; run benchmarks/make_eval_sets.py first", file=sys.stderr)
        return 1
    if args.set:
        print("overrides: " + ", ".join(args.set))
    cache = {}
    for folder in collections:
        fields = {k: ast.literal_eval(v) for k, v in (a.split("=", 1) for a in args.setting)}
        settings = Settings().replace(epochs=args.epochs, image_size=args.image_size, **fields)
        start = time.perf_counter()
        rows, history, k = score(folder, settings, cache)
        seconds = time.perf_counter() - start
        ours = rows[0][f"precision@{k}"]
        best = max(rows[1:], key=lambda row: row[f"precision@{k}"])
        twin = ", ".join(f"{name} {history.get('best_' + name, float('nan')):.3f}" for name in TWIN)
        print(f"\n== {folder.name}: {len(evaluation.labelled_images(folder)[0])} images; trained {history.get('steps')} steps "
              f"({len(history.get('loss', []))} epochs, best {history.get('best_epoch')}) at "
              f"{history.get('train_images_per_second')} images/s, {seconds:.0f} s with encoding and baselines; fit "
              f"{history.get('fit_seconds')} s, {history.get('fit_cpu_seconds')} CPU s; load "
              f"{' '.join(open('/proc/loadavg').read().split()[:3]) if Path('/proc/loadavg').exists() else '?'}")
        print(evaluation.format_table(rows))
        print(f"label-free (held-out {history.get('holdout_images')} images): {twin}")
        print("per epoch: precision " + " ".join(f"{v:.3f}" for v in history["probe_precision"])
              + "; twin_mrr " + " ".join(f"{v:.3f}" for v in history.get("twin_mrr", [])))
        print(f"label-free vs precision@{k} {agreement(history)}")
        print("hardest: " + ", ".join(f"{name} {value:.3f}" for name, value in history["worst"]))
        print("per label: " + ", ".join(f"{name} {value:.2f}" for name, value in history["per_label"]))
        print("confusions (label -> label found instead: times among the k nearest): " + ", ".join(
            f"{a}->{b} {n}" for a, b, n in history["confusions"][:10]))
        print(f"imgsim - best baseline ({best['name']}): {ours - best[f'precision@{k}']:+.3f} precision@{k}")
        sys.stdout.flush()
        if args.json:
            record = {"collection": folder.name, "k": k, "overrides": args.set + args.setting, "rows": rows,
                      "seconds": round(seconds, 1), **{n: history.get(n) for n in
                      ("steps", "early_steps", "train_images_per_second", "fit_seconds", "fit_cpu_seconds", "best_epoch",
                       "probe_precision",
                       "worst", "per_label", "confusions",
                       *TWIN, *(f"best_{t}" for t in TWIN))}}
            with open(args.json, "a") as out:
                out.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
