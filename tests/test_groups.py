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


def test_a_few_vectors_get_the_same_groups_as_scikit_learn_gives_many():
    """The numpy path for queries (up to FEW rows) against scikit-learn's, on the same vectors."""
    from sklearn.metrics import pairwise_distances_argmin

    from imgsim.learning.groups import FEW, predict_groups

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(12, 64)).astype(np.float32)
    vectors = rng.normal(size=(FEW, 64)).astype(np.float32)
    expected = pairwise_distances_argmin(vectors, centres)
    assert np.array_equal(predict_groups(vectors, centres), expected)
    assert all(predict_groups(v, centres)[0] == e for v, e in zip(vectors[:20], expected))  # one at a time
    assert np.array_equal(predict_groups(np.vstack([vectors, vectors]), centres), np.concatenate([expected, expected]))
