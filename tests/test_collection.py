
import numpy as np
from PIL import Image

from imgsim.collection import encode_files, fingerprint, iter_decoded, scan_folder


def jpeg(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, "JPEG")


def test_scan_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path):
    jpeg(tmp_path / "b" / "deep" / "x.jpg", "red")
    jpeg(tmp_path / "a.JPG", "blue")
    jpeg(tmp_path / ".hidden" / "h.jpg", "green")
    (tmp_path / "notes.txt").write_text("hi")
    found = [f.path for f in scan_folder(tmp_path)]
    assert found == sorted(found)
    assert [p.rsplit("/", 1)[-1] for p in found] == ["a.JPG", "x.jpg"]


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    jpeg(tmp_path / "a.jpg", "red")
    before = fingerprint(scan_folder(tmp_path))
    jpeg(tmp_path / "b.jpg", "red")
    assert fingerprint(scan_folder(tmp_path)) != before


def test_broken_files_are_reported_not_fatal(tmp_path):
    for i in range(5):
        jpeg(tmp_path / f"{i}.jpg", (i * 40, 0, 0))
    (tmp_path / "2.jpg").write_bytes(b"not a jpeg at all")
    paths = [f.path for f in scan_folder(tmp_path)]
    batches = list(iter_decoded(paths, 16, batch_size=2, workers=2))
    kept = [i for indices, _, _, _ in batches for i in indices]
    failures = {p: r for *_, f in batches for p, r in f.items()}
    assert kept == [0, 1, 3, 4]
    assert list(failures) == [paths[2]] and "2.jpg" in failures[paths[2]]


def test_encode_files_streams_batches_and_normalises(tmp_path):
    for i in range(70):
        jpeg(tmp_path / f"{i:02d}.jpg", (i * 3, 100, 200 - i))
    paths = [f.path for f in scan_folder(tmp_path)]
    calls = []

    def encode(images):
        calls.append(len(images))
        return images.reshape(len(images), -1)[:, :8] + 1.0

    kept, vectors, hashes, failures = encode_files(encode, paths, 16)
    assert calls == [64, 6]  # never more than one batch of decoded images handed over at once
    assert kept == list(range(70)) and len(hashes) == 70 and not failures
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
