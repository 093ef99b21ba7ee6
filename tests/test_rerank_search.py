"""The re-check in the whole path: training and indexing keep local features, queries re-check with them.

A small model (64 px: the smallest input that gets features) trained for one epoch on views of three
photographs; what is checked here is the plumbing (features kept, found, used, turned off), not the
model's quality (benchmarks/quality_rerank.py measures that).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from imgsim import Settings
from imgsim.cli import main
from imgsim.inputs.demo import augment, source_photos
from imgsim.search import Searcher, rerank
from imgsim.storage import store
from imgsim.storage.keypoints import MANIFEST_KEY

SMALL = dict(image_size=64, latent_dim=16, epochs=1, batch_size=8, clusters=2, seed=0, workers=1, min_steps=0)
PHOTOS = ("grass", "gravel", "brick")


def write_views(folder: Path, name: str, seeds) -> list[Path]:
    photo = source_photos()[name]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"{name}_{seed:03d}.jpg"
        augment(photo, np.random.default_rng(seed), 128, area=(0.5, 0.8), colour=0.3).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    base = tmp_path_factory.mktemp("rerank")
    images = base / "images"
    for number, name in enumerate(PHOTOS):
        write_views(images / name, name, range(10 * number, 10 * number + 6))
    queries = {name: write_views(base / "queries", name, [100 + number]) for number, name in enumerate(PHOTOS)}
    return images, queries


@pytest.fixture(scope="module")
def trained(tmp_path_factory, collection):
    from imgsim.runs.training import train

    images, _ = collection
    model_dir = tmp_path_factory.mktemp("rerank-model")
    train(Settings(model_dir=model_dir, images=images, **SMALL))
    return model_dir


def test_training_keeps_every_image_s_features(trained):
    version = store.load_version(trained)
    found = rerank.open_features(version)
    assert found is not None and len(found) == len(version)
    assert (found.rows_of(version.ids) >= 0).all()
    assert (found.gather(version.ids)["counts"] > 0).all()  # photographs have corners


def test_a_query_re_checks_its_top_answers_and_says_so(trained, collection):
    _, queries = collection
    searcher = Searcher.load(trained)
    result = searcher.query(queries["grass"][0], n=8, scope="all")
    inliers = [hit.inliers for hit in result.results]
    assert all(isinstance(count, int) for count in inliers)
    same = [hit for hit in result.results if hit.same_scene]
    assert same and all("/grass/" in hit.path for hit in same)
    assert result.results[:len(same)] == same  # the same scene first
    plain = searcher.query(queries["grass"][0], n=8, scope="all", recheck=False)
    assert all(hit.inliers is None and hit.same_scene is None for hit in plain.results)
    assert result.rechecked == len(store.load_version(trained)) and plain.rechecked == 0  # all 18 compared
    assert [h.score for h in plain.results] == sorted((h.score for h in plain.results), reverse=True)


def test_the_search_page_says_the_answers_were_re_checked(trained, collection):
    from streamlit.testing.v1 import AppTest

    _, queries = collection
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=120)
    at.session_state["settings"] = Settings(model_dir=trained)
    at.run()
    query = queries["brick"][0]
    at.file_uploader(key="upload").set_value((query.name, query.read_bytes(), "image/jpeg")).run()
    assert not at.exception and not at.error
    [line] = [c.value for c in at.main.caption if "re-checked" in c.value or "similarity alone" in c.value]
    assert line.startswith("The best ") and "candidates were re-checked by their keypoints" in line
    assert any("same scene" in c.value for c in at.main.caption)  # a view of the brick wall, badged


def test_a_batch_search_re_checks_each_image_decoding_it_once(trained, collection, monkeypatch):
    import imgsim
    import imgsim.search

    _, queries = collection
    collection_ = imgsim.open(trained)
    one = collection_.search(queries["gravel"][0], n=4, scope="all")
    monkeypatch.setattr(imgsim.search, "decode", lambda *a, **k: pytest.fail("decoded a second time"))
    [batch] = collection_.search_many([queries["gravel"][0].read_bytes()], n=4, scope="all")
    assert batch.rechecked > 0 and [h.id for h in batch.hits] == [h.id for h in one.hits]
    assert [h.inliers for h in batch.hits] == [h.inliers for h in one.hits]


def test_the_cli_shows_the_evidence_and_turns_the_check_off(trained, collection, capsys):
    _, queries = collection
    source = queries["gravel"][0]
    assert main(["query", str(source), "--model-dir", str(trained), "--scope", "all", "-n", "4", "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert all(isinstance(hit["inliers"], int) for hit in checked["results"])
    assert main(["query", str(source), "--model-dir", str(trained), "--scope", "all", "-n", "4", "--json",
                 "--no-recheck"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert all(hit["inliers"] is None for hit in plain["results"])


def forget_features(model_dir: Path) -> None:
    """Make the current version one made before local features: its manifest without them (as imgsim 0.3.0 wrote)."""
    folder = store.version_folder(model_dir, store.current_id(model_dir))
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest[MANIFEST_KEY]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert rerank.open_features(store.load_version(model_dir)) is None


def test_index_keeps_features_for_new_images_and_adds_those_a_version_lacks(tmp_path):
    from imgsim.runs.indexing import index
    from imgsim.runs.training import train

    images = tmp_path / "images"
    for number, name in enumerate(PHOTOS[:2]):
        write_views(images / name, name, range(10 * number, 10 * number + 4))
    settings = Settings(model_dir=tmp_path / "model", images=images, **SMALL)
    train(settings)

    def lacking():
        version = store.load_version(settings.model_dir)
        found = rerank.open_features(version)
        return set(version.paths) if found is None else {p for p, i in zip(version.paths, version.ids)
                                                         if found.rows_of([i])[0] < 0}

    first = write_views(images / "brick", "brick", [40])
    index(settings.replace(recheck=False))
    assert lacking() == {str(first[0])}  # the check off: none for the new image, the others' carried over

    forget_features(settings.model_dir)  # as a version made before features
    second = write_views(images / "brick", "brick", [41])
    report = index(settings)  # the new image's features, and all those the version lacked
    assert report.added == 1 and lacking() == set()
    from imgsim import labelling
    from imgsim.storage.annotations import graph_path

    assert graph_path(settings.model_dir, report.version, labelling.K).is_file()  # the new version's graph, checked
    assert index(settings).version is None  # nothing lacking now: no new version

    for path in first + second:
        path.unlink()
    index(settings)
    assert lacking() == set()
    from imgsim.storage.prune import prune

    assert prune(settings.model_dir, keep=1).removed  # the older versions go; the features kept stay
    assert Searcher.load(settings.model_dir).keypoints is not None

    (images / "gravel").rename(images / "gravel-moved")  # the files move; the version still lists them where they were
    searcher = Searcher.load(settings.model_dir)
    row = searcher.version.paths.index(next(p for p in searcher.version.paths if "/gravel/" in p))
    result = searcher.search_vector(searcher.version.vectors[row], 3, "all", exclude=[row],
                                    features=searcher.stored_features(row))
    assert result.rechecked == len(searcher.version) - 1  # the stored features: nothing read from the moved files
    index(settings)
    moved = store.load_version(settings.model_dir)
    assert not any("/gravel/" in p for p in moved.paths) and any("/gravel-moved/" in p for p in moved.paths)
    assert lacking() == set()  # the moved files' features found again at their new paths


def test_training_keeps_a_labelling_graph_whose_checked_pairs_show_one_photograph(trained):
    """The run keeps each image's neighbours re-checked (imgsim.runs.neighbours) before the version is current:
    the graph labelling reads says which pairs a geometric check called the same scene, and those are views of
    one photograph (the folder), whatever the one-epoch model's latents put next to them."""
    from imgsim import labelling
    from imgsim.storage.annotations import graph_path

    version = store.load_version(trained)
    assert graph_path(trained, version.id, labelling.K).is_file()  # kept by the run, not made on first use
    graph = labelling.neighbour_graph(version)
    folders = np.array([Path(p).parent.name for p in version.paths])
    same = np.argwhere(graph.same)
    assert len(same) >= len(version)  # views of one photograph: most images have one checked
    assert (folders[same[:, 0]] == folders[graph.rows[same[:, 0], same[:, 1]]]).all()
    from imgsim.labelling.graph import compute_graph
    from imgsim.runs.neighbours import LEAD

    nearest = compute_graph(version).rows[:, :LEAD]  # the latents' nearest stay, whatever the check says
    assert all(set(near) <= set(kept) for near, kept in zip(nearest.tolist(), graph.rows.tolist()))


def test_a_run_without_features_leaves_the_latents_graph_to_first_use(tmp_path, collection):
    from imgsim import labelling
    from imgsim.runs.training import train
    from imgsim.storage.annotations import graph_path

    images, _ = collection
    settings = Settings(model_dir=tmp_path / "model", images=images, recheck=False, **SMALL)
    train(settings)
    version = store.load_version(settings.model_dir)
    assert not graph_path(settings.model_dir, version.id, labelling.K).exists()
    graph = labelling.neighbour_graph(version)  # made now, from the latents alone
    assert not graph.same.any() and (graph.rows >= 0).all()


def test_the_labelling_graph_checks_an_image_against_its_mirror_image_from_its_pixels(tmp_path):
    """Stored features are an image's alone; the run decodes each image again so that its mirror image's
    features are checked too, as a query's are: a mirrored copy is then called the same scene directly."""
    from PIL import Image, ImageOps

    from imgsim.labelling.graph import nearest
    from imgsim.runs.neighbours import pixel_queries
    from imgsim.runs.training import train

    images = tmp_path / "images"
    for number, name in enumerate(PHOTOS):
        for path in write_views(images / name, name, range(10 * number, 10 * number + 3)):
            with Image.open(path) as image:
                ImageOps.mirror(image).save(path.with_name("mirror-" + path.name), quality=90)
    settings = Settings(model_dir=tmp_path / "model", images=images, **SMALL)
    train(settings)
    version = store.load_version(settings.model_dir)
    candidates = nearest(version, len(version) - 1)  # every other image: the pairs do not hang on the model

    def mirror_pairs_called_same(queries) -> int:
        rows, _, same = rerank.recheck_neighbours(version, *candidates, queries=queries)
        names = [Path(p).name for p in version.paths]
        return sum(names[rows[i, c]] == "mirror-" + names[i] for i, c in zip(*np.nonzero(same)))

    stored_only = mirror_pairs_called_same(())
    from_pixels = mirror_pairs_called_same(pixel_queries(version))
    assert from_pixels >= 6 and from_pixels > stored_only  # most of the 9 copies, and more than without


def test_a_failing_graph_step_costs_the_graph_not_the_version(tmp_path, collection, monkeypatch, caplog):
    from imgsim import labelling
    from imgsim.runs.training import train
    from imgsim.storage.annotations import graph_path

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the check")

    monkeypatch.setattr(rerank, "recheck_neighbours", broken)
    images, _ = collection
    settings = Settings(model_dir=tmp_path / "model", images=images, **SMALL)
    report = train(settings)
    assert store.current_id(settings.model_dir) == report.version  # trained, and current
    assert not graph_path(settings.model_dir, report.version, labelling.K).exists()
    assert "labelling keeps the latents' graph (a bug in the check)" in caplog.text
