"""Review: a person's labels that their neighbours disagree with, and outliers with no close neighbour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgsim.labelling.graph import Graph, neighbour_graph
from imgsim.labelling.propagation import Propagation, propagate, spread
from imgsim.storage import store


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
