from pathlib import Path

import numpy as np
import pytest

from imgsim.search import Searcher


@pytest.fixture(scope="module")
def searcher(trained_model_dir):
    return Searcher.load(trained_model_dir)


def test_a_folder_without_a_version_is_no_model_in_one_line(tmp_path):
    from imgsim.core.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="no trained model in .* yet: run `imgsim train"):
        Searcher.load(tmp_path / "models")


def test_query_by_path_returns_n_results_best_first_without_itself(searcher):
    own = searcher.paths[0]
    result = searcher.query(own, n=5, scope="all")
    paths = [h.path for h in result.results]
    assert len(paths) == 5 and own not in paths
    scores = [h.score for h in result.results]
    assert scores == sorted(scores, reverse=True)
    for hit in result.results:
        assert hit.distance == pytest.approx(1 - hit.score, abs=1e-5)
        assert -1.0 <= hit.score <= 1.0


def test_uploaded_bytes_of_a_collection_file_find_that_file_first_as_exact(searcher):
    own = searcher.paths[3]
    with open(own, "rb") as fh:
        result = searcher.query(fh.read(), n=4, scope="all", name="upload.jpg")
    first, *rest = result.results
    assert (first.path, first.score, first.exact) == (own, 1.0, True)  # "this image is in your collection as ..."
    assert len(rest) == 3 and not any(h.exact or h.path == own for h in rest)
    assert result.query == "upload.jpg"


def test_byte_identical_copies_come_back_first_but_never_the_file_itself(model_copy, tiny_collection, tmp_path):
    import shutil

    from imgsim import Settings
    from imgsim.runs.indexing import index
    from tests.helpers import TINY

    photos = shutil.copytree(tiny_collection, tmp_path / "photos")
    original = sorted(photos.rglob("*.jpg"))[0]
    copies = [photos / f"copy.{suffix}" for suffix in ("jpeg", "png", "bmp")]  # the same bytes under other names
    for copy in copies:
        shutil.copy(original, copy)
    index(Settings(model_dir=model_copy, images=photos, **TINY))
    searcher = Searcher.load(model_copy)
    result = searcher.query(original, n=6, scope="cluster")
    assert [h.path for h in result.results[:3]] == sorted(map(str, copies))
    assert all(h.exact and h.score == 1.0 for h in result.results[:3])
    assert str(original) not in [h.path for h in result.results] and len(result.results) == 6
    assert not any(h.exact for h in result.results[3:])
    assert Searcher.load(model_copy).query(original, n=2).to_dict()["results"][0]["exact"] is True


def test_a_file_named_like_a_url_is_read_as_the_file(searcher, tmp_path, monkeypatch):
    """`http:copy.jpg` is a file name (no `//`): the query read it as a URL and said "the URL has no host"."""
    own = searcher.paths[1]
    monkeypatch.chdir(tmp_path)
    Path("http:copy.jpg").write_bytes(Path(own).read_bytes())
    first = searcher.query("http:copy.jpg", n=3, scope="all").results[0]
    assert (first.path, first.exact) == (own, True)


def test_cluster_scope_searches_the_predicted_group_first(searcher):
    groups = searcher.version.groups
    result = searcher.query(searcher.paths[0], n=3, scope="cluster")
    group_size = int((groups == result.cluster).sum()) - int(groups[0] == result.cluster)
    in_group = [h for h in result.results if h.cluster == result.cluster]
    assert len(in_group) == min(3, group_size)
    assert len(result.results) == 3  # topped up from the rest when the group is small


def test_query_vector_matches_the_indexed_vector_of_the_same_file(searcher):
    # One preprocessing path: encoding a file at query time gives the vector stored at index time.
    path = searcher.paths[5]
    from imgsim.inputs.images import load_image

    vector = searcher.encode(load_image(path, searcher.image_size)[None])[0]
    np.testing.assert_allclose(vector, searcher.version.vectors[5], atol=1e-4)


def test_bad_scope_is_refused(searcher):
    with pytest.raises(ValueError, match="scope"):
        searcher.query(searcher.paths[0], n=3, scope="everything")


def test_shared_loads_a_version_once_however_many_threads_ask(trained_model_dir, monkeypatch):
    import threading

    from imgsim import search
    from imgsim.storage import store

    loads = []
    real_init = Searcher.__init__

    def counting_init(self, *args, **kwargs):
        loads.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Searcher, "__init__", counting_init)
    monkeypatch.setattr(search, "_shared", {})
    version_id = store.current_id(trained_model_dir)
    got = []
    threads = [threading.Thread(target=lambda: got.append(search.shared(trained_model_dir, version_id)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and len(got) == 4 and all(s is got[0] for s in got)
    assert got[0].version.id == version_id


def test_warm_up_loads_the_current_version_and_says_none_without_one(trained_model_dir, tmp_path, monkeypatch):
    from imgsim import search
    from imgsim.storage import store

    monkeypatch.setattr(search, "_shared", {})
    assert search.warm_up(tmp_path / "no-models-yet") is None
    version_id = search.warm_up(trained_model_dir)
    assert version_id == store.current_id(trained_model_dir)
    assert (str(trained_model_dir), version_id) in search._shared


def test_a_url_query_is_kept_as_its_decoded_input_never_as_its_bytes(http_server, monkeypatch):
    import io

    from PIL import Image

    import imgsim.search
    from imgsim.core.cache import ByteBudgetCache
    from imgsim.core.errors import ImageError
    from imgsim.inputs.images import decode
    from imgsim.search import URL_QUERY_BYTES, url_query

    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    cache = ByteBudgetCache(URL_QUERY_BYTES, ttl=600)
    monkeypatch.setattr(imgsim.search, "url_queries", cache)
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), np.uint8)).save(out, "JPEG", quality=95)
    photo = out.getvalue()
    url = http_server.serve("/cache/photo.jpg", photo, content_type="image/jpeg")

    query = url_query(url, 32)
    assert np.array_equal(query.image, decode(photo, 32))  # exactly what the model would have read
    assert len(photo) > 2_000_000 and cache.nbytes == query.nbytes < 50_000
    requests = len(http_server.requests)
    assert url_query(url, 32) is query and len(http_server.requests) == requests  # fetched once
    assert url_query(url, 64).pixels.shape == (64, 64, 3)  # another model size is its own entry

    held = cache.nbytes
    for i in range(12):  # the probe's 12 large URLs that were not images: refused, and nothing kept
        junk = http_server.serve(f"/cache/junk-{i}.jpg", rng.bytes(4_000_000), content_type="image/jpeg")
        with pytest.raises(ImageError):
            url_query(junk, 32)
    assert cache.nbytes == held and len(cache) == 2
