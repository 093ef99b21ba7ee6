"""Calibrated probabilities: the map from scores, the held-out scores it is fitted on, and what it gives on known classes."""

import numpy as np
import pytest

from imgsim import labelling
from imgsim.labelling import calibration
from imgsim.labelling import propagation as spreading
from imgsim.storage.annotations import ImageLabel
from tests.helpers import vector_version


def test_the_map_follows_the_rate_of_right_answers_and_is_monotone():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 2000)
    right = rng.uniform(0, 1, 2000) < scores ** 2  # right with probability score squared: the scores overstate
    fitted = calibration.fit_calibration(scores, right)
    grid = np.linspace(0, 1, 21)
    assert np.all(np.diff(fitted(grid)) >= 0)
    assert np.abs(fitted(grid[2:-2]) - grid[2:-2] ** 2).max() < 0.12
    assert calibration.expected_calibration_error(fitted(scores), right) < 0.03
    assert calibration.expected_calibration_error(scores, right) > 0.1  # control: the raw scores are not probabilities
    assert fitted.error is not None and fitted.error < 0.06  # its own out-of-fold estimate says so too


def test_a_few_right_answers_never_make_a_certainty():
    scores = np.r_[np.linspace(0.1, 0.4, 6), np.linspace(0.6, 0.9, 6)]
    fitted = calibration.fit_calibration(scores, scores > 0.5)
    assert 0 < fitted(0.0) < 0.2 and 0.8 < fitted(1.0) < 1  # six of six right: (6 + 1) / (6 + 2), not 1


def test_too_few_points_give_the_rate_so_far_and_none_give_no_evidence():
    np.testing.assert_allclose(calibration.fit_calibration([0.2, 0.9, 0.5], [True, True, False])([0.0, 1.0]), [0.6, 0.6])
    empty = calibration.fit_calibration([], [])
    assert empty.points == 0 and empty(0.99) == calibration.NO_EVIDENCE and "not calibrated" in empty.describe()


def test_expected_calibration_error_of_known_bins():
    p = np.array([0.95, 0.95, 0.95, 0.95, 0.15, 0.15])
    right = np.array([1, 1, 1, 0, 0, 0], bool)  # 0.75 against 0.95 on 4 of 6; 0 against 0.15 on 2 of 6
    assert calibration.expected_calibration_error(p, right) == pytest.approx(4 / 6 * 0.2 + 2 / 6 * 0.15)


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    """600 vectors around 10 close centres (propagation is often wrong) and 3 labels a class."""
    version, truth = vector_version(tmp_path_factory.mktemp("overlap") / "models", 600, 10, dim=16, spread=1.0)
    rng = np.random.default_rng(0)
    rows = [int(r) for c in range(10) for r in rng.choice(np.flatnonzero(truth == c), 3, replace=False)]
    return version, truth, {int(version.ids[r]): ImageLabel(f"class {truth[r]}") for r in rows}


def test_held_out_scores_are_the_labels_spread_without_each_one(overlapping):
    version, _, labels = overlapping
    graph = labelling.neighbour_graph(version)
    held = labelling.propagate(version, labels, graph).held
    classes = sorted({label.label for label in labels.values()}, key=str.casefold)
    seeds = {r: classes.index(n) for r, n in spreading.person_rows(version, labels).items()}
    alpha = spreading.reach_alpha(len(seeds), len(version))
    wanted = np.bincount(list(seeds.values()), minlength=len(classes)) / len(seeds)
    for i in (0, 7, 29):  # spread again from scratch without the held-out label, as a person would see it
        row = int(held.rows[i])
        others = {r: c for r, c in seeds.items() if r != row}
        f = spreading.spread(graph, others, len(classes), prior=spreading.UNKNOWN_PRIOR, alpha=alpha)
        again = spreading.class_scores(f, wanted / f[:, :-1].sum(axis=0))[row]
        np.testing.assert_allclose(held.scores[i], again, rtol=1e-3, atol=1e-6)
        assert held.given[i] == seeds[row] and held.judged[i]


def test_calibrated_probabilities_say_how_often_propagated_labels_are_right(overlapping):
    version, truth, labels = overlapping
    propagation = labelling.propagate(version, labels)
    free = ~propagation.person
    right = np.array([propagation.name(r) == f"class {truth[r]}" for r in range(len(version))])[free]
    assert 0.7 < right.mean() < 0.95  # a collection where trusting every label would be wrong
    calibrated = calibration.expected_calibration_error(propagation.confidence[free], right)
    raw = calibration.expected_calibration_error(spreading.evidence(propagation.scores)[free], right)
    assert calibrated < 0.1 and raw > 0.3, (calibrated, raw)
    assert propagation.calibration.points == len(labels) and (propagation.confidence[~free] == 1).all()


def test_labels_that_all_come_back_right_say_so_and_give_one_probability():
    fitted = calibration.fit_calibration(np.linspace(0.2, 0.9, 20), np.ones(20, bool))
    assert fitted(0.1) == fitted(0.95) == np.float32(21 / 22)
    assert fitted.describe().startswith("calibrated on 20 of your labels (20 labelled back right")
