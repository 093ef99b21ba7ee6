"""Derived files kept beside the versions (outside their checksums) are checked before use, and rebuilt when they fail.

The duplicates scan's caches (`duplicates/<id>/signatures.npz`, `scan.npz`) were read with np.load
as they came: a deflated member of a few KB inflates to whatever its header says, a link is
followed, a FIFO blocks. `imgsim.core.files.open_npz` refuses each before any array is read.
"""

from __future__ import annotations

import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from imgsim.core.files import open_npz
from imgsim.duplicates import results, signatures
from tests.helpers import vector_version


def deflated_bomb(path: Path, member: str = "readable.npy", inflated: int = 64 * 2**20) -> None:
    """An .npz whose one member, an .npy of `inflated` bytes of zeros, is deflated to a few dozen KB."""
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({inflated},), }}"
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"  # an .npy 1.0 header, padded as numpy pads it
    header = np.lib.format.magic(1, 0) + len(text).to_bytes(2, "little") + text.encode("latin1")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, archive.open(member, "w", force_zip64=True) as out:
        out.write(header)
        zeros = bytes(2**20)
        for _ in range(inflated // len(zeros)):
            out.write(zeros)


def peak_bytes(call):
    """(what `call()` returned, the most memory Python and numpy held above the start while it ran)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def version(tmp_path):
    return vector_version(tmp_path / "models", 40, 3, folder=str(tmp_path / "photos"))[0]


def test_a_deflated_bomb_is_refused_before_any_array_is_read(tmp_path):
    bomb = tmp_path / "signatures.npz"
    deflated_bomb(bomb)
    [member] = zipfile.ZipFile(bomb).infolist()
    assert member.file_size > 1000 * bomb.stat().st_size  # what np.load would have allocated: 64 MB from ~64 KB
    with np.load(bomb) as data:  # the old path reads it whole
        assert data["readable"].nbytes == 64 * 2**20
    with pytest.raises(ValueError, match="readable.npy is compressed"):
        open_npz(bomb, 2**30)


def test_links_fifos_and_files_over_the_bound_are_refused(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, a=np.arange(1000))
    with open_npz(good, 2**20) as data:
        assert data["a"].sum() == 999 * 1000 // 2
    with pytest.raises(ValueError, match="more than the 1,000 this version's arrays can take"):
        open_npz(good, 1000)
    (tmp_path / "link.npz").symlink_to(good)
    with pytest.raises(OSError):  # ELOOP: a link is never followed
        open_npz(tmp_path / "link.npz", 2**20)
    os.mkfifo(tmp_path / "fifo.npz")
    done = threading.Event()
    caught = []

    def read():
        try:
            open_npz(tmp_path / "fifo.npz", 2**20)
        except ValueError as exc:
            caught.append(str(exc))
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(10) and caught == ["not a regular file (a pipe)"]


def test_a_bomb_in_a_version_s_signature_cache_is_rebuilt_not_trusted(version):
    path = signatures.version_folder(version.model_dir, version.id) / signatures.FILE
    path.parent.mkdir(parents=True)
    deflated_bomb(path)
    found, peak = peak_bytes(lambda: signatures.load(path, None, len(version)))
    assert found is None and peak < 4 * 2**20, peak  # refused unread (np.load took 64 MB), so rebuilt
    table = signatures.signatures(version)  # the files do not exist: every row unreadable, and cached as such
    assert len(table) == len(version) and not table.readable.any()
    assert all(m.compress_type == zipfile.ZIP_STORED for m in zipfile.ZipFile(path).infolist())  # replaced
    assert signatures.load(path, signatures.records_digest(version.records), len(version)) is not None


def test_a_bomb_in_place_of_a_version_s_kept_scan_is_no_scan(version):
    path = results.result_path(version.model_dir, version.id)
    path.parent.mkdir(parents=True)
    deflated_bomb(path, "pairs.npy")
    found, peak = peak_bytes(lambda: results.load(version))
    assert found is None and peak < 4 * 2**20, peak  # the old load inflated all 64 MB before finding it wrong
    np.savez(path, meta=np.asarray("{}"), pairs=np.zeros((len(version) * 40_000, 2), np.int64))  # stored, but too big
    assert path.stat().st_size > len(version) * results.MAX_ROW_BYTES + 16 * 2**20
    assert results.load(version) is None


def test_model_folder_files_replaced_by_a_link_to_dev_zero_or_a_fifo_are_refused_at_once(version):
    """labels.json, log.jsonl, a version's group names and training.json were read whole: /dev/zero never ends."""
    from imgsim.core.errors import ImgsimError
    from imgsim.runs import jobs
    from imgsim.storage.annotations import LabelStore
    from imgsim.storage.group_names import labels_path, load_names, save_names

    store = LabelStore(version.model_dir)
    store.set([int(version.ids[0])], "cats")
    save_names(version.model_dir, version.id, {0: "boats"})
    with open("/dev/zero", "rb") as zero:  # what a plain read of the planted link gets: zeros without end
        assert zero.read(1 << 16) == bytes(1 << 16)
    for path in (store.labels_path, store.log_path, labels_path(version.model_dir, version.id), jobs.status_path(version.model_dir)):
        path.unlink(missing_ok=True)
        path.symlink_to("/dev/zero")
    with pytest.raises(ImgsimError, match="labels.json: unreadable"):
        store.load()
    with pytest.raises(ImgsimError, match="log.jsonl: unreadable"):
        store.history()
    assert load_names(version.model_dir, version.id) == {} and jobs.read_status(version.model_dir) is None
    status = jobs.status_path(version.model_dir)
    status.unlink()
    os.mkfifo(status)
    done = threading.Event()
    threading.Thread(target=lambda: (jobs.read_status(version.model_dir), done.set()), daemon=True).start()
    assert done.wait(10)  # a FIFO is refused, never waited on
