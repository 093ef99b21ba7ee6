"""`labels export --folders` handles files as files: links planted in the collection or the destination are refused.

Each attack is first shown to work on the path the old code took (`shutil.copyfile`, writing to
`DEST/<label>/<name>`), then refused by `export_folders`.
"""

import os
import shutil
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from imgsim.labelling.export import export_folders
from imgsim.labelling.propagation import Propagation
from tests.helpers import vector_version


@pytest.fixture
def labelled(tmp_path):
    """Six real files in a collection, indexed, each labelled by a person: (version, propagation, collection)."""
    photos = tmp_path / "photos"
    version, truth = vector_version(tmp_path / "models", 6, 2, folder=str(photos))
    for i, path in enumerate(version.paths):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(f"image {i}".encode())
    n = len(version)
    propagation = Propagation(["cats", "dogs"], np.asarray(truth, np.int64) % 2, np.ones(n, np.float32),
                              np.ones(n, bool), np.zeros((n, 2), np.float32))
    return version, propagation, photos


def exported(dest: Path) -> dict[str, bytes]:
    return {str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}


def test_a_link_to_dev_zero_planted_after_indexing_is_refused_and_nothing_written_for_it(labelled, tmp_path):
    version, propagation, _ = labelled
    planted = Path(version.paths[0])
    planted.unlink()
    planted.symlink_to("/dev/zero")
    with open(planted, "rb") as attack:  # what shutil.copyfile would have read: zeros without end
        assert attack.read(1 << 16) == bytes(1 << 16)

    report = export_folders(version, propagation, tmp_path / "dataset")
    assert report.files == len(version) - 1 and list(report.failed) == [str(planted)]
    assert "outside" in report.failed[str(planted)] and "refused" in report.failed[str(planted)]
    files = exported(tmp_path / "dataset")
    assert len(files) == len(version) - 1 and planted.name not in {Path(f).name for f in files}
    assert max(len(data) for data in files.values()) < 100


def test_a_link_to_a_private_file_elsewhere_is_refused_and_a_private_file_inside_stays_private(labelled, tmp_path):
    version, propagation, photos = labelled
    secret = tmp_path / "home" / "id_rsa"
    secret.parent.mkdir()
    secret.write_bytes(b"PRIVATE KEY")
    secret.chmod(0o600)
    planted = Path(version.paths[1])
    planted.unlink()
    planted.symlink_to(secret)
    leak = shutil.copyfile(planted, tmp_path / "what-the-old-export-wrote")  # the old path: the secret, world-readable
    assert leak.read_bytes() == b"PRIVATE KEY" and stat.S_IMODE(leak.stat().st_mode) & 0o044
    private_inside = Path(version.paths[2])
    private_inside.chmod(0o600)

    for link in (False, True):
        dest = tmp_path / f"dataset-{link}"
        report = export_folders(version, propagation, dest, link=link)
        assert list(report.failed) == [str(planted)] and report.files == len(version) - 1
        files = exported(dest)
        assert b"PRIVATE KEY" not in files.values()
        [copy] = [p for p in dest.rglob(private_inside.name)]
        assert stat.S_IMODE(copy.stat().st_mode) & 0o077 == 0  # never wider than the original


def test_a_folder_on_the_way_swapped_for_a_link_out_is_refused(labelled, tmp_path):
    version, propagation, photos = labelled
    outside = tmp_path / "elsewhere"
    folder = Path(version.paths[0]).parent
    shutil.copytree(folder, outside)  # the same names, outside the collection
    (outside / Path(version.paths[0]).name).write_bytes(b"outside")
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    assert Path(version.paths[0]).read_bytes() == b"outside"  # through the link, as the old export read it

    report = export_folders(version, propagation, tmp_path / "dataset")
    moved = [p for p in version.paths if Path(p).parent == folder]
    assert sorted(report.failed) == sorted(moved) and b"outside" not in exported(tmp_path / "dataset").values()


def test_a_link_inside_the_collection_to_another_of_its_files_is_still_exported(labelled, tmp_path):
    version, propagation, photos = labelled
    linked = Path(version.paths[3])
    linked.unlink()
    linked.symlink_to(Path(version.paths[4]))  # as scan_folder indexes by default
    report = export_folders(version, propagation, tmp_path / "dataset")
    assert report.failed == {} and report.files == len(version)


def test_a_fifo_in_the_collection_is_refused_without_blocking(labelled, tmp_path):
    version, propagation, _ = labelled
    fifo = Path(version.paths[5])
    fifo.unlink()
    os.mkfifo(fifo)
    done = threading.Event()
    result = {}

    def run():
        result["report"] = export_folders(version, propagation, tmp_path / "dataset")
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30), "export blocked on a FIFO"
    report = result["report"]
    assert list(report.failed) == [str(fifo)] and "not a regular file (a pipe)" in report.failed[str(fifo)]


def test_force_never_writes_through_a_link_planted_in_the_destination(labelled, tmp_path):
    version, propagation, _ = labelled
    dest, victim = tmp_path / "dataset", tmp_path / "victim"
    dest.mkdir()
    victim.mkdir()
    (dest / "cats").symlink_to(victim, target_is_directory=True)
    (dest / "dogs").mkdir()
    dog = next(p for p, label in zip(version.paths, propagation.label) if label == 1)
    (dest / "dogs" / Path(dog).name).symlink_to(victim / "planted-file")  # a dangling link where a copy would go
    assert (dest / "cats" / "x").resolve().parent == victim.resolve()  # where the old export's copies went

    report = export_folders(version, propagation, dest, force=True)
    cats = [p for p, label in zip(version.paths, propagation.label) if label == 0]
    assert sorted(report.failed) == sorted(cats)
    assert all("is a link or not a folder" in report.failed[p] for p in cats)
    assert list(victim.iterdir()) == []  # nothing written there, not even through the dangling link
    assert (dest / "dogs" / Path(dog).name).is_symlink()  # the planted link is left as it was; the copy got a new name
    assert report.files == len(version) - len(cats)


def test_a_collection_file_swapped_for_a_link_out_is_never_shown(labelled, tmp_path):
    """The dashboard's thumbnails and the Search page's collection pick read inside the version's folder only."""
    from PIL import Image

    from imgsim.core.errors import ImageError
    from imgsim.inputs.images import read_bytes
    from imgsim.inputs.thumbnails import placeholder_jpeg, thumbnail_or_placeholder

    version, _, photos = labelled
    private = tmp_path / "home" / "private.png"
    private.parent.mkdir()
    Image.new("RGB", (64, 64), "red").save(private)
    swapped = Path(version.paths[0])
    swapped.unlink()
    swapped.symlink_to(private)
    assert version.files_root == str(photos)
    shown = thumbnail_or_placeholder(str(swapped), 64)  # the old path: the private picture, to any visitor
    assert shown != placeholder_jpeg(64)
    assert thumbnail_or_placeholder(str(swapped), 64, version.files_root) == placeholder_jpeg(64)
    with pytest.raises(ImageError, match="a link that leads outside"):
        read_bytes(swapped, root=version.files_root)
    inside = Path(version.paths[1])
    Image.new("RGB", (8, 8), "blue").save(inside, "PNG")
    assert read_bytes(inside, root=version.files_root) == inside.read_bytes()  # the collection's own files still read
