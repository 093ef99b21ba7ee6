"""From propagation scores to the probability that a propagated label is right, fitted on a person's own labels.

Each labelled image is held out in turn and labelled by the others (`propagation.held_out`): its
score then, and whether that label was the person's, are one point. An isotonic regression over
those points (monotone: a higher score is never less likely right) maps every score to a
probability, with one right and one wrong pseudo-label in each of its steps (a Beta(1, 1) prior),
so a step of three right answers says 0.8, not 1. Platt scaling and a temperature are the usual
alternatives; no comparison with them is recorded in docs/results.md.

With fewer than MIN_POINTS held-out points the fit would be noise: the probability is then the
held-out accuracy so far, the same for every image (or NO_EVIDENCE with none at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_POINTS = 8  # held-out labels needed before scores are told apart
NO_EVIDENCE = 0.5  # the probability shown while no label can be held out (every class has one label)
BINS = 10  # equal-width bins of the expected calibration error


@dataclass
class Calibration:
    """A monotone map from score to probability of being right: `thresholds` (ascending) and their `values`."""

    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.full(1, NO_EVIDENCE))
    points: int = 0  # held-out labels it was fitted on
    right: int = 0  # of those, how many the others labelled as the person did
    error: float | None = None  # expected calibration error, estimated out of fold on those points

    def __call__(self, scores) -> np.ndarray:
        scores = np.asarray(scores, np.float64)
        if len(self.thresholds) == 0:
            return np.full(scores.shape, float(self.values[0]), np.float32)
        return np.interp(scores, self.thresholds, self.values).astype(np.float32)

    def describe(self) -> str:
        if self.points == 0:
            return ("not calibrated yet: label a second image of some class (each label is checked "
                    "against the others)")
        if self.points < MIN_POINTS:
            return (f"the same for every image until {MIN_POINTS} of your labels can be checked against the others: "
                    f"{self.right} of {self.points} so far were labelled back right")
        text = f"calibrated on {self.points} of your labels ({self.right} labelled back right by the others)"
        if not len(self.thresholds):  # every one came back right, or none did: nothing tells scores apart yet
            text += "; the same for every image until one of them comes back otherwise"
        if self.error is not None:
            text += f"; expected calibration error about {self.error:.2f}"
        return text


def fit_calibration(scores, right) -> Calibration:
    """The calibration from held-out scores and whether each held-out label came back right."""
    scores, right = np.asarray(scores, np.float64), np.asarray(right, bool)
    calibration = mapping(scores, right)
    calibration.error = estimated_error(scores, right)
    return calibration


def mapping(scores: np.ndarray, right: np.ndarray) -> Calibration:
    """`fit_calibration` without its error estimate."""
    points, hits = len(scores), int(right.sum())
    if points < MIN_POINTS or hits in (0, points):
        value = (hits + 1) / (points + 2) if points else NO_EVIDENCE
        return Calibration(values=np.full(1, value), points=points, right=hits)
    return Calibration(*isotonic_steps(scores, right), points, hits)


def isotonic_steps(scores: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool-adjacent-violators over the points sorted by score, each step smoothed to (hits + 1) / (n + 2).

    Returns the steps' score ranges as interpolation knots: each step is flat between its lowest
    and highest score, and the map is linear between steps.
    """
    from sklearn.isotonic import IsotonicRegression

    order = np.argsort(scores, kind="stable")
    x, y = scores[order], right[order].astype(np.float64)
    fitted = IsotonicRegression(increasing=True, out_of_bounds="clip").fit_transform(x, y)
    knots, values = [], []
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or fitted[end] != fitted[start]:
            n, hits = end - start, y[start:end].sum()
            smoothed = (hits + 1) / (n + 2)
            knots += [x[start], x[end - 1]]
            values += [smoothed, smoothed]
            start = end
    values = np.maximum.accumulate(np.asarray(values))  # smoothing can bend a small step below the last
    return np.asarray(knots), values


def estimated_error(scores: np.ndarray, right: np.ndarray, folds: int = 5) -> float | None:
    """Expected calibration error of `fit_calibration` on these points, each fold mapped by a fit on the others."""
    if len(scores) < 2 * MIN_POINTS:
        return None
    fold = np.argsort(np.argsort(scores, kind="stable"), kind="stable") % folds  # each fold spans the scores
    predicted = np.zeros(len(scores))
    for f in range(folds):
        inside = fold != f
        predicted[~inside] = mapping(scores[inside], right[inside])(scores[~inside])
    return expected_calibration_error(predicted, right)


def expected_calibration_error(probability, right, bins: int = BINS) -> float:
    """Sum over equal-width bins of |accuracy - mean probability|, weighted by the bin's share of the points."""
    probability, right = np.asarray(probability, np.float64), np.asarray(right, np.float64)
    if not len(probability):
        return 0.0
    which = np.clip((probability * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in np.unique(which):
        inside = which == b
        total += inside.mean() * abs(right[inside].mean() - probability[inside].mean())
    return float(total)
