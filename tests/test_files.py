"""imgsim.core.files: the one atomic write, and the module layering it allows."""

import os
import subprocess
import sys

import numpy as np
import pytest

from imgsim.core import files


def test_a_file_is_replaced_whole_text_or_bytes_and_fsynced_with_its_folder(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old")
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    files.write_atomic(target, "névé\n")
    assert target.read_bytes() == "névé\n".encode()
    assert synced[0].startswith(str(tmp_path / ".state.json.")) and synced[1] == str(tmp_path)  # the data, then the name
    files.write_atomic(target, b"\x00\xff")
    assert target.read_bytes() == b"\x00\xff"
    files.write_atomic_with(tmp_path / "a.npz", lambda fh: np.savez(fh, x=np.arange(3)))
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "state.json"]  # no temporary file left


def test_a_write_that_fails_leaves_the_old_file_and_nothing_else(tmp_path):
    target = tmp_path / "CURRENT"
    target.write_text("20260101-000000-abcd\n")

    def half_then_fail(fh):
        fh.write(b"2026")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomic_with(target, half_then_fail)
    assert target.read_text() == "20260101-000000-abcd\n"
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]


def test_storage_and_labels_import_neither_the_engines_nor_each_other_in_a_circle():
    code = ("import sys, imgsim.storage.group_names; assert 'imgsim.storage.store' not in sys.modules, 'labels imports store'; "
            "import imgsim.storage.store; assert not [m for m in sys.modules if m.startswith('imgsim.storage.engines')], "
            "[m for m in sys.modules if m.startswith('imgsim.storage.engines')]")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_open_plain_refuses_a_folder_swapped_for_a_link_between_the_check_and_the_open(tmp_path, monkeypatch):
    root, outside = tmp_path / "photos", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(b"mine")
    outside.mkdir()
    (outside / "a.jpg").write_bytes(b"someone else's")
    fd, info = files.open_plain(root / "sub" / "a.jpg", root)
    assert os.read(fd, 100) == b"mine" and info.st_size == 4
    os.close(fd)

    real_realpath = os.path.realpath
    checked = real_realpath(root / "sub" / "a.jpg")
    (root / "sub" / "a.jpg").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(outside, target_is_directory=True)  # swapped after the path was resolved
    assert open(checked, "rb").read() == b"someone else's"  # what a plain open of the checked path reads
    monkeypatch.setattr(os.path, "realpath", lambda p: checked if str(p).endswith("a.jpg") else real_realpath(p))
    with pytest.raises(files.NotAPlainFile, match="a link appeared on its way"):
        files.open_plain(root / "sub" / "a.jpg", root)


def test_open_plain_refuses_what_is_not_a_regular_file_inside_its_root(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    os.mkfifo(root / "pipe.jpg")
    (root / "zero.jpg").symlink_to("/dev/zero")
    (root / "folder.jpg").mkdir()
    with pytest.raises(files.NotAPlainFile, match=r"not a regular file \(a pipe\)"):
        files.open_plain(root / "pipe.jpg", root)  # without blocking
    with pytest.raises(files.NotAPlainFile, match="a link that leads outside"):
        files.open_plain(root / "zero.jpg", root)
    with pytest.raises(files.NotAPlainFile, match=r"not a regular file \(a device\)"):
        files.open_plain(root / "zero.jpg")  # no root: anywhere, but a file
    with pytest.raises(files.NotAPlainFile, match=r"\(a folder\)"):
        files.open_plain(root / "folder.jpg", root)
