"""Label spreading over the kNN graph (Zhou et al. 2004): every image's label and confidence from a person's few.

A person's label is never changed; images the spreading cannot reach take the label of the most
similar labelled image, with a low confidence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from imgsim.labelling.graph import Graph, neighbour_graph
from imgsim.storage import store
from imgsim.storage.annotations import LabelStore

ALPHA_RANGE = (0.5, 0.99)  # label spreading's alpha: how far labels travel (reach_alpha)
ITERATIONS = 20  # at least; 3 / (1 - alpha) for a long reach, at most 3x this
# Confidence is a class's share of what reaches an image, beside an "unknown" label spread from this
# much on every unlabelled image: far from any person's label, unknown outweighs the classes, so a
# lone label does not make the whole collection 100 % sure. Measured at 2 labels a class: on photos
# 87 % of images reach 0.9 and 99 % of those are right (0.001: 92 % at 95 %; 0.01: 39 % at 100 %);
# it is a share, not a probability: on photos-hard-12 the 5 % at 0.9 are half wrong.
UNKNOWN_PRIOR = 0.003
CLASS_MASS = True  # each label's total in proportion to its share of the person's labels (Zhu et al. 2003)


@dataclass
class Propagation:
    """Every image's label (an index into `classes`, -1 for none), its confidence and where it comes from."""

    classes: list[str]
    label: np.ndarray  # (n,) int64
    confidence: np.ndarray  # (n,) float32 in [0, 1]; 1 for a person's label
    person: np.ndarray  # (n,) bool: the label is a person's
    scores: np.ndarray  # (n, c) float32: each class's share of what reached the image (the rest is "unknown")

    def __len__(self) -> int:
        return len(self.label)

    def name(self, row: int) -> str | None:
        return self.classes[self.label[row]] if self.label[row] >= 0 else None

    def source(self, row: int) -> str:
        return "person" if self.person[row] else "propagated" if self.label[row] >= 0 else "none"

    def sure(self, min_confidence: float) -> np.ndarray:
        """The rows whose propagated label is at least `min_confidence` sure (never a person's label)."""
        return np.flatnonzero(~self.person & (self.label >= 0) & (self.confidence >= min_confidence))

    def counts(self, min_confidence: float) -> dict[str, int]:
        """How many images a person labelled, how many are propagated at or above `min_confidence`, how many are unsure."""
        person, sure = int(self.person.sum()), len(self.sure(min_confidence))
        return {"person": person, "propagated": sure, "unsure": len(self) - person - sure}


def person_rows(version: store.Version, labels: dict) -> dict[int, str]:
    """Row -> the person's label, for the labelled images present in this version."""
    if not labels:
        return {}
    ids = np.fromiter(labels, np.int64, count=len(labels))
    rows = version.records.rows_of(ids)
    return {int(r): labels[int(i)].label for i, r in zip(ids.tolist(), rows.tolist()) if r >= 0}


def reach_alpha(labelled: int, images: int) -> float:
    """How far labels travel, from how many images each label must cover.

    Spreading is a random walk from the labels that restarts with probability 1 - alpha, so it
    reaches about 1 / (1 - alpha) images; that is set to images per label, within
    [ALPHA_RANGE]. Measured (benchmarks/bench_labelling.py): a fixed 0.99 flooded 21 classes
    of 8 images (photos-hard-8: 0.76 at 2 labels a class, 0.95 with 0.5), a fixed 0.5 left
    2 classes of 100 images under-covered (faces: 0.86, 0.94 with 0.99).
    """
    if labelled <= 0:
        return ALPHA_RANGE[1]
    return float(np.clip(1.0 - labelled / images, *ALPHA_RANGE))


def spread(graph: Graph, seeds: dict[int, int], n_classes: int, prior: float | None = None,
           alpha: float | None = None) -> np.ndarray:
    """Label spreading: F <- alpha S F + (1 - alpha) Y with S = D^-1/2 W D^-1/2; returns F, (n, c), or
    (n, c + 1) with a `prior`: a last column spread from `prior` on every unlabelled row (see `propagate`)."""
    n = len(graph)
    y = np.zeros((n, n_classes + (prior is not None)), np.float32)
    if seeds:
        y[list(seeds), list(seeds.values())] = 1.0
    if prior is not None:
        y[:, -1] = prior
        y[list(seeds), -1] = 0.0
    s = graph.transition()
    f = y.copy()
    alpha = reach_alpha(len(seeds), n) if alpha is None else alpha
    for _ in range(int(np.clip(np.ceil(3 / (1 - alpha)), ITERATIONS, 3 * ITERATIONS))):
        f = alpha * (s @ f) + (1 - alpha) * y
    return f


def propagate(version: store.Version, labels: dict | None = None, graph: Graph | None = None) -> Propagation:
    """Every image's label and confidence from the person's labels (`labels`: id -> ImageLabel; default: the store's).

    Images the spreading cannot reach (no path in the graph to a labelled image) take the label of
    the most similar labelled image, with its similarity as a low confidence.
    """
    labels = LabelStore(version.model_dir).load() if labels is None else labels
    graph = graph or neighbour_graph(version)
    given = person_rows(version, labels)
    classes = sorted(set(given.values()), key=str.casefold)
    n = len(version)
    person = np.zeros(n, bool)
    if not classes:
        return Propagation([], np.full(n, -1, np.int64), np.zeros(n, np.float32), person, np.zeros((n, 0), np.float32))
    index = {name: i for i, name in enumerate(classes)}
    seeds = {row: index[name] for row, name in given.items()}
    f = spread(graph, seeds, len(classes), prior=UNKNOWN_PRIOR)
    g = f[:, :-1]
    mass = g.sum(axis=1)
    if CLASS_MASS:
        wanted = np.bincount(list(seeds.values()), minlength=len(classes)) / len(seeds)
        g = g * (wanted / np.maximum(g.sum(axis=0), 1e-30))
    shares = np.divide(g, g.sum(axis=1, keepdims=True), out=np.zeros_like(g), where=mass[:, None] > 0)
    reach = np.divide(mass, f.sum(axis=1), out=np.zeros_like(mass), where=mass > 0)  # what is not "unknown"
    scores = shares * reach[:, None]
    label = scores.argmax(axis=1).astype(np.int64)
    confidence = scores.max(axis=1).astype(np.float32)
    unreached = np.flatnonzero(mass <= 0)
    if len(unreached):
        seed_rows = np.fromiter(seeds, np.int64)
        vectors = version.vectors
        sims = vectors[unreached] @ vectors[seed_rows].T  # n_unreached x n_labelled: small
        best = sims.argmax(axis=1)
        label[unreached] = [seeds[int(seed_rows[b])] for b in best]
        confidence[unreached] = np.clip(sims[np.arange(len(unreached)), best], 0, 1) * 0.5
    person[list(seeds)] = True
    label[list(seeds)] = list(seeds.values())
    confidence[person] = 1.0
    scores[list(seeds)] = 0
    scores[list(seeds), list(seeds.values())] = 1.0
    return Propagation(classes, label, confidence, person, scores.astype(np.float32))


def state_key(version: store.Version, labels: dict) -> str:
    """A short key that changes whenever the version or any person's label does (for caches)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(version.id.encode())
    for image, label in sorted(labels.items()):
        digest.update(f"{image}\0{label.label}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()
