"""The labelling code before issue 29 on the same models and protocol as bench_labelling.py: accuracy, classes asked,
share >= 0.9 and its accuracy, and review's flags on the same slipped labels (8 draws, 5 and 10 %).

    PYTHONPATH=/path/to/a/checkout/before/issue/29 python benchmarks/bench_labelling_before.py faces photos ...

Standalone (it must run against a checkout without imgsim.labelling.calibration, which bench_labelling.py
imports), so it repeats bench_labelling's simulated person and `slipped_labels`; models from /work/data/models-29.
"""
import os
import sys
from pathlib import Path

import numpy as np

root = Path(os.environ["PYTHONPATH"])
sys.path.insert(0, str(root))
from imgsim import labelling
from imgsim.runs import evaluation
from imgsim.storage import store
from imgsim.storage.annotations import ImageLabel

ROUNDS, DRAWS = 4, 8

def truth_of(version, folder):
    paths, labels = evaluation.labelled_images(folder)
    by_path = {str(Path(p).resolve()): label for p, label in zip(paths, labels)}
    return np.array([by_path[p] for p in version.paths])

def play(version, truth, budget, graph):
    labels = {}
    sizes = [budget // ROUNDS + (1 if r < budget % ROUNDS else 0) for r in range(ROUNDS)]
    prop = labelling.propagate(version, labels, graph)
    for size in sizes:
        if not size:
            continue
        for s in labelling.suggest(version, size, prop, graph):
            labels[int(version.ids[s.row])] = ImageLabel(str(truth[s.row]))
        prop = labelling.propagate(version, labels, graph)
    named = np.array([prop.name(r) for r in range(len(version))], dtype=object)
    person = prop.person
    sure = (~person) & (prop.confidence >= 0.9)
    return (float((named == truth).mean()), len(set(truth[person].tolist())), float(sure.mean()),
            float((named[sure] == truth[sure]).mean()) if sure.any() else None, labels)

def slipped_labels(labels, share, rng):  # as benchmarks/bench_labelling.py
    ids = sorted(labels)
    classes = sorted({label.label for label in labels.values()})
    slipped = set(rng.choice(ids, max(1, round(share * len(ids))), replace=False).tolist())
    return ({i: ImageLabel(str(rng.choice([c for c in classes if c != labels[i].label]))) if i in slipped
             else labels[i] for i in ids}, slipped)

def review(version, labels, graph, share):
    tp = fp = fn = 0
    for draw in range(DRAWS):
        noisy, slipped = slipped_labels(labels, share, np.random.default_rng(draw))
        prop = labelling.propagate(version, noisy, graph)
        flagged = {int(version.ids[f.row]) for f in labelling.review(version, prop, graph) if f.kind == "mistake"}
        tp, fp, fn = tp + len(flagged & slipped), fp + len(flagged - slipped), fn + len(slipped - flagged)
    p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return 2 * p * r / max(p + r, 1e-12), p, r, tp, fp, fn

print(f"# {root}, load {os.getloadavg()}")
for name in sys.argv[1:]:
    version = store.load_version(Path("/work/data/models-29") / name)
    truth = truth_of(version, Path("/work/data/eval") / name)
    graph = labelling.neighbour_graph(version)
    k = len(set(truth.tolist()))
    for b in (1, 2, 3):
        acc, found, share, right, labels = play(version, truth, b * k, graph)
        line = (f"{name:15s} b={b} imgsim {acc:.3f} classes asked {found}/{k} p>=0.9 {share:.0%} "
                f"right {'-' if right is None else round(right, 3)}")
        if b == 2:
            for s in (0.05, 0.10):
                f1, p, r, tp, fp, fn = review(version, labels, graph, s)
                line += f"\n    review {s:.0%}: F1 {f1:.2f} (P {p:.2f} R {r:.2f}; {tp} found, {fp} false, {fn} missed)"
        print(line, flush=True)
print(f"# load after {os.getloadavg()}")
