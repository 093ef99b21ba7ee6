import json

import numpy as np
import pytest

from imgsim import BusyError, ModelNotFoundError, store


def write(model_dir, n=3, **kwargs):
    arrays = {"vectors": np.eye(n, 4, dtype=np.float32), "groups": np.zeros(n, np.int32),
              "centres": np.zeros((1, 4), np.float32), "map2d": np.zeros((n, 2), np.float32)}
    files = [{"path": f"/x/{i}.jpg", "size": 1, "mtime_ns": 1, "sha1": str(i)} for i in range(n)]
    return store.write_version(model_dir, manifest={"settings": {"image_size": 32}, "kind": "train"}, files=files,
                               arrays=arrays, history={"loss": [1.0]},
                               save_model=lambda p: p.write_bytes(b"model-bytes"), **kwargs)


def test_written_version_is_current_and_loads_whole(tmp_path):
    vid = write(tmp_path)
    assert store.current_id(tmp_path) == vid
    v = store.load_version(tmp_path)
    assert v.id == vid and v.paths == ["/x/0.jpg", "/x/1.jpg", "/x/2.jpg"]
    assert v.vectors.shape == (3, 4) and v.image_size == 32
    assert set(v.manifest["checksums"]) >= {"model.keras", "vectors.npy", "files.json"}
    assert not any((tmp_path / "staging").iterdir())


def test_no_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="imgsim train"):
        store.load_version(tmp_path)


def test_damaged_current_version_falls_back_to_newest_intact(tmp_path, caplog):
    first = write(tmp_path)
    second = write(tmp_path)
    (tmp_path / "versions" / second / "vectors.npy").write_bytes(b"garbage")
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
        store.write_version(tmp_path, manifest={"settings": {"image_size": 32}}, files=[], history={},
                            arrays={k: np.zeros(1) for k in store.ARRAYS}, save_model=broken_save)
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
