import json

import numpy as np
import pytest

from imgsim import BusyError, ModelNotFoundError
from imgsim.storage import store
from imgsim.storage.folder import ModelFolder
from imgsim.storage.manifest import Manifest
from imgsim.storage.prune import disk_use, prune
from imgsim.storage.records import Records


def write(model_dir, n=3, groups=None, **kwargs):
    """A small version: n records with vectors in the exact engine, one group unless `groups` says otherwise."""

    groups = np.zeros(n, np.int32) if groups is None else np.asarray(groups)
    records = Records.build([f"/x/{i}.jpg" for i in range(n)], [1] * n, [1] * n, [f"{i:040x}" for i in range(n)],
                            groups, np.zeros((n, 2), np.float32))
    entries, state = store.save_collection(model_dir, "exact", records, np.eye(n, 4, dtype=np.float32))
    return store.write_version(model_dir, manifest=Manifest(kind="train", settings={"image_size": 32}),
                               records=entries, engine=state, centres=np.zeros((int(groups.max()) + 1, 4), np.float32),
                               history={"loss": [1.0]}, save_model=lambda p: p.write_bytes(b"model-bytes"), **kwargs)


def test_written_version_is_current_and_loads_whole(tmp_path):
    vid = write(tmp_path)
    assert store.current_id(tmp_path) == vid
    v = store.load_version(tmp_path)
    assert v.id == vid and v.paths == ["/x/0.jpg", "/x/1.jpg", "/x/2.jpg"]
    assert v.vectors.shape == (3, 4) and v.image_size == 32
    assert set(v.manifest["checksums"]) == {"model.keras", "centres.npy", "history.json"}
    assert v.manifest["engine"]["engine"] == "exact" and len(v.manifest["records"]) == 1
    assert not any((tmp_path / "staging").iterdir())


def test_no_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="imgsim train"):
        store.load_version(tmp_path)


def test_damaged_current_version_falls_back_to_newest_intact(tmp_path, caplog):
    first = write(tmp_path)
    second = write(tmp_path)
    (tmp_path / "versions" / second / "centres.npy").write_bytes(b"garbage")
    v = store.load_version(tmp_path)
    assert v.id == first
    assert "damaged" in caplog.text


def test_every_version_damaged_is_model_not_found(tmp_path):
    vid = write(tmp_path)
    (tmp_path / "versions" / vid / "model.keras").unlink()
    with pytest.raises(ModelNotFoundError):
        store.load_version(tmp_path)


def test_failure_while_saving_leaves_current_untouched(tmp_path):
    first = write(tmp_path)

    def broken_save(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.write_version(tmp_path, manifest=Manifest(kind="train", settings={"image_size": 32}), records=[], engine={}, history={},
                            centres=np.zeros((1, 4)), save_model=broken_save)
    assert store.current_id(tmp_path) == first
    assert store.load_version(tmp_path).id == first
    assert len(list((tmp_path / "versions").iterdir())) == 1


def test_writer_lock_allows_one_run_at_a_time(tmp_path):
    with store.writer_lock(tmp_path):
        assert store.is_busy(tmp_path)
        with pytest.raises(BusyError, match="in progress"):
            with store.writer_lock(tmp_path):
                pass
    assert not store.is_busy(tmp_path)


def test_set_current_switches_and_refuses_unknown_versions(tmp_path):
    first = write(tmp_path)
    write(tmp_path)
    store.set_current(tmp_path, first)
    assert store.load_version(tmp_path).id == first
    with pytest.raises(ModelNotFoundError):
        store.set_current(tmp_path, "no-such-version")
    listed = [m["id"] for m in store.list_versions(tmp_path)]
    assert first in listed and len(listed) == 2


def test_manifest_records_checksums_that_match(tmp_path):
    vid = write(tmp_path)
    manifest = json.loads((tmp_path / "versions" / vid / "manifest.json").read_text())
    for name, digest in manifest["checksums"].items():
        assert store.sha256_of(tmp_path / "versions" / vid / name) == digest


# --- the model folder is a boundary ------------------------------------------------------------

def outside_version(tmp_path):
    """A complete version in another folder, which CURRENT or --use must never reach."""
    other = tmp_path / "elsewhere"
    vid = write(other)
    return other / "versions" / vid


@pytest.mark.parametrize("pointer", ["../../elsewhere/versions/{vid}", "{abs}", "../{vid}", "{vid}/..", ""])
def test_current_pointing_outside_versions_is_ignored(tmp_path, pointer, caplog):
    models = tmp_path / "models"
    mine = write(models)
    foreign = outside_version(tmp_path)
    (models / "CURRENT").write_text(pointer.format(vid=foreign.name, abs=foreign))
    assert store.current_id(models) is None
    assert store.load_version(models).id == mine  # the newest intact version of this folder, never the foreign one


@pytest.mark.parametrize("wanted", ["../../elsewhere/versions/{vid}", "{abs}", "..", ".", "x/../{vid}", "{vid}\n"])
def test_use_refuses_anything_but_a_listed_version_id(tmp_path, wanted, capsys):
    from imgsim.cli import main

    models = tmp_path / "models"
    mine = write(models)
    foreign = outside_version(tmp_path)
    wanted = wanted.format(vid=foreign.name, abs=foreign)
    with pytest.raises(ModelNotFoundError):
        store.set_current(models, wanted)
    assert main(["versions", "--model-dir", str(models), "--use", wanted]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert store.current_id(models) == mine


def test_a_version_folder_that_is_a_link_out_is_not_a_version(tmp_path):
    models = tmp_path / "models"
    mine = write(models)
    foreign = outside_version(tmp_path)
    (models / "versions" / "20991231-235959-ffff").symlink_to(foreign)
    assert [m["id"] for m in store.list_versions(models)] == [mine]
    with pytest.raises(ModelNotFoundError):
        store.set_current(models, "20991231-235959-ffff")


def test_a_file_not_covered_by_checksums_makes_the_version_damaged(tmp_path):
    first = write(tmp_path)
    second = write(tmp_path)
    (tmp_path / "versions" / second / "extra.npy").write_bytes(b"planted")
    assert store.load_version(tmp_path).id == first
    with pytest.raises(ModelNotFoundError, match="extra.npy is not covered"):
        store.load_version(tmp_path, second)


def edit_manifest(folder, change):
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def edit_records(folder, column, array):
    """Replace one column of the version's record segment with a new, correctly named segment file."""
    from imgsim.core.files import write_array

    model_dir = folder.parent.parent
    name = write_array(model_dir / "segments", f".rec.{column}.npy", array)
    edit_manifest(folder, lambda m: m["records"][0].update({column: name}))


@pytest.mark.parametrize("damage", [
    lambda f: edit_manifest(f, lambda m: m.pop("settings")),
    lambda f: edit_manifest(f, lambda m: m["settings"].update(image_size="big")),
    lambda f: edit_manifest(f, lambda m: m.update(id="20000101-000000-0000")),
    lambda f: edit_manifest(f, lambda m: m.pop("checksums")),
    lambda f: (f / "manifest.json").write_text("[1, 2]"),
    lambda f: edit_records(f, "groups", np.zeros(7, np.int64)),
    lambda f: edit_records(f, "groups", np.full(3, 5, np.int64)),
    lambda f: edit_records(f, "ids", np.zeros(3, np.int64)),
    lambda f: edit_records(f, "map2d", np.zeros((2, 2), np.float32)),
    lambda f: edit_manifest(f, lambda m: m["engine"].update(rows=5)),
    lambda f: edit_manifest(f, lambda m: m["records"][0].update(paths="../../etc/passwd")),
    lambda f: edit_manifest(f, lambda m: m.update(format=99)),
], ids=["no-settings", "bad-size", "other-id", "no-checksums", "not-a-dict", "groups-length", "groups-range",
        "duplicate-ids", "map-length", "engine-count", "path-out", "format"])
def test_a_malformed_version_is_damaged_and_falls_back(tmp_path, damage):
    first = write(tmp_path)
    second = write(tmp_path)
    damage(tmp_path / "versions" / second)
    assert store.load_version(tmp_path).id == first
    with pytest.raises(ModelNotFoundError):
        store.load_version(tmp_path, second)


def test_every_version_damaged_says_so_rather_than_train_first(tmp_path):
    vid = write(tmp_path)
    (tmp_path / "versions" / vid / "centres.npy").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="every version is damaged"):
        store.load_version(tmp_path)


def test_an_unwritable_model_folder_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from imgsim.cli import main

    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):  # root ignores permission bits, so the refusal is simulated
        if str(self).startswith(str(tmp_path / "models")):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    code = main(["train", "--model-dir", str(tmp_path / "models"), "--images", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and [line for line in err.splitlines() if "error" in line] == [err.splitlines()[-1]]
    assert err.splitlines()[-1].startswith(f"error: {tmp_path}: not writable (permission denied)")
    assert "Traceback" not in err


def test_a_model_keras_cannot_load_falls_back_to_an_intact_version(model_copy, caplog):
    import zipfile

    from imgsim.search import Searcher

    first = store.current_id(model_copy)
    second = first[:-4] + "beef"
    import shutil
    shutil.copytree(model_copy / "versions" / first, model_copy / "versions" / second)
    folder = model_copy / "versions" / second
    with zipfile.ZipFile(folder / "model.keras") as zf:
        parts = {name: zf.read(name) for name in zf.namelist()}
    parts["config.json"] = parts["config.json"].replace(b'"encoder"', b'"encodr"')  # a hand-edited config
    with zipfile.ZipFile(folder / "model.keras", "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    edit_manifest(folder, lambda m: (m.update(id=second), m["checksums"].update({"model.keras": store.sha256_of(folder / "model.keras")})))
    store.set_current(model_copy, second)
    assert Searcher.load(model_copy).version.id == first
    assert "cannot be used" in caplog.text
    with pytest.raises(ModelNotFoundError, match="Keras cannot load"):
        Searcher.load(model_copy, second)


# --- prune ------------------------------------------------------------------------------------

@pytest.fixture
def ordered_ids(monkeypatch):
    """Version ids one second apart, so that "newest" is the order they were written in."""
    counter = iter(range(10, 60))
    monkeypatch.setattr(store, "new_version_id", lambda: f"20260101-0000{next(counter)}-abcd")


def files(model_dir) -> list:
    return sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file() and p.name != ".lock")


def referenced(model_dir, version_id) -> set:
    """The segment files a version's manifest names (its records' and its engine's)."""
    from imgsim.storage.records import segment_files

    manifest = json.loads((model_dir / "versions" / version_id / "manifest.json").read_text())
    names = set(segment_files(manifest["records"]))
    for entry in manifest["engine"]["segments"]:
        names |= {entry.get(k) for k in ("ids", "groups", "vectors", "index", "tombstones")} - {None}
    return names


def test_prune_keeps_the_newest_and_the_current_and_every_file_they_need(tmp_path, ordered_ids):
    model_dir = tmp_path
    first, second, third, fourth = (write(model_dir, n) for n in (3, 4, 5, 6))
    shared = write(model_dir, 6)  # an index run's version: the same segments as the fourth
    store.set_current(model_dir, second)  # an older version made active by hand
    (model_dir / "segments" / f"{'0' * 64}.vectors.npy").write_bytes(b"a crashed run's leftover")
    graphs = model_dir / "annotations" / "graphs"
    graphs.mkdir(parents=True)
    for version_id in (first, third):
        (graphs / f"{version_id}-k10.npz").write_bytes(b"a cached neighbour graph")
    for version_id in (first, second):  # each version's scan for copies (imgsim.duplicates)
        ModelFolder(model_dir).scan_folder(version_id).mkdir(parents=True)
        (ModelFolder(model_dir).scan_folder(version_id) / "scan.npz").write_bytes(b"a kept scan")
        (ModelFolder(model_dir).thumbnail_folder(version_id) / "96").mkdir(parents=True)  # its display thumbnails
        (ModelFolder(model_dir).thumbnail_folder(version_id) / "96" / "1.jpg").write_bytes(b"a thumbnail")
    people = {"labels.json": b'{"1": "cat"}', "log.jsonl": b'{"set": 1}\n'}
    for name, data in people.items():
        (model_dir / "annotations" / name).write_bytes(data)
    from imgsim.storage.group_names import save_names
    save_names(model_dir, first, {0: "cats"})

    report = prune(model_dir, keep=2)
    assert report.kept == [shared, fourth, second] and sorted(report.removed) == [first, third]
    assert sorted(p.name for p in (model_dir / "versions").iterdir()) == sorted(report.kept)
    for version_id in report.kept:
        assert store.load_version(model_dir, version_id).id == version_id  # whole, segments verified
    assert {p.name for p in (model_dir / "segments").iterdir()} == set().union(
        *(referenced(model_dir, v) for v in report.kept))  # the kept versions' files, and nothing else
    assert [p.name for p in graphs.iterdir()] == []  # both graphs were of removed versions
    assert [p.name for p in (model_dir / "duplicates").iterdir()] == [second]  # a scan goes with its version
    assert [p.name for p in (model_dir / "thumbnails").iterdir()] == [second]  # so do its thumbnails
    assert {n: (model_dir / "annotations" / n).read_bytes() for n in people} == people  # never touched
    assert (model_dir / "labels" / f"{first}.json").exists()  # group names are never removed
    assert report.after == disk_use(model_dir) < report.before
    assert store.current_id(model_dir) == second and not (model_dir / "staging").exists()


def test_prune_keeps_a_parent_whose_group_names_were_not_carried_over(tmp_path, ordered_ids):
    from imgsim.storage.group_names import save_names

    model_dir = tmp_path
    named, child, newest = write(model_dir, 3), write(model_dir, 4), write(model_dir, 5)
    save_names(model_dir, named, {0: "receipts"})
    for version_id, parent in ((child, named), (newest, child)):
        manifest_path = model_dir / "versions" / version_id / "manifest.json"
        manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "parent": parent}))
    store.set_current(model_dir, child)
    report = prune(model_dir, keep=1)
    assert report.kept == [newest, child, named] and report.removed == []
    save_names(model_dir, child, {0: "receipts"})  # carried over (confirmed): the parent is no longer needed
    assert prune(model_dir, keep=1).removed == [named]


def test_prune_dry_run_and_the_cli(tmp_path, ordered_ids, capsys):
    from imgsim.cli import main

    ids = [write(tmp_path, n) for n in (3, 4, 5)]
    before = files(tmp_path)
    assert main(["prune", f"--model-dir={tmp_path}", "--keep", "1", "--dry-run"]) == 0
    assert f"would remove 2 version(s) ({ids[1]}, {ids[0]})" in capsys.readouterr().out
    assert files(tmp_path) == before
    assert main(["prune", f"--model-dir={tmp_path}", "--keep", "1"]) == 0
    assert "removed 2 version(s)" in capsys.readouterr().out and store.candidates(tmp_path) == [ids[2]]
    assert main(["prune", f"--model-dir={tmp_path}", "--keep", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --keep must be a whole number of versions, at least 1; got 0"
    with store.writer_lock(tmp_path), pytest.raises(BusyError):
        prune(tmp_path)


def test_prune_refuses_when_a_kept_version_s_segments_are_unknown(tmp_path, ordered_ids):
    first, second = write(tmp_path, 3), write(tmp_path, 4)
    (tmp_path / "versions" / second / "manifest.json").write_text("{damaged")
    store.set_current(tmp_path, first)
    (tmp_path / "CURRENT").write_text(second + "\n")  # a damaged current version: its segments are unknown
    before = files(tmp_path)
    with pytest.raises(store.ImgsimError, match="does not say which segments"):
        prune(tmp_path, keep=1)
    assert files(tmp_path) == before


KILLED_PRUNE = """
import os, signal, sys
from imgsim.storage.prune import prune
unlink = os.unlink
os.unlink = lambda path, *a, **k: os.kill(os.getpid(), signal.SIGKILL) if "segments" in str(path) else unlink(path, *a, **k)
prune(sys.argv[1], keep=1)
"""


def test_a_prune_killed_half_way_leaves_every_kept_version_whole(tmp_path, ordered_ids):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    write(tmp_path, 3)  # the older version the prune removes
    new = write(tmp_path, 4)
    run = subprocess.run([sys.executable, "-c", KILLED_PRUNE, str(tmp_path)], cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == -signal.SIGKILL  # killed at the first segment file it deleted
    assert store.candidates(tmp_path) == [new] and store.load_version(tmp_path).id == new
    assert prune(tmp_path, keep=1).removed == []  # the next run finishes the job
    assert {p.name for p in (tmp_path / "segments").iterdir()} == referenced(tmp_path, new)
    assert store.load_version(tmp_path, new).id == new and not (tmp_path / "staging").exists()
