"""Re-checking the top answers by geometry (imgsim.search.rerank): no model needed, real photographs.

Views are drawn as the evaluation collections draw them (imgsim.inputs.demo.augment: crops, turns, light,
colour) from scikit-image's photographs, at the model's input size.
"""

import json
import logging
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from imgsim.core.errors import ModelNotFoundError
from imgsim.features import local
from imgsim.inputs.demo import augment, source_photos
from imgsim.search import rerank
from imgsim.storage.keypoints import MANIFEST_KEY, KeypointStore, open_store

SIZE = 128


@pytest.fixture(scope="module")
def photos():
    return source_photos()


def view(photo, seed: int, area=(0.6, 0.8)) -> np.ndarray:
    """A view as a model input: (SIZE, SIZE, 3) float32 in [0, 1] (mirrored or not, as the seed draws)."""
    picture = augment(photo, np.random.default_rng(seed), SIZE, area=area, colour=0.3)
    return np.asarray(picture, np.float32) / 255


def stored(tmp_path, images: list[np.ndarray], ids=None):
    """A KeypointStore holding these images' features under ids 0.. (or `ids`), as a version lists it."""
    ids = np.arange(len(images)) if ids is None else np.asarray(ids)
    entry = rerank.save_features(tmp_path, ids, [local.describe(image) for image in images])
    manifest = {MANIFEST_KEY: rerank.manifest_entry([entry])}
    return open_store(tmp_path, manifest, rerank.LAYOUT), manifest


def test_another_view_of_a_photograph_agrees_and_a_look_alike_texture_does_not(photos, tmp_path):
    query = rerank.query_features(view(photos["grass"], 1))
    store, _ = stored(tmp_path, [view(photos["grass"], 7), view(photos["gravel"], 3), view(photos["gravel"], 4)])
    counts, same = rerank.agreement(store, query, [0, 1, 2])
    assert counts[0] >= rerank.MIN_AGREEING and same.tolist() == [True, False, False]
    assert (counts[1:] < rerank.MIN_AGREEING).all() and (counts[1:] >= 0).all()


def test_the_view_of_the_same_scene_moves_above_look_alikes_the_rest_keep_their_order(photos, tmp_path):
    candidates = [view(photos["gravel"], 5), view(photos["brick"], 6), view(photos["grass"], 7),
                  view(photos["gravel"], 8)]
    store, _ = stored(tmp_path, candidates)
    latent_order = [0, 1, 2, 3]  # the look-alikes first, as the latents ranked them
    counts, same = rerank.agreement(store, rerank.query_features(view(photos["grass"], 1)), latent_order)
    assert rerank.reorder(counts, same).tolist() == [2, 0, 1, 3]


def crop(photo, box) -> np.ndarray:
    """A plain crop (left, top, right, bottom as shares of the photograph) as a model input."""
    w, h = photo.size
    picture = photo.crop((box[0] * w, box[1] * h, box[2] * w, box[3] * h)).resize((SIZE, SIZE))
    return np.asarray(picture, np.float32) / 255


@pytest.mark.parametrize("name", ["coffee", "astronaut", "camera"])
def test_a_view_sharing_little_with_the_query_is_found_through_a_view_that_shares_much(photos, tmp_path, name,
                                                                                       monkeypatch):
    """Left part of a photograph as the query, its middle (A) and its right part (B) as candidates: B shares too
    little with the query to be called the same scene directly, but much with A, which is."""
    query = rerank.query_features(crop(photos[name], (0.0, 0.0, 0.55, 0.75)))
    middle, right = crop(photos[name], (0.22, 0.1, 0.78, 0.85)), crop(photos[name], (0.45, 0.25, 1.0, 1.0))
    look_alike = crop(photos["gravel" if name != "gravel" else "grass"], (0.1, 0.1, 0.9, 0.9))
    store, _ = stored(tmp_path, [middle, right, look_alike], ids=[0, 1, 10])
    counts, same = rerank.agreement(store, query, [0, 1])
    assert same.tolist() == [True, False]  # the premise: B alone is not verified by the query
    hits = [(10, 0.9), (1, 0.8), (0, 0.7)]  # as the latents ranked them: the look-alike first
    ordered, checked = rerank.recheck(store, query, hits)
    assert [i for i, _ in ordered] == [0, 1, 10]
    assert checked[1] == (int(counts[1]), True) and checked[2][1] is False
    monkeypatch.setattr(rerank, "HOPS", 0)  # without asking the verified answer, B stays behind the look-alike
    assert [i for i, _ in rerank.recheck(store, query, hits)[0]] == [0, 10, 1]


def test_a_mirrored_view_is_recognised_through_the_query_s_mirror_image(photos, tmp_path):
    query = crop(photos["astronaut"], (0.0, 0.0, 0.8, 0.8))
    mirrored = crop(photos["astronaut"], (0.15, 0.1, 0.95, 0.9))[:, ::-1].copy()
    store, _ = stored(tmp_path, [mirrored])
    found = rerank.query_features(query)
    stacked = store.gather([0])
    columns = (stacked["points"], stacked["angles"], local.scales_of(stacked["levels"]), stacked["descriptors"],
               stacked["counts"])
    from imgsim.features.matching import agreeing

    assert agreeing([found.plain], *columns)[0][0] < rerank.MIN_AGREEING  # the plain features miss it
    assert agreeing([found.mirrored], *columns)[0][0] >= rerank.MIN_AGREEING
    assert rerank.agreement(store, found, [0])[1][0]


def test_mirrored_features_are_the_mirror_image_s_own(photos):
    picture = view(photos["coffee"], 12)
    mirrored = local.describe_query(picture).mirrored
    direct = local.describe(picture[:, ::-1].copy())
    # the same corners at the mirrored places, with (nearly) the same descriptors
    gap = np.abs(mirrored.points[:, None, :] - direct.points[None, :, :]).max(-1)
    pairs = np.argwhere(gap < 1.01)
    assert len(pairs) > 0.8 * len(mirrored)
    bits = np.unpackbits(mirrored.descriptors[pairs[:, 0]] ^ direct.descriptors[pairs[:, 1]], axis=1).sum(1)
    assert np.median(bits) <= 16  # of 256; descriptors of unrelated corners differ in about 128


def test_pictures_without_features_keep_the_latent_order(photos, tmp_path):
    flat = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    assert len(local.describe(flat)) == 0 and len(rerank.query_features(flat).plain) == 0
    small = view(photos["grass"], 13)[:32, :32]  # a tiny model's input: nothing to compare
    assert len(local.describe(small)) == 0
    store, _ = stored(tmp_path, [flat, view(photos["grass"], 14)], ids=[10, 11])
    counts, same = rerank.agreement(store, rerank.query_features(view(photos["gravel"], 15)), [10, 99, 11])
    assert counts[0] <= 0 and counts[1] == -1 and not same.any()  # no keypoints; no stored features at all
    assert rerank.reorder(counts, same).tolist() == [0, 1, 2]
    assert rerank.reorder(np.full(5, -1), np.zeros(5, bool)).tolist() == [0, 1, 2, 3, 4]


def test_the_check_compares_at_most_candidates_whatever_the_number_asked(photos, tmp_path, monkeypatch):
    found = [local.describe(view(photos["grass"], 20 + i)) for i in range(3)]
    store = KeypointStore(tmp_path, rerank.LAYOUT, [rerank.save_features(tmp_path, np.arange(120), found * 40)])
    compared = []

    def counting(query, points, angles, scales, descriptors, counts):
        compared.append(len(descriptors))
        return np.zeros(len(descriptors), np.int64), np.zeros(len(descriptors), np.int64)

    monkeypatch.setattr(rerank, "agreeing", counting)
    counts, _ = rerank.agreement(store, rerank.query_features(view(photos["grass"], 30)), np.arange(120))
    assert compared == [rerank.CANDIDATES]  # the query and its mirror image against 50 candidates, at once
    assert (counts[rerank.CANDIDATES:] == -1).all()


def test_damaged_features_are_not_used_and_the_search_keeps_the_latent_order(photos, tmp_path, caplog):
    _, manifest = stored(tmp_path, [view(photos["grass"], 40)])
    entry = manifest[MANIFEST_KEY]["segments"][0]
    path = tmp_path / "segments" / entry["descriptors"]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    version = SimpleNamespace(model_dir=tmp_path, manifest=manifest, id="20261206-000000-0000")
    with caplog.at_level(logging.WARNING):
        assert rerank.open_features(version) is None
    assert "damaged" in caplog.text and "latents' order" in caplog.text
    (tmp_path / "segments" / entry["points"]).unlink()
    assert rerank.open_features(version) is None  # a missing file too


def test_features_made_another_way_are_not_compared(photos, tmp_path):
    _, manifest = stored(tmp_path, [view(photos["grass"], 41)])
    for key, value in (("format", 99), ("side", 64), ("keypoints", 10)):
        changed = json.loads(json.dumps(manifest))
        changed[MANIFEST_KEY][key] = value
        assert open_store(tmp_path, changed, rerank.LAYOUT) is None
    assert open_store(tmp_path, {}, rerank.LAYOUT) is None  # a version made before features


def test_a_file_claiming_more_rows_than_it_holds_is_refused_without_reading_it(photos, tmp_path):
    from imgsim.core.files import write_file

    _, manifest = stored(tmp_path, [view(photos["grass"], 42)])
    entry = dict(manifest[MANIFEST_KEY]["segments"][0])
    rows = 10**9  # 40 GB of descriptors claimed by a header, in a file of a few hundred bytes

    def crafted(path):
        header = {"descr": "|u1", "fortran_order": False, "shape": (rows, local.KEYPOINTS, local.DESCRIPTOR_BYTES)}
        with open(path, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            fh.write(b"\0" * 64)

    entry["descriptors"] = write_file(tmp_path / "segments", ".kp.descriptors.npy", crafted)  # its own sha256: intact
    entry["rows"] = rows
    tracemalloc.start()
    try:
        with pytest.raises(ModelNotFoundError):
            KeypointStore(tmp_path, rerank.LAYOUT, [entry])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_stored_features_come_back_as_they_were_found(photos, tmp_path):
    images = [view(photos[name], 50 + i) for i, name in enumerate(("coffee", "rocket", "chelsea"))]
    found = [local.describe(image) for image in images]
    store, _ = stored(tmp_path, images, ids=[7, 3, 5])
    stacked = store.gather([5, 7, 4])
    assert stacked["counts"].tolist() == [len(found[2]), len(found[0]), 0]
    n = len(found[0])
    assert np.array_equal(stacked["descriptors"][1, :n], found[0].descriptors)
    assert np.allclose(stacked["points"][1, :n], found[0].points, atol=0.07)  # kept as float16
    assert np.allclose(local.scales_of(stacked["levels"][1, :n]), found[0].scales, rtol=1e-5)
