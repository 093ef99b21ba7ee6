"""Review: a person's labels that their neighbours disagree with, and outliers with no close neighbour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgsim.labelling.graph import Graph, neighbour_graph
from imgsim.labelling.propagation import Propagation, propagate
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
    for row, other, share in mistakes(propagation):
        name = propagation.classes[other]
        found.append(Finding(row, version.paths[row], "mistake", propagation.name(row), name, share,
                             f"the other labels say {name} here ({share:.0%}), judged without this one"))
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


# Flagged when the other labels give another class this many times the given label's share. Chosen on
# photos-hard-8 and photos-hard-12 at 2 labels a class with 5 and 10 % of them wrong (F1 2: 0.34-0.58,
# 4: 0.33-0.79, 8: 0.44-0.85, 16: 0.46-0.79); the other collections were not looked at (docs/results.md).
REVIEW_RATIO = 8.0


def mistakes(propagation: Propagation) -> list[tuple[int, int, float]]:
    """(row, other class, its share) for each person-labelled row whose label the other labels contradict.

    Judged on `propagation.held`: each label taken out in turn and labelled by the others only
    (cleanlab's out-of-sample idea), so a wrong label cannot vouch for itself through the
    neighbours it labelled. A label whose class has no other example cannot be judged and is left
    alone: from 2 labels a class, every label is judged.
    """
    held = propagation.held
    if held is None or not len(held.rows) or len(propagation.classes) < 2:
        return []
    shares = held.probabilities()
    given = shares[np.arange(len(held.rows)), held.given]
    other = np.where(np.arange(shares.shape[1]) == held.given[:, None], -1.0, shares).argmax(axis=1)
    best = shares[np.arange(len(held.rows)), other]
    flagged = held.judged & (best > REVIEW_RATIO * given) & (held.scores.sum(axis=1) > 0)
    return [(int(held.rows[i]), int(other[i]), float(best[i])) for i in np.flatnonzero(flagged)]
