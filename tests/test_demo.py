"""Collections built from photographs and data sets shipped inside installed packages."""

import json

import numpy as np
import pytest
from PIL import Image

from imgsim import load_image
from imgsim.inputs import demo
from imgsim.runs.evaluation import labelled_images


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    return demo.build_demo(tmp_path_factory.mktemp("demo") / "photos", n=12, size=64, seed=3)


def files_of(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != demo.MARKER)


def test_source_photos_are_rgb_photographs_from_both_packages():
    photos = demo.source_photos()
    assert len(photos) > 5
    assert {"astronaut", "coffee", "china", "flower"} <= set(photos)
    assert not {"chessboard", "phantom", "logo", "color"} & set(photos)
    assert all(img.mode == "RGB" and min(img.size) >= 100 for img in photos.values())


def test_augment_gives_a_square_rgb_view_repeatably():
    photo = demo.source_photos()["chelsea"]
    first = demo.augment(photo, np.random.default_rng(5), 48)
    again = demo.augment(photo, np.random.default_rng(5), 48)
    other = demo.augment(photo, np.random.default_rng(6), 48)
    assert first.size == (48, 48) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_build_demo_writes_n_labelled_jpegs(small_demo):
    paths, labels = labelled_images(small_demo)
    assert len(paths) == 12
    assert len(set(labels)) == 12  # 12 images over 21 photos: one each from 12 sources
    assert set(labels) <= set(demo.source_photos())
    for path, label in zip(paths, labels):
        assert path.name.startswith(f"{label}_") and path.suffix == ".jpg"
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.size == (64, 64)
        image = load_image(path, 64)
        assert image.shape == (64, 64, 3) and image.dtype == np.float32
    assert json.loads((small_demo / demo.MARKER).read_text())["n"] == 12


def test_build_demo_spreads_images_evenly(tmp_path):
    out = demo.build_demo(tmp_path / "photos", n=45, size=32, seed=0)
    _, labels = labelled_images(out)
    counts = [labels.count(label) for label in set(labels)]
    assert len(counts) == len(demo.source_photos()) and max(counts) - min(counts) <= 1


def test_build_demo_is_deterministic_for_a_seed(small_demo, tmp_path):
    again = demo.build_demo(tmp_path / "again", n=12, size=64, seed=3)
    other = demo.build_demo(tmp_path / "other", n=12, size=64, seed=4)
    assert files_of(small_demo) == files_of(again) == files_of(other)
    same = [(small_demo / f).read_bytes() == (again / f).read_bytes() for f in files_of(small_demo)]
    differ = [(small_demo / f).read_bytes() != (other / f).read_bytes() for f in files_of(small_demo)]
    assert all(same) and all(differ)


def test_a_complete_collection_is_not_rebuilt(small_demo):
    before = {f: (small_demo / f).stat().st_mtime_ns for f in files_of(small_demo)}
    messages = []
    assert demo.build_demo(small_demo, n=12, size=64, seed=3, progress=lambda f, m: messages.append((f, m))) == small_demo
    assert {f: (small_demo / f).stat().st_mtime_ns for f in files_of(small_demo)} == before
    assert messages == [(1.0, f"{small_demo} is already built")]


def test_other_settings_replace_the_collection_and_leave_nothing_behind(tmp_path):
    fractions = []
    demo.build_demo(tmp_path / "photos", n=12, size=32, progress=lambda f, m: fractions.append(f))
    assert fractions[-1] == 1.0
    demo.build_demo(tmp_path / "photos", n=7, size=32)
    assert len(files_of(tmp_path / "photos")) == 7
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]  # no work or old folders left


def test_a_failed_build_leaves_no_collection(tmp_path, monkeypatch):
    calls = []

    def failing(photo, rng, size):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return Image.new("RGB", (size, size))

    monkeypatch.setattr(demo, "augment", failing)
    with pytest.raises(OSError, match="disk full"):
        demo.build_demo(tmp_path / "photos", n=12, size=32)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="did not write"):
        demo.build_demo(tmp_path / "mine", n=3, size=32)
    assert (tmp_path / "mine" / "holiday.jpg").read_bytes() == b"not ours"


def test_build_digits_writes_all_1797_in_ten_folders(tmp_path):
    out = demo.build_digits(tmp_path / "digits", size=32)
    paths, labels = labelled_images(out)
    assert len(paths) == 1797
    assert sorted(set(labels)) == [str(d) for d in range(10)]
    assert 170 <= min(labels.count(str(d)) for d in range(10))
    with Image.open(paths[0]) as img:
        assert img.size == (32, 32)
    assert load_image(paths[0], 32).shape == (32, 32, 3)


def test_build_faces_writes_100_faces_and_100_others(tmp_path):
    out = demo.build_faces(tmp_path / "faces")
    paths, labels = labelled_images(out)
    assert labels.count("face") == labels.count("nonface") == 100
    assert load_image(paths[0], 32).shape == (32, 32, 3)
