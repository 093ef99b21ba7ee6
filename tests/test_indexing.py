"""Collections that grow: `index` writes only what changed, ids and names last, engines can be switched."""

import json
import shutil

import numpy as np
import pytest

from imgsim import Settings
from imgsim.runs.indexing import index
from imgsim.search import Searcher
from imgsim.storage import store
from imgsim.storage.group_names import load_labels, save_names
from tests.helpers import TINY


@pytest.fixture
def grown(model_copy, tiny_collection, tmp_path):
    """A private copy of the collection and model; returns (settings, collection folder)."""
    photos = shutil.copytree(tiny_collection, tmp_path / "photos")
    settings = Settings(model_dir=model_copy, images=photos, **TINY)
    moved = index(settings)  # the copy's paths differ: every image leaves and comes back once
    assert moved.added == moved.removed == len(list(photos.rglob("*.jpg")))
    return settings, photos


def files_under(folder):
    return {p.name: p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def test_index_writes_only_the_new_images_and_refers_to_the_rest(grown):
    settings, photos = grown
    before = store.load_version(settings.model_dir)
    segments_before = files_under(settings.model_dir / "segments")
    extra = sorted(photos.rglob("*.jpg"))[:3]
    for i, src in enumerate(extra):
        shutil.copy(src, photos / f"added-{i}.jpg")

    report = index(settings)
    after = store.load_version(settings.model_dir)
    assert report.added == 3 and report.removed == 0 and len(after) == len(before) + 3
    written = {name: size for name, size in files_under(settings.model_dir / "segments").items() if name not in segments_before}
    old_entries = before.manifest["records"]
    assert after.manifest["records"][: len(old_entries)] == old_entries  # the old segment is referenced, not copied
    new_vector_bytes = 3 * before.centres.shape[1] * 4
    assert sum(written.values()) < 20 * new_vector_bytes + 8192  # a few small files: 3 records and 3 vectors
    assert not any(name.endswith(".rec.paths.json") and size > 2000 for name, size in written.items())
    # ids are stable: every image that was there keeps its id
    assert set(before.ids.tolist()) <= set(after.ids.tolist())
    assert np.array_equal(after.map2d[: len(before)], before.map2d)  # earlier points stay where they were


def test_removed_files_become_tombstones_and_never_come_back(grown):
    settings, photos = grown
    gone = sorted(photos.rglob("*.jpg"))[:2]
    for path in gone:
        path.unlink()
    report = index(settings)
    version = store.load_version(settings.model_dir)
    assert report.removed == 2 and not set(map(str, gone)) & set(version.paths)
    searcher = Searcher(version)
    result = searcher.query(sorted(photos.rglob("*.jpg"))[0], n=len(version), scope="all")
    assert not {str(p) for p in gone} & {h.path for h in result.results}


def test_names_survive_index_and_move_with_their_images_on_retrain(grown):
    from imgsim.runs.training import train

    settings, photos = grown
    first = store.current_id(settings.model_dir)
    save_names(settings.model_dir, first, {0: "brick walls", 1: "skies"})
    shutil.copy(sorted(photos.rglob("*.jpg"))[0], photos / "one-more.jpg")
    indexed = index(settings).version
    assert {g: label.name for g, label in load_labels(settings.model_dir, indexed).items()} == {0: "brick walls", 1: "skies"}
    assert not any(label.carried for label in load_labels(settings.model_dir, indexed).values())

    def names_on(version_id):
        """Each carried name (leading or merged) -> the new group it sits on."""
        labels = load_labels(settings.model_dir, version_id)
        assert labels and all(label.carried for label in labels.values())
        return {name: g for g, label in labels.items() for name in (label.name, *label.merged)}

    parent, where = store.load_version(settings.model_dir, indexed), {"brick walls": 0, "skies": 1}
    for clusters in (3, 1):  # 3: the names may or may not share a group; 1: every group merges into one
        retrained = train(settings.replace(seed=1, clusters=clusters)).version
        child = store.load_version(settings.model_dir, retrained)
        placed = names_on(retrained)
        assert sorted(placed) == ["brick walls", "skies"]  # no name is ever dropped
        for name, group in placed.items():  # and each sits on a group holding some of its old images
            old_ids = set(parent.ids[parent.groups == where[name]].tolist())
            assert old_ids & set(child.ids[child.groups == group].tolist())
        parent, where = child, placed
    [merged] = load_labels(settings.model_dir, retrained).values()  # one group: one name leads, the other is listed
    assert len(merged.merged) == 1 and {merged.name, *merged.merged} == {"brick walls", "skies"}


def test_a_crash_between_segment_write_and_switch_leaves_the_previous_version_answering(grown, monkeypatch):
    settings, photos = grown
    before = store.current_id(settings.model_dir)
    shutil.copy(sorted(photos.rglob("*.jpg"))[0], photos / "late.jpg")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after its segments were written

    monkeypatch.setattr(store, "write_version", crash)
    with pytest.raises(KeyboardInterrupt):
        index(settings)
    monkeypatch.undo()
    assert store.current_id(settings.model_dir) == before
    version = store.load_version(settings.model_dir)
    assert str(photos / "late.jpg") not in version.paths
    assert len(Searcher(version).query(photos / "late.jpg", n=3).results) == 3
    assert index(settings).added == 1  # the next run picks the file up


def test_index_moves_the_collection_to_another_engine_without_re_encoding(grown, monkeypatch):
    import imgsim.runs.encoding

    settings, _ = grown
    before = store.load_version(settings.model_dir)
    calls = []
    real = imgsim.runs.encoding.encode_files
    monkeypatch.setattr(imgsim.runs.encoding, "encode_files", lambda enc, paths, *a, **k: (calls.append(len(paths)), real(enc, paths, *a, **k))[1])
    report = index(settings, engine="faiss")
    after = store.load_version(settings.model_dir)
    assert report.version and calls == [0] and after.manifest["engine"]["engine"] == "faiss"
    np.testing.assert_allclose(after.vectors, before.vectors, atol=1e-6)
    query = before.vectors[3]
    assert [h for h, _ in after.engine().search(query, 5)] == [h for h, _ in before.engine().search(query, 5)]


def test_a_version_written_by_imgsim_0_1_is_read_and_indexed_into_the_new_format(grown):
    from imgsim.storage.records import Records

    settings, photos = grown
    version = store.load_version(settings.model_dir)
    legacy = settings.model_dir / "versions" / (version.id[:-4] + "0dd0")
    legacy.mkdir()
    shutil.copy(version.model_path, legacy / "model.keras")
    arrays = {"vectors": version.vectors, "groups": version.groups.astype(np.int32), "centres": version.centres,
              "map2d": version.map2d}
    for name, array in arrays.items():
        np.save(legacy / f"{name}.npy", array)
    files = [{"path": p, "size": int(s), "mtime_ns": int(m), "sha1": h.decode()} for p, s, m, h in
             zip(version.paths, version.records.sizes, version.records.mtimes, version.records.sha1)]
    (legacy / "files.json").write_text(json.dumps(files))
    (legacy / "history.json").write_text("{}")
    checksums = {p.name: store.sha256_of(p) for p in legacy.iterdir()}
    (legacy / "manifest.json").write_text(json.dumps({"id": legacy.name, "kind": "train", "settings": version.manifest["settings"],
                                                      "checksums": checksums}))
    store.set_current(settings.model_dir, legacy.name)
    old = store.load_version(settings.model_dir)
    assert isinstance(old.records, Records) and old.ids.tolist() == version.ids.tolist()
    assert Searcher(old).query(sorted(photos.rglob("*.jpg"))[0], n=4).results
    shutil.copy(sorted(photos.rglob("*.jpg"))[0], photos / "new.jpg")
    new = store.load_version(settings.model_dir, index(settings).version)
    assert new.manifest["format"] == store.FORMAT and len(new) == len(version) + 1


def test_index_reads_the_headers_of_new_files_only(grown, monkeypatch):
    import imgsim.inputs.collection

    settings, photos = grown
    shutil.copy(sorted(photos.rglob("*.jpg"))[0], photos / "fresh.jpg")
    opened = []
    real = imgsim.inputs.collection.sniff
    monkeypatch.setattr(imgsim.inputs.collection, "sniff", lambda path: (opened.append(path), real(path))[1])
    assert index(settings).added == 1
    assert opened == [str(photos / "fresh.jpg")]  # unchanged files were not opened again


def test_files_that_would_cost_seconds_of_cpu_are_skipped_and_reported_not_decoded(grown):
    """A scan bomb passes the header scan and is refused by the decode; a marker flood is refused by the scan."""
    from tests.test_images import jpeg_with_header, jpeg_with_scans

    settings, photos = grown
    shutil.copy(min(photos.rglob("*.jpg")), photos / "fresh.jpg")
    (photos / "bomb.jpg").write_bytes(jpeg_with_scans(20_000, size=512))  # 0.25 MB: ~4 s of CPU to decode
    (photos / "comments.jpg").write_bytes(jpeg_with_header(b"\xff\xfe\x00\x02" * 5000))
    report = index(settings)
    assert report.added == 1
    reasons = report.skipped.reasons
    assert "JPEG has 20000 progressive scans, more than 100: refused" in reasons[str(photos / "bomb.jpg")]
    assert "JPEG has more than 1000 markers: refused" in reasons[str(photos / "comments.jpg")]
    assert "bomb.jpg" in report.summary() and "comments.jpg" in report.summary()
    paths = store.load_version(settings.model_dir).paths
    assert str(photos / "fresh.jpg") in paths and str(photos / "bomb.jpg") not in paths


def test_records_are_compacted_once_a_quarter_of_them_is_dead(grown):
    settings, photos = grown
    for path in sorted(photos.rglob("*.jpg"))[:8]:  # 8 of 24: a third dead
        path.unlink()
    index(settings)
    version = store.load_version(settings.model_dir)
    [entry] = version.manifest["records"]
    assert entry["dead"] is None and entry["rows"] == len(version) == 16
