"""Retrieval metrics on tiny cases worked out by hand, and the baseline features' shapes."""

import numpy as np
import pytest
from PIL import Image

from imgsim.runs import evaluation
from imgsim.runs.evaluation import adjusted_rand, mean_average_precision, precision_at_k


def on_a_line(*xs):
    return np.array([[x, 0.0] for x in xs])


# x = 0, 1, 3, 10 with labels a a b b. Nearest others, by hand:
#   0 -> 1(a) 3(b) 10(b)    1 -> 0(a) 3(b) 10(b)    3 -> 1(a) 0(a) 10(b)    10 -> 3(b) 1(a) 0(a)
FOUR = on_a_line(0, 1, 3, 10)
FOUR_LABELS = ["a", "a", "b", "b"]


def test_precision_at_1_and_2_by_hand():
    assert precision_at_k(FOUR, FOUR_LABELS, k=1, metric="euclidean") == pytest.approx(3 / 4)  # only 3 goes wrong
    assert precision_at_k(FOUR, FOUR_LABELS, k=2, metric="euclidean") == pytest.approx((0.5 + 0.5 + 0 + 0.5) / 4)


def test_mean_average_precision_by_hand():
    # APs: 1, 1, 1/3 (its only fellow b is ranked third), 1
    assert mean_average_precision(FOUR, FOUR_LABELS, metric="euclidean") == pytest.approx((3 + 1 / 3) / 4)


def test_mean_average_precision_with_two_relevant_items_each():
    # x = 0, 1, 2.5, 5.2, 6.6 labelled a b a b a. Rankings of the others' labels:
    #   0: b a b a -> (1/2 + 2/4) / 2 = 1/2      1: a a b a -> 1/3      2.5: b a b a -> 1/2
    #   5.2: a a b a -> 1/3                      6.6: b a b a -> 1/2
    points, labels = on_a_line(0, 1, 2.5, 5.2, 6.6), list("ababa")
    assert mean_average_precision(points, labels, metric="euclidean") == pytest.approx(13 / 30)
    assert precision_at_k(points, labels, k=2, metric="euclidean") == pytest.approx(1.5 / 5)


def test_leave_one_out_counts_a_duplicate_but_not_the_item_itself():
    # each point has an exact duplicate carrying the other label
    points = np.array([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [10.0, 0.0]])
    assert precision_at_k(points, ["a", "b", "a", "b"], k=1, metric="euclidean") == 0.0
    assert precision_at_k(points, ["a", "a", "b", "b"], k=1, metric="euclidean") == 1.0
    assert mean_average_precision(points, ["a", "a", "b", "b"], metric="euclidean") == 1.0


def test_items_whose_label_nobody_shares_are_left_out_of_map():
    # c has no fellow: its AP is undefined and must not count as 0
    assert mean_average_precision(on_a_line(0, 1, 50), ["a", "a", "c"], metric="euclidean") == 1.0
    with pytest.raises(ValueError, match="no label is shared"):
        mean_average_precision(on_a_line(0, 1), ["a", "b"])


def test_metric_is_honoured():
    # cosine ignores length: same direction, same label; euclidean pairs the two short vectors
    points = np.array([[1.0, 0.0], [50.0, 1.0], [0.0, 1.0], [1.0, 50.0]])
    labels = ["a", "a", "b", "b"]
    assert precision_at_k(points, labels, k=1, metric="cosine") == 1.0
    assert precision_at_k(points, labels, k=1, metric="euclidean") == 0.5


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="k must be between 1 and 3"):
        precision_at_k(FOUR, FOUR_LABELS, k=4)
    with pytest.raises(ValueError, match="one feature row per label"):
        precision_at_k(FOUR, FOUR_LABELS[:3], k=1)


def test_adjusted_rand_by_hand():
    assert adjusted_rand([1, 1, 0, 0], ["a", "a", "b", "b"]) == pytest.approx(1.0)  # names of groups do not matter
    # contingency a:(2,1,0) b:(0,1,2): index 2, expected 6*3/15 = 1.2, max 4.5 -> (2-1.2)/(4.5-1.2)
    assert adjusted_rand([0, 0, 1, 1, 2, 2], list("aaabbb")) == pytest.approx(8 / 33)


def test_evaluate_rows_and_table():
    rows = evaluation.evaluate({"line": FOUR, "noise": np.random.default_rng(0).normal(size=(4, 3))}, FOUR_LABELS, k=1)
    assert [row["name"] for row in rows] == ["line", "noise"]
    assert rows[0]["dims"] == 2 and set(rows[0]) == {"name", "dims", "precision@1", "mAP"}
    table = evaluation.format_table(rows).splitlines()
    assert table[0].split() == ["name", "dims", "precision@1", "mAP"]
    assert len(table) == 4 and len({len(line) for line in table}) == 1  # aligned
    assert "noise" in table[3]


def test_labelled_images_uses_the_top_sub_folder_as_label(tmp_path):
    for relative in ["b/sub/y.jpg", "a/x.png", "a/z.PNG", "loose.png", ".hidden/w.png", "a/notes.txt"]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    paths, labels = evaluation.labelled_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["a/x.png", "a/z.PNG", "b/sub/y.jpg"]
    assert labels == ["a", "a", "b"]
    with pytest.raises(ValueError, match="no such folder"):
        evaluation.labelled_images(tmp_path / "missing")


@pytest.fixture
def colour_images(tmp_path):
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    half = red.copy()
    half[:, 16:] = (0, 0, 255)
    paths = [tmp_path / "red.png", tmp_path / "half.png", tmp_path / "grey.jpg"]
    Image.fromarray(red).save(paths[0])
    Image.fromarray(half).save(paths[1])
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 24, 3), dtype=np.uint8)).save(paths[2])
    return paths


def test_colour_histogram_sums_to_one_before_the_square_root(colour_images):
    plain = evaluation.colour_histogram(colour_images, size=32, sqrt=False)
    rooted = evaluation.colour_histogram(colour_images, size=32)
    assert plain.shape == rooted.shape == (3, 512)
    np.testing.assert_allclose(plain.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose((rooted**2).sum(axis=1), 1.0, rtol=1e-6)
    red_bin, blue_bin = (7 * 8 + 0) * 8 + 0, 7
    assert plain[0, red_bin] == 1.0
    assert plain[1, red_bin] == plain[1, blue_bin] == 0.5


def test_raw_and_pca_pixel_shapes(colour_images):
    raw = evaluation.raw_pixels(colour_images)
    assert raw.shape == (3, 32 * 32 * 3) and raw.dtype == np.float32
    assert raw.min() >= 0.0 and raw.max() <= 1.0
    assert raw[0].reshape(32, 32, 3)[5, 5].tolist() == [1.0, 0.0, 0.0]
    assert evaluation.pca_pixels(colour_images, dims=64).shape == (3, 3)  # at most one component per image
    assert evaluation.raw_pixels(colour_images, size=8).shape == (3, 192)


def test_baselines_name_three_feature_sets(colour_images):
    features = evaluation.baselines(colour_images)
    assert [f.shape[0] for f in features.values()] == [3, 3, 3]
    assert len(features) == 3


def test_label_free_summary_reports_the_runs_best_values_or_says_it_has_none():
    history = {"best_twin_recall@1": 0.8125, "best_twin_recall@10": 0.96875, "best_twin_mrr": 0.875, "holdout_images": 16}
    line = evaluation.label_free_summary(history)
    assert "16 held-out images" in line and "twin_recall@1 0.812" in line and "twin_mrr 0.875" in line
    assert "not recorded" in evaluation.label_free_summary({"loss": [1.0]})
    assert "not recorded" in evaluation.label_free_summary(None)


@pytest.mark.parametrize("engine", ["exact", "faiss"])
def test_precision_through_an_engine_matches_the_exact_computation(engine):
    from imgsim.runs.evaluation import engine_precision_at_k, precision_at_k

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(20), 30)
    centres = rng.normal(size=(20, 16))
    vectors = (centres[labels] + 0.9 * rng.normal(size=(len(labels), 16))).astype(np.float32)
    exact = precision_at_k(vectors, labels, k=10)
    assert 0.3 < exact < 0.99  # neither trivial nor hopeless
    assert engine_precision_at_k(vectors, labels, 10, engine) == pytest.approx(exact, abs=0.02 if engine == "faiss" else 1e-9)
