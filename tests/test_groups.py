import numpy as np

from imgsim.learning.groups import fit_groups, predict_groups, silhouette_by_k


def blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[5, 0], [0, 5], [-5, -5]], np.float32)
    return np.concatenate([c + rng.normal(scale=0.3, size=(30, 2)) for c in centres]).astype(np.float32)


def test_fit_groups_finds_separated_blobs_and_predict_matches_fit():
    x = blobs()
    centres, groups = fit_groups(x, 3, seed=0)
    assert centres.shape == (3, 2)
    assert len(set(groups[:30])) == 1 and len(set(groups[30:60])) == 1 and len(set(groups)) == 3
    assert np.array_equal(predict_groups(x, centres), groups)


def test_k_is_capped_at_the_number_of_vectors():
    centres, groups = fit_groups(np.eye(3, dtype=np.float32), 10)
    assert len(centres) == 3


def test_silhouette_peaks_at_the_true_k():
    scores = silhouette_by_k(blobs(), range(2, 6))
    assert max(scores, key=scores.get) == 3
    assert all(-1 <= s <= 1 for s in scores.values())
