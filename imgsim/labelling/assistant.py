"""The labelling assistant: labels for every image from a few of a person's, and what to label next.

- `neighbour_graph`: each image's K nearest others, through the version's vector engine
  (`search_many` in batches, never an N x N matrix), computed once per version and kept on disk.
- `propagate`: label spreading over that graph (Zhou et al. 2004): every image gets a label and
  a confidence from the person's labels; a person's label is never changed.
- `suggest`: what to label next. Representatives that cover the collection first: the most
  typical image of each large cluster that holds no label yet (TypiClust, Hacohen et al. 2022,
  the strongest low-budget choice in its benchmarks), clusters where the propagation is unsure
  before sure ones; images a person labelled are never suggested again.
- `review`: a person's labels that their neighbours disagree with, and outliers with no close
  neighbour.

Nothing here imports TensorFlow: the latents are read from the version's engine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from imgsim.core.errors import ImgsimError
from imgsim.core.files import write_atomic_with
from imgsim.storage import store
from imgsim.storage.annotations import FOLDER, LabelStore

log = logging.getLogger(__name__)

K = 10  # neighbours per image in the graph (benchmarks/bench_labelling.py: 10 beat 15 and 30)
ALPHA_RANGE = (0.5, 0.99)  # label spreading's alpha: how far labels travel (reach_alpha)
ITERATIONS = 20  # at least; 3 / (1 - alpha) for a long reach, at most 3x this
# Confidence is a class's share of what reaches an image, beside an "unknown" label spread from this
# much on every unlabelled image: far from any person's label, unknown outweighs the classes, so a
# lone label does not make the whole collection 100 % sure. Measured at 2 labels a class: on photos
# 87 % of images reach 0.9 and 99 % of those are right (0.001: 92 % at 95 %; 0.01: 39 % at 100 %);
# it is a share, not a probability: on photos-hard-12 the 5 % at 0.9 are half wrong.
UNKNOWN_PRIOR = 0.003
CLASS_MASS = True  # each label's total in proportion to its share of the person's labels (Zhu et al. 2003)
SUGGEST_FIT_SAMPLE = 4_000  # clusters for suggestions are fitted on at most this many vectors
MIN_CLUSTER = 3  # a cluster smaller than this is noise, not something to cover
BATCH = 4_096


@dataclass
class Graph:
    """Each row's K nearest other rows (-1 where fewer exist) and their cosine similarity, best first."""

    rows: np.ndarray  # (n, k) int64
    sims: np.ndarray  # (n, k) float32

    def __len__(self) -> int:
        return len(self.rows)

    def transition(self) -> sparse.csr_matrix:
        """S = D^-1/2 W D^-1/2 over the symmetric affinities: what label spreading multiplies by (made once)."""
        if not hasattr(self, "_transition"):
            w = affinity(self)
            scale = 1.0 / np.sqrt(np.maximum(np.asarray(w.sum(axis=1)).ravel(), 1e-12))
            self._transition = (sparse.diags(scale) @ w @ sparse.diags(scale)).astype(np.float32).tocsr()
        return self._transition


_graphs: dict[tuple, Graph] = {}
_graphs_lock = threading.Lock()


def graph_path(version: store.Version, k: int) -> Path:
    return version.model_dir / FOLDER / "graphs" / f"{version.id}-k{k}.npz"


def neighbour_graph(version: store.Version, k: int = K) -> Graph:
    """The version's kNN graph: from memory, from disk, or computed through its engine (and saved)."""
    key = (str(version.model_dir), version.id, k)
    with _graphs_lock:
        if key in _graphs:
            return _graphs[key]
    path = graph_path(version, k)
    graph = None
    try:
        with np.load(path, allow_pickle=False) as data:
            graph = Graph(data["rows"].astype(np.int64), data["sims"].astype(np.float32))
        if len(graph) != len(version) or graph.rows.shape[1] != k or graph.rows.max(initial=-1) >= len(version):
            graph = None
    except (OSError, ValueError, KeyError):
        graph = None
    if graph is None:
        graph = compute_graph(version, k)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic_with(path, lambda fh: np.savez(fh, rows=graph.rows.astype(np.int32), sims=graph.sims))
        except OSError as exc:  # a read-only model folder: compute again next time
            log.info("kNN graph not saved (%s)", exc)
    with _graphs_lock:
        _graphs[key] = graph
        while len(_graphs) > 4:
            _graphs.pop(next(iter(_graphs)))
    return graph


def compute_graph(version: store.Version, k: int = K) -> Graph:
    """Each image's k nearest others by `search_many` on the version's engine, in batches."""
    n = len(version)
    rows = np.full((n, k), -1, np.int64)
    sims = np.zeros((n, k), np.float32)
    engine, vectors, records = version.engine(), version.vectors, version.records
    for lo in range(0, n, BATCH):
        hits = engine.search_many(vectors[lo:lo + BATCH], k + 1)
        found = np.full((len(hits), k + 1), -1, np.int64)
        scores = np.zeros((len(hits), k + 1), np.float32)
        for j, answer in enumerate(hits):
            if answer:
                found[j, :len(answer)], scores[j, :len(answer)] = zip(*answer)
        found = np.where(found >= 0, records.rows_of(found.ravel()).reshape(found.shape), -1)
        found[found == np.arange(lo, lo + len(hits))[:, None]] = -1  # never itself
        order = np.argsort(found < 0, axis=1, kind="stable")[:, :k]  # the first k others, best first
        rows[lo:lo + len(hits)] = np.take_along_axis(found, order, axis=1)
        sims[lo:lo + len(hits)] = np.where(rows[lo:lo + len(hits)] >= 0, np.take_along_axis(scores, order, axis=1), 0)
    return Graph(rows, sims)


def affinity(graph: Graph) -> sparse.csr_matrix:
    """Symmetric weights from the kNN graph: w = exp((s - 1) / sigma), sigma the median distance to a neighbour."""
    n, k = graph.rows.shape
    valid = graph.rows >= 0
    distance = 1.0 - graph.sims
    sigma = float(np.median(distance[valid])) if valid.any() else 1.0
    weights = np.exp(-distance / max(sigma, 1e-6)) * valid
    w = sparse.csr_matrix((weights[valid], (np.repeat(np.arange(n), k)[valid.ravel()], graph.rows[valid])), shape=(n, n))
    return w.maximum(w.T).tocsr()


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


@dataclass(frozen=True)
class Suggestion:
    row: int
    path: str
    suggested: str | None
    confidence: float
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "suggested": self.suggested, "confidence": round(float(self.confidence), 4),
                "reason": self.reason}


def typicality(graph: Graph) -> np.ndarray:
    """How typical each image is of its neighbourhood: its mean similarity to its K nearest (TypiClust's density)."""
    valid = graph.rows >= 0
    return np.where(valid.any(axis=1), (graph.sims * valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1), 0.0)


def fine_clusters(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Each vector's cluster among at most k, KMeans fitted on an even sample of SUGGEST_FIT_SAMPLE vectors.

    k is capped at a quarter of the sample: smaller clusters are noise, not regions to cover (past
    that, suggestions come from the propagation's doubt). One BLAS thread: with more, k-means++
    spun 6x slower beside a training run on 2 cores (3.2 s against 0.5 s at 8,000 x 110).
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from imgsim.learning.groups import predict_groups

    sample = vectors
    if len(vectors) > SUGGEST_FIT_SAMPLE:
        sample = vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), SUGGEST_FIT_SAMPLE, replace=False))]
    k = max(1, min(k, len(sample) // 4 or 1))
    with threadpool_limits(1):
        kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=100).fit(sample)
        if sample is vectors:
            return kmeans.labels_.astype(np.int64)
        return predict_groups(vectors, kmeans.cluster_centers_).astype(np.int64)


def suggest(version: store.Version, n: int = 10, propagation: Propagation | None = None,
            graph: Graph | None = None) -> list[Suggestion]:
    """The n images whose labels would help most, best first; never one a person labelled.

    The collection is cut into (labelled + n) clusters; clusters without a person's label are
    taken largest-and-least-sure first, and each gives its most typical unlabelled image. When
    those run out, the images the propagation is least sure of fill the rest, never two
    neighbours of each other.
    """
    if n < 1:
        raise ImgsimError("-n must be at least 1")
    graph = graph or neighbour_graph(version)
    propagation = propagation or propagate(version, graph=graph)
    free = ~propagation.person
    if not free.any():
        return []
    typical = typicality(graph)
    seed = int(version.manifest.get("settings", {}).get("seed", 0))
    clusters = fine_clusters(version.vectors, int(propagation.person.sum()) + n, seed)
    covered = set(clusters[propagation.person].tolist())
    unsure = 1.0 - propagation.confidence
    candidates = []
    for c in np.unique(clusters):
        members = np.flatnonzero((clusters == c) & free)
        if c in covered or len(members) < MIN_CLUSTER:
            continue
        doubt = float(unsure[members].mean()) if propagation.classes else 1.0
        candidates.append((len(members) * doubt, int(members[np.argmax(typical[members])]), len(members), doubt))
    candidates.sort(key=lambda item: (-item[0], item[1]))
    picked, blocked, out = set(), set(), []

    def take(row: int, reason: str) -> None:
        picked.add(row)
        blocked.update(graph.rows[row][graph.rows[row] >= 0].tolist())
        out.append(Suggestion(row, version.paths[row], propagation.name(row), float(propagation.confidence[row]), reason))

    for _, row, size, doubt in candidates:
        if len(out) >= n:
            break
        if row in blocked:  # a neighbour of one already picked: two views of the same thing
            continue
        why = (f"typical of {size} similar images that have no label yet" if not propagation.classes else
               f"typical of {size} similar images with no label among them (propagation {1 - doubt:.0%} sure there)")
        take(row, why)
    if len(out) < n:  # then the images the propagation is least sure of
        margin = np.sort(propagation.scores, axis=1)
        gap = margin[:, -1] - (margin[:, -2] if margin.shape[1] > 1 else 0) if margin.shape[1] else np.zeros(len(free))
        order = np.lexsort((np.arange(len(free)), -typical, gap))
        for row in order.tolist():
            if len(out) >= n:
                break
            if free[row] and row not in picked and row not in blocked:
                take(row, f"the propagation is unsure: {propagation.confidence[row]:.0%} for "
                          f"{propagation.name(row) or 'any label'}")
    return out


@dataclass(frozen=True)
class Finding:
    row: int
    path: str
    kind: str  # "mistake": a person's label its neighbours disagree with; "outlier": no close neighbour
    label: str | None
    suggested: str | None
    score: float  # how strongly: the neighbours' share against the label, or how far the nearest image is
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "label": self.label, "suggested": self.suggested,
                "score": round(float(self.score), 4), "reason": self.reason}


OUTLIER_MADS = 4.0  # nearest-neighbour similarity this many median absolute deviations below the median


def review(version: store.Version, propagation: Propagation | None = None, graph: Graph | None = None) -> list[Finding]:
    """Likely mistakes (worst first), then outliers (farthest first)."""
    graph = graph or neighbour_graph(version)
    propagation = propagation or propagate(version, graph=graph)
    found = []
    for row, other, share in out_of_fold(graph, propagation):
        name = propagation.classes[other]
        found.append(Finding(row, version.paths[row], "mistake", propagation.name(row), name, share,
                             f"its neighbourhood says {name} ({share:.0%}) when the other labels are spread without it"))
    found.sort(key=lambda f: -f.score)
    nearest = graph.sims[:, 0]
    has = graph.rows[:, 0] >= 0
    if has.sum() >= 8:
        median = float(np.median(nearest[has]))
        mad = float(np.median(np.abs(nearest[has] - median))) or 1e-6
        limit = median - OUTLIER_MADS * mad
        rows = np.flatnonzero(has & (nearest < limit))
        for row in rows[np.argsort(nearest[rows])].tolist():
            found.append(Finding(row, version.paths[row], "outlier", propagation.name(row), None,
                                 float(1 - nearest[row]),
                                 f"its nearest image is only {nearest[row]:.2f} similar (typical: {median:.2f})"))
    return found


REVIEW_FOLDS = 5
# Wider than propagation's: a label is judged by the labels of its whole neighbourhood, not by the
# nearest one, which may be the very slip next to it.
REVIEW_ALPHA = 0.9
REVIEW_RATIO = 4.0  # flagged when another label gets this many times the given label's share


def out_of_fold(graph: Graph, propagation: Propagation) -> list[tuple[int, int, float]]:
    """(row, other class, its share) for each person-labelled row whose label the others contradict.

    The person's labels are split in REVIEW_FOLDS folds, each class's labels spread over them; each fold is judged by spreading the
    other folds' labels only (cleanlab's out-of-sample idea), so a wrong label cannot vouch for
    itself through the neighbours it labelled. A label whose class has no other example outside
    its fold cannot be judged and is left alone.
    """
    seeds = np.flatnonzero(propagation.person)
    if len(seeds) < 2 or len(propagation.classes) < 2:
        return []
    given = propagation.label[seeds]
    fold = np.empty(len(seeds), np.int64)  # stratified: one class's labels go to different folds
    fold[np.argsort(given, kind="stable")] = np.arange(len(seeds)) % min(REVIEW_FOLDS, len(seeds))
    out = []
    for f in np.unique(fold):
        train = fold != f
        known = set(given[train].tolist())
        f_scores = spread(graph, dict(zip(seeds[train].tolist(), given[train].tolist())), len(propagation.classes),
                          alpha=REVIEW_ALPHA)
        for row, label in zip(seeds[~train].tolist(), given[~train].tolist()):
            total = f_scores[row].sum()
            if label not in known or total <= 0:
                continue
            share = f_scores[row] / total
            other = int(np.argmax(np.where(np.arange(len(share)) == label, -1.0, share)))
            if share[other] > REVIEW_RATIO * share[label]:
                out.append((row, other, float(share[other])))
    return out


def rows_for_paths(version: store.Version, paths, base: Path | None = None) -> list[int]:
    """The rows of paths as a person types them (relative to `base` or the working folder, or to the
    collection's folder); ImgsimError naming the first path that is not in the version."""
    root = version.manifest.get("images_root")
    rows = []
    for typed in paths:
        path = Path(os.fsdecode(typed)).expanduser()
        tries = [path] if path.is_absolute() else [Path(base or Path.cwd()) / path] + ([Path(root) / path] if root else [])
        found = -1
        for candidate in tries:
            for form in (str(candidate.absolute()), os.path.normpath(candidate.absolute()), str(candidate.resolve())):
                found = version.records.row_of_path(form)
                if found >= 0:
                    break
            if found >= 0:
                break
        if found < 0:
            from imgsim.core.text import one_line

            raise ImgsimError(f"{one_line(typed)}: not an image of the active version (see `imgsim query` for its paths)")
        rows.append(found)
    return rows


def state_key(version: store.Version, labels: dict) -> str:
    """A short key that changes whenever the version or any person's label does (for caches)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(version.id.encode())
    for image, label in sorted(labels.items()):
        digest.update(f"{image}\0{label.label}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()
