"""Label spreading over the kNN graph (Zhou et al. 2004): every image's label and confidence from a person's few.

A person's label is never changed; images the spreading cannot reach take the label of the most
similar labelled image, with a low confidence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from imgsim.labelling.calibration import Calibration, fit_calibration
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
HELD_OUT = 200  # labels held out at most, to calibrate and review: one spread of this many columns


@dataclass
class Propagation:
    """Every image's label (an index into `classes`, -1 for none), its confidence and where it comes from."""

    classes: list[str]
    label: np.ndarray  # (n,) int64
    confidence: np.ndarray  # (n,) float32: the probability that the label is right (calibrated); 1 for a person's
    person: np.ndarray  # (n,) bool: the label is a person's
    scores: np.ndarray  # (n, c) float32: each class's share of what reached the image (the rest is "unknown")
    held: HeldOut | None = None  # the person's labels as the others give them back (calibration, review)
    calibration: Calibration = field(default_factory=Calibration)

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
    """Every image's label and the probability that it is right, from the person's labels (`labels`: id ->
    ImageLabel; default: the store's).

    The probability is the propagation's score calibrated on the person's own labels, each held
    out in turn (`held_out`, imgsim.labelling.calibration). Images the spreading cannot reach (no
    path in the graph to a labelled image) take the label of the most similar labelled image, with
    the lowest probability the calibration gives.
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
    alpha = reach_alpha(len(seeds), n)
    f = spread(graph, seeds, len(classes), prior=UNKNOWN_PRIOR, alpha=alpha)
    factor = class_factor(f, seeds, len(classes))
    scores = class_scores(f, factor)
    label = scores.argmax(axis=1).astype(np.int64)
    held = held_out(graph, seeds, f, factor, alpha, seed=int(version.manifest.get("settings", {}).get("seed", 0)))
    calibrated = fit_calibration(held.evidence()[held.judged], held.right()[held.judged])
    confidence = calibrated(evidence(scores))
    unreached = np.flatnonzero(f[:, :-1].sum(axis=1) <= 0)
    if len(unreached):
        seed_rows = np.fromiter(seeds, np.int64)
        vectors = version.vectors
        sims = vectors[unreached] @ vectors[seed_rows].T  # n_unreached x n_labelled: small
        label[unreached] = [seeds[int(seed_rows[b])] for b in sims.argmax(axis=1)]
        confidence[unreached] = calibrated(0.0)
    person[list(seeds)] = True
    label[list(seeds)] = list(seeds.values())
    confidence[person] = 1.0
    scores[list(seeds)] = 0
    scores[list(seeds), list(seeds.values())] = 1.0
    return Propagation(classes, label, confidence.astype(np.float32), person, scores.astype(np.float32), held,
                       calibrated)


def class_factor(f: np.ndarray, seeds: dict[int, int], n_classes: int) -> np.ndarray:
    """Each class's weight: its total in proportion to its share of the person's labels (CLASS_MASS), else 1."""
    if not CLASS_MASS:
        return np.ones(n_classes, np.float32)
    wanted = np.bincount(list(seeds.values()), minlength=n_classes) / len(seeds)
    return (wanted / np.maximum(f[:, :-1].sum(axis=0), 1e-30)).astype(np.float32)


def class_scores(f: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Each class's share of what reached each row (weighted by `factor`: (c,), or (rows, c) a row's own), times
    the share that is not "unknown"."""
    raw = np.maximum(f[:, :-1], 0)
    mass = raw.sum(axis=1)
    g = raw * factor
    shares = np.divide(g, g.sum(axis=1, keepdims=True), out=np.zeros_like(g), where=mass[:, None] > 0)
    reach = np.divide(mass, f.sum(axis=1), out=np.zeros_like(mass), where=mass > 0)
    return (shares * reach[:, None]).astype(np.float32)


def evidence(scores: np.ndarray) -> np.ndarray:
    """What the calibration maps to a probability: the best class's score."""
    return scores.max(axis=1) if scores.shape[1] else np.zeros(len(scores), np.float32)


@dataclass
class HeldOut:
    """Labelled rows as the other labels alone label them (leave one out): what calibration and review judge by."""

    rows: np.ndarray  # (m,) labelled rows held out
    given: np.ndarray  # (m,) the class the person gave each
    scores: np.ndarray  # (m, c) class scores there from the other labels only
    judged: np.ndarray  # (m,) its class has another label, so the others could give it back

    def evidence(self) -> np.ndarray:
        return evidence(self.scores)

    def probabilities(self) -> np.ndarray:
        """Each class's share of the class scores (a row with none: every class alike), what cleanlab takes."""
        total = self.scores.sum(axis=1, keepdims=True)
        flat = np.full_like(self.scores, 1.0 / max(self.scores.shape[1], 1))
        return np.where(total > 0, self.scores / np.maximum(total, 1e-30), flat)

    def right(self) -> np.ndarray:
        """Whether the others label the row as the person did."""
        return (self.scores.argmax(axis=1) == self.given) & (self.scores.max(axis=1) > 0) if len(self.rows) else \
            np.zeros(0, bool)


def held_out(graph: Graph, seeds: dict[int, int], f: np.ndarray, factor: np.ndarray, alpha: float,
             seed: int = 0) -> HeldOut:
    """Each labelled row's class scores when its own label is taken out (at most HELD_OUT rows, a sample beyond).

    Spreading is linear in the labels, so taking one out subtracts what it alone spreads: its
    column G[:, h] of one spread with a column per held-out row. At the row itself,
    F_-h[h] = F[h] - G[h, h] (e_label - prior e_unknown); its class loses G[:, h]'s total, which
    the class weights (CLASS_MASS) see. The weights keep the person's class shares: taking a label
    out must not make its class look rarer than the person's labelling says it is (with 2 labels
    a class, that alone turned correct labels wrong). Exact, and one spread instead of one per label.
    """
    rows = np.fromiter(seeds, np.int64, count=len(seeds))
    if len(rows) > HELD_OUT:
        rows = np.sort(np.random.default_rng(seed).choice(rows, HELD_OUT, replace=False))
    given = np.array([seeds[int(r)] for r in rows], np.int64)
    columns = spread(graph, {int(r): j for j, r in enumerate(rows)}, len(rows), alpha=alpha)
    own, lost = columns[rows, np.arange(len(rows))], columns.sum(axis=0)
    del columns
    f_out = f[rows].copy()
    f_out[np.arange(len(rows)), given] -= own
    f_out[:, -1] += own * UNKNOWN_PRIOR
    if CLASS_MASS:  # each row's class weights with its own label's mass taken out of its class's total
        totals = np.repeat(f[:, :-1].sum(axis=0, keepdims=True), len(rows), axis=0)
        totals[np.arange(len(rows)), given] -= lost
        wanted = np.bincount(list(seeds.values()), minlength=f.shape[1] - 1) / len(seeds)
        factor = (wanted / np.maximum(totals, 1e-30)).astype(np.float32)
    per_class = np.bincount(list(seeds.values()), minlength=f.shape[1] - 1)
    return HeldOut(rows, given, class_scores(f_out, factor), per_class[given] >= 2)


def state_key(version: store.Version, labels: dict) -> str:
    """A short key that changes whenever the version or any person's label does (for caches)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(version.id.encode())
    for image, label in sorted(labels.items()):
        digest.update(f"{image}\0{label.label}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()
