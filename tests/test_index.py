import numpy as np
import pytest

from imgsim.index import Index, normalise


def test_normalise_gives_unit_rows_and_survives_zero_vectors():
    out = normalise([[3.0, 4.0], [0.0, 0.0]])
    assert np.allclose(out[0], [0.6, 0.8])
    assert np.all(np.isfinite(out))


def test_search_orders_by_cosine_similarity_with_scores():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], np.float32)
    index = Index().fit(vectors, ids=[10, 11, 12, 13])
    hits = index.search([1, 0], n=3)
    assert [i for i, _ in hits] == [10, 11, 12]
    assert hits[0][1] == pytest.approx(1.0)
    assert hits[2][1] == pytest.approx(0.0, abs=1e-6)
    assert hits[0][1] >= hits[1][1] >= hits[2][1]


def test_excluded_ids_never_returned_and_n_still_met():
    rng = np.random.default_rng(0)
    index = Index().fit(rng.normal(size=(20, 8)))
    query = index.vectors_[5]
    hits = index.search(query, n=5, exclude={5})
    assert len(hits) == 5
    assert 5 not in [i for i, _ in hits]


def test_n_larger_than_index_returns_everything_available():
    index = Index().fit(np.eye(3))
    assert len(index.search([1, 0, 0], n=10)) == 3
    assert len(index.search([1, 0, 0], n=10, exclude={0})) == 2


def test_add_and_remove_keep_ids():
    index = Index().fit(np.eye(3), ids=[0, 1, 2])
    index.add([[0.0, 0.0, 1.0]], ids=[7])
    assert len(index) == 4
    index.remove([2])
    hits = index.search([0, 0, 1], n=1)
    assert hits[0][0] == 7
