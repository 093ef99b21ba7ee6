"""What to label next: typical images that cover the kNN graph first, then what the propagation doubts.

Coverage is a greedy k-center over the graph, weighted by how typical an image is of its
neighbourhood (TypiClust's density, Hacohen et al. 2022; ProbCover's covering view, Yehuda et al.
2022). At 1 label a class it asked about 1 class more than KMeans clusters on two evaluation collections
and 3 fewer on photos (docs/results.md, issue 29).
Images a person labelled are never suggested again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgsim.core.errors import ImgsimError
from imgsim.labelling.graph import Graph, neighbour_graph
from imgsim.labelling.propagation import UNKNOWN_PRIOR, Propagation, propagate, reach_alpha, spread
from imgsim.storage import store

DOUBT_WEIGHT = False  # coverage picks weighted by the propagation's doubt there (1 - the probability)
COVER_MIN = 0.0  # a coverage pick must be at least this far outside the reach of every label and pick before it


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


def uncovered(graph: Graph, seeds: list[int], alpha: float) -> np.ndarray:
    """How much of what reaches each image comes from no seed: 1 far from every seed, near 0 on one.

    The seeds spread as one class beside propagation's "unknown" prior, with the reach that
    `n` more labels would have: what a label there would still leave uncovered.
    """
    if not seeds:
        return np.ones(len(graph), np.float32)
    f = spread(graph, dict.fromkeys(seeds, 0), 1, prior=UNKNOWN_PRIOR, alpha=alpha)
    total = f.sum(axis=1)
    return np.divide(f[:, 1], total, out=np.ones_like(total), where=total > 0)


def suggest(version: store.Version, n: int = 10, propagation: Propagation | None = None,
            graph: Graph | None = None) -> list[Suggestion]:
    """The n images whose labels would help most, best first; never one a person labelled.

    First the graph is covered (a greedy k-center over the kNN graph): each pick is the most
    typical image that the labels so far, and the picks before it, reach least, while it is at
    least COVER_MIN outside their reach. Then the images the propagation is least sure of fill the
    rest, never two neighbours of each other.
    """
    if n < 1:
        raise ImgsimError("-n must be at least 1")
    graph = graph or neighbour_graph(version)
    propagation = propagation or propagate(version, graph=graph)
    free = ~propagation.person
    if not free.any():
        return []
    typical = np.clip(typicality(graph), 1e-6, None)
    seeds = np.flatnonzero(propagation.person).tolist()
    alpha = reach_alpha(len(seeds) + n, len(version))
    picked, blocked, out = [], set(), []
    doubt = 1.0 - propagation.confidence if propagation.classes else np.ones(len(free), np.float32)

    def take(row: int, reason: str) -> None:
        picked.append(row)
        blocked.update(graph.rows[row][graph.rows[row] >= 0].tolist())
        out.append(Suggestion(row, version.paths[row], propagation.name(row), float(propagation.confidence[row]), reason))

    while len(out) < n:
        far = uncovered(graph, seeds + picked, alpha)
        score = np.where(free, typical * far * (doubt if DOUBT_WEIGHT else 1.0), -1.0)
        score[picked + list(blocked)] = -1.0
        row = int(np.argmax(score))
        if score[row] < 0 or far[row] < COVER_MIN:
            break
        take(row, "typical of images that no label reaches yet" if not seeds and not picked else
                  f"typical of images your labels reach least ({1 - far[row]:.0%} covered)")
    if len(out) < n:
        fill_with_doubt(propagation, typical, n, picked, blocked, take)
    return out


def fill_with_doubt(propagation: Propagation, typical: np.ndarray, n: int, picked: list, blocked: set, take) -> None:
    """`take` the images the propagation is least sure of (smallest margin between its two best classes) up to n."""
    free = ~propagation.person
    margin = np.sort(propagation.scores, axis=1)
    gap = margin[:, -1] - (margin[:, -2] if margin.shape[1] > 1 else 0) if margin.shape[1] else np.zeros(len(free))
    for row in np.lexsort((np.arange(len(free)), -typical, gap)).tolist():
        if len(picked) >= n:
            break
        if free[row] and row not in picked and row not in blocked:
            take(row, f"the propagation is unsure: {propagation.confidence[row]:.0%} likely "
                      f"{propagation.name(row) or 'any label'}")
