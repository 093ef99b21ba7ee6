"""The labelling assistant on versions of clustered vectors whose true classes are known."""

import numpy as np
import pytest

from imgsim import labelling
from imgsim.labelling import graph as knn
from imgsim.storage import store
from imgsim.storage.annotations import ImageLabel, LabelStore, graph_path
from tests.helpers import vector_version

CLASSES = 12


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """600 vectors around 12 centres; (version, true class of each row)."""
    return vector_version(tmp_path_factory.mktemp("clustered") / "models", 600, CLASSES)


def person_labels(version, truth, rows, wrong=()):
    return {int(version.ids[r]): ImageLabel("wrong" if r in wrong else f"class {truth[r]}") for r in rows}


def accuracy(version, truth, propagation):
    return np.mean([propagation.name(r) == f"class {truth[r]}" for r in range(len(version))])


def test_the_graph_comes_from_the_engine_and_is_kept_per_version(clustered, monkeypatch):
    version, _ = clustered
    graph = labelling.neighbour_graph(version)
    assert graph.rows.shape == (len(version), labelling.K)
    assert not (graph.rows == np.arange(len(version))[:, None]).any()  # never itself
    assert (np.diff(graph.sims, axis=1) <= 1e-6).all()  # best first
    exact = version.vectors @ version.vectors[7] / np.linalg.norm(version.vectors, axis=1) / np.linalg.norm(version.vectors[7])
    exact[7] = -np.inf
    assert graph.rows[7, 0] == np.argmax(exact)
    assert graph_path(version.model_dir, version.id, labelling.K).is_file()
    knn._graphs.clear()
    monkeypatch.setattr(knn, "compute_graph", lambda *a: pytest.fail("recomputed instead of read from disk"))
    assert np.array_equal(labelling.neighbour_graph(version).rows, graph.rows)


def test_one_label_per_class_labels_every_image_and_never_changes_a_persons(clustered):
    version, truth = clustered
    rows = [int(np.flatnonzero(truth == c)[0]) for c in range(CLASSES)]
    wrong = {rows[0]}  # a person's mistake stays as they gave it
    propagation = labelling.propagate(version, person_labels(version, truth, rows, wrong))
    assert (propagation.label >= 0).all()
    assert propagation.name(rows[0]) == "wrong" and propagation.person[rows].all()
    assert (propagation.confidence[rows] == 1).all()
    assert accuracy(version, truth, propagation) > 0.9
    counts = propagation.counts(0.0)
    assert counts["person"] == CLASSES and counts["person"] + counts["propagated"] + counts["unsure"] == len(version)


def test_without_labels_nothing_is_propagated(clustered):
    version, _ = clustered
    propagation = labelling.propagate(version, {})
    assert propagation.classes == [] and (propagation.label == -1).all()
    assert {propagation.source(r) for r in range(len(version))} == {"none"}


def test_suggestions_ask_about_every_class_first_and_never_repeat_a_labelled_image(clustered):
    version, truth = clustered
    first = labelling.suggest(version, CLASSES)
    assert len(first) == CLASSES and len({s.row for s in first}) == CLASSES
    assert len({truth[s.row] for s in first}) == CLASSES  # one label a class is enough to be asked about each
    assert all(s.suggested is None and ("no label" in s.reason or "reach" in s.reason) for s in first)
    labels = person_labels(version, truth, [s.row for s in first])
    propagation = labelling.propagate(version, labels)
    again = labelling.suggest(version, 20, propagation)
    assert not {s.row for s in again} & {s.row for s in first}
    assert all(s.suggested is not None and 0 <= s.confidence <= 1 for s in again)


def test_one_ask_a_class_finds_the_small_classes_beside_large_ones(tmp_path):
    """Three classes of about 190 images and seven of about 25: clusters of the collection split the large ones."""
    version, truth = vector_version(tmp_path / "models", 800, 10, spread=0.6, seed=4, weights=[8] * 3 + [1] * 7)
    asked = [s.row for s in labelling.suggest(version, 10)]
    assert len(set(asked)) == 10 and len({truth[r] for r in asked}) == 10


def test_review_finds_a_wrong_label_and_only_it(tmp_path):
    version, truth = vector_version(tmp_path / "models", 300, 5, spread=0.3, seed=1)
    members = np.flatnonzero(truth == 0)
    rows = [int(np.flatnonzero(truth == c)[0]) for c in range(5)] + members[1:4].tolist()
    labels = person_labels(version, truth, rows)
    labels[int(version.ids[members[3]])] = ImageLabel("class 3")  # a slip: a class-0 image labelled class 3
    findings = labelling.review(version, labelling.propagate(version, labels))
    mistakes = [f for f in findings if f.kind == "mistake"]
    # the slip cannot vouch for itself through the neighbours it labelled: judged without it, they say class 0
    assert [(f.row, f.label, f.suggested) for f in mistakes] == [(members[3], "class 3", "class 0")]


def test_review_finds_a_slip_among_two_labels_a_class(tmp_path):
    version, truth = vector_version(tmp_path / "models", 300, 5, spread=0.3, seed=1)
    rows = [int(r) for c in range(5) for r in np.flatnonzero(truth == c)[:2]]
    labels = person_labels(version, truth, rows)
    slip = rows[1]  # the second class-0 image labelled class 3: class 0 keeps one label, class 3 gets three
    labels[int(version.ids[slip])] = ImageLabel("class 3")
    propagation = labelling.propagate(version, labels)
    mistakes = [f for f in labelling.review(version, propagation) if f.kind == "mistake"]
    assert [(f.row, f.label, f.suggested) for f in mistakes] == [(slip, "class 3", "class 0")]
    assert propagation.held.judged.sum() == 9  # every label but the one left alone in class 0 is judged
    clean = labelling.propagate(version, person_labels(version, truth, rows))
    assert not [f for f in labelling.review(version, clean) if f.kind == "mistake"]  # control: none without the slip


def test_an_image_far_from_everything_is_an_outlier(tmp_path):
    version, truth = vector_version(tmp_path / "models", 200, 3, spread=0.2, seed=2)
    from imgsim.storage.manifest import Manifest
    from imgsim.storage.records import Records

    vectors = np.vstack([version.vectors, -version.vectors.mean(axis=0, keepdims=True) + 5.0])
    records = Records.concat([version.records, Records.build(["/collection/odd.jpg"], [1], [0], ["f" * 40], [0],
                                                             np.zeros((1, 2), np.float32))])
    with store.writer_lock(version.model_dir):
        entries, state = store.save_collection(version.model_dir, "exact", records, vectors)
        store.write_version(version.model_dir, manifest=Manifest(kind="index", settings=version.manifest["settings"],
                                                                           images_root=version.manifest["images_root"]), records=entries,
                            engine=state, centres=version.centres, history={}, save_model=lambda p: p.write_bytes(b""))
    grown = store.load_version(version.model_dir)
    outliers = [f for f in labelling.review(grown) if f.kind == "outlier"]
    assert outliers and outliers[0].path == "/collection/odd.jpg"


def test_labels_follow_images_into_a_new_version(tmp_path):
    from imgsim.storage.manifest import Manifest
    from imgsim.storage.records import Records

    version, _ = vector_version(tmp_path / "models", 60, 3)
    image = int(version.ids[5])
    LabelStore(version.model_dir).set([image], "kept")
    assert labelling.propagate(version).name(5) == "kept"  # read from the store by default
    order = np.roll(np.arange(len(version)), 7)  # the same images in another order: rows move, ids stay
    old = version.records
    records = Records.build([old.paths[i] for i in order], old.sizes[order], old.mtimes[order],
                            [old.sha1[i].decode() for i in order], old.groups[order], old.map2d[order])
    with store.writer_lock(version.model_dir):
        entries, state = store.save_collection(version.model_dir, "exact", records, version.vectors[order])
        store.write_version(version.model_dir, manifest=Manifest(kind="index", settings=version.manifest["settings"]),
                            records=entries, engine=state, centres=version.centres, history={},
                            save_model=lambda p: p.write_bytes(b""))
    grown = store.load_version(version.model_dir)
    [row] = np.flatnonzero(grown.ids == image).tolist()
    assert grown.id != version.id and row != 5
    propagation = labelling.propagate(grown)
    assert propagation.name(row) == "kept" and propagation.source(row) == "person"


def test_paths_as_a_person_types_them(clustered, tmp_path, monkeypatch):
    version, _ = clustered
    path = version.paths[3]
    monkeypatch.chdir("/")
    assert labelling.rows_for_paths(version, [path, path.lstrip("/"), "/collection/./" + path.split("/", 2)[2]]) == [3, 3, 3]
    relative = path.split("/collection/", 1)[1]  # relative to the collection's folder
    monkeypatch.chdir(tmp_path)
    assert labelling.rows_for_paths(version, [relative]) == [3]
    from imgsim.core.errors import ImgsimError

    with pytest.raises(ImgsimError, match="not an image of the active version"):
        labelling.rows_for_paths(version, [path, "/elsewhere/x.jpg"])
