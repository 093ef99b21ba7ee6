"""Scanning a folder (by content; names and links as data) and streaming it through the loader."""

import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from imgsim.inputs import collection
from imgsim.inputs.collection import Skipped, fingerprint, iter_decoded, scan_folder
from imgsim.learning.encoding import encode_files


def jpeg(path, colour="red"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, "JPEG")


def names(files):
    return [os.path.basename(f.path) for f in files]


@pytest.fixture
def opened(monkeypatch):
    """Every path the scan opens to read a header."""
    paths = []
    real = collection.sniff

    def sniff(path):
        paths.append(str(path))
        return real(path)

    monkeypatch.setattr(collection, "sniff", sniff)
    return paths


def test_scan_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path):
    jpeg(tmp_path / "b" / "deep" / "x.jpg", "red")
    jpeg(tmp_path / "a.JPG", "blue")
    jpeg(tmp_path / ".hidden" / "h.jpg", "green")
    (tmp_path / "notes.txt").write_text("hi")
    skipped = Skipped()
    found = [f.path for f in scan_folder(tmp_path, skipped=skipped)]
    assert found == sorted(found)
    assert [p.rsplit("/", 1)[-1] for p in found] == ["a.JPG", "x.jpg"]
    assert not skipped.reasons and skipped.not_images == 1


def test_files_are_recognised_by_content_not_by_name(tmp_path):
    jpeg(tmp_path / "real.jpg")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "photo", "PNG")  # no suffix
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "wrong.png", "JPEG")  # the wrong suffix
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "export.dat", "GIF")
    unreadable = {
        "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>',
        "phone.heic": b"\0\0\0\x18ftypheic\0\0\0\0mif1heic",
        "broken.jpg": b"not a jpeg at all",
        "cut.jpg": b"\xff\xd8\xff\xe0 truncated",
        "empty.png": b"",
    }
    for name, data in unreadable.items():
        (tmp_path / name).write_bytes(data)
    for suffix in ("ppm", "pgm", "pbm"):  # real Netpbm files: an image, but not in an allowed format
        Image.new("1" if suffix == "pbm" else "L" if suffix == "pgm" else "RGB", (8, 8)).save(tmp_path / f"scan.{suffix}")
    for name in ("notes.txt", "data.csv", "Makefile"):
        (tmp_path / name).write_text("not an image")

    skipped = Skipped()
    found = scan_folder(tmp_path, skipped=skipped)
    assert names(found) == ["export.dat", "photo", "real.jpg", "wrong.png"]
    assert sorted(os.path.basename(p) for p in skipped.reasons) == sorted([*unreadable, "scan.ppm", "scan.pgm", "scan.pbm"])
    for path, reason in skipped.reasons.items():
        assert reason.startswith(f"{path}: ") and "\n" not in reason
    assert "not an image in an allowed format" in skipped.reasons[str(tmp_path / "drawing.svg")]
    assert "not an image in an allowed format" in skipped.reasons[str(tmp_path / "scan.ppm")]
    assert skipped.not_images == 3
    summary = skipped.summary()
    assert summary.startswith("skipped 8 file(s): ") and summary.endswith("3 file(s) are not images")


def test_scan_reads_headers_only_and_stays_fast(tmp_path):
    jpeg(tmp_path / "x.jpg")
    data = (tmp_path / "x.jpg").read_bytes()
    for i in range(1500):
        (tmp_path / f"{i:04d}.jpg").write_bytes(data)
    for i in range(500):
        (tmp_path / f"{i:04d}.txt").write_text("text")
    # 40 MB of PNG: a valid header, then junk no decoder ever gets to.
    big = bytearray(40 * 2**20)
    Image.new("RGB", (8, 8)).save(tmp_path / "small.png")
    head = (tmp_path / "small.png").read_bytes()
    big[: len(head)] = head
    (tmp_path / "big.png").write_bytes(big)
    start = time.monotonic()
    skipped = Skipped()
    found = scan_folder(tmp_path, skipped=skipped)
    seconds = time.monotonic() - start
    assert len(found) == 1503 and skipped.not_images == 500 and not skipped.reasons
    assert seconds < 10, seconds  # about 1 s on 2 busy cores; reading every file whole would take far longer


NAMES = [b"caf\xe9.jpg", b"\xff\xfe.jpg", b"two\nlines.jpg", b"-rf.jpg", b"--help.jpg", b"tab\there.jpg", b"\x1b[31mred.jpg"]


def test_names_are_data_stored_exactly_and_shown_escaped(tmp_path):
    root = os.fsencode(tmp_path)
    for raw in NAMES:
        with open(os.path.join(root, raw), "wb") as fh:
            Image.new("RGB", (8, 8), "red").save(fh, "JPEG")
    found = scan_folder(tmp_path)
    expected = sorted(os.path.join(str(tmp_path), os.fsdecode(raw)) for raw in NAMES)
    assert [f.path for f in found] == expected
    for f in found:
        assert os.fsencode(f.path) in {os.path.join(root, raw) for raw in NAMES}  # the bytes on disk, exactly
        stored = json.dumps({"path": f.path})  # how files.json stores a path
        assert stored.isascii() and json.loads(stored)["path"] == f.path

    digest = fingerprint(found)  # crashed on undecodable names (str.encode)
    assert len(digest) == 64 and digest == fingerprint(scan_folder(tmp_path))
    assert digest != fingerprint(found[1:])

    summary = Skipped({f.path: "reason" for f in found}, not_images=2).summary(limit=len(found))
    assert "\n" not in summary and "\x1b" not in summary and "\t" not in summary
    for shown in ("caf\\xe9.jpg", "\\xff\\xfe.jpg", "two\\nlines.jpg", "-rf.jpg", "tab\\there.jpg", "\\x1b[31mred.jpg"):
        assert shown in summary
    summary.encode("utf-8")  # printable: no lone surrogates left


def test_link_loops_and_links_to_nothing_are_skipped_with_a_reason(tmp_path):
    jpeg(tmp_path / "real.jpg")
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    os.symlink("ping.jpg", tmp_path / "pong.jpg")
    os.symlink("pong.jpg", tmp_path / "ping.jpg")
    os.symlink("nowhere.jpg", tmp_path / "gone.jpg")
    (tmp_path / "sub").mkdir()
    jpeg(tmp_path / "sub" / "deep.jpg")
    os.symlink("..", tmp_path / "sub" / "up")
    for follow in (False, True):
        skipped = Skipped()
        found = scan_folder(tmp_path, follow_links=follow, skipped=skipped)
        assert names(found) == ["real.jpg", "deep.jpg"]
        reasons = {os.path.relpath(p, tmp_path): r for p, r in skipped.reasons.items()}
        assert set(reasons) == {"loop.jpg", "ping.jpg", "pong.jpg", "gone.jpg", "sub/up"}
        assert "a link loop" in reasons["loop.jpg"] and "a link loop" in reasons["ping.jpg"]
        assert "a link to nothing" in reasons["gone.jpg"]
        assert ("already scanned" if follow else "not followed") in reasons["sub/up"]


def test_links_that_leave_the_folder_are_skipped_unless_followed(tmp_path, opened):
    root, outside = tmp_path / "photos", tmp_path / "private"
    jpeg(root / "real.jpg")
    jpeg(root / "sub" / "inner.jpg")
    jpeg(outside / "secret.jpg")
    jpeg(outside / "more" / "other.jpg")
    os.symlink("real.jpg", root / "alias.jpg")  # stays inside: a file of the collection, under its own name
    os.symlink(outside / "secret.jpg", root / "secret.jpg")
    os.symlink(outside / "more", root / "more")
    os.symlink("sub", root / "sub-alias")  # a folder link, inside
    skipped = Skipped()
    found = scan_folder(root, skipped=skipped)
    assert [f.path for f in found] == [str(root / "alias.jpg"), str(root / "real.jpg"), str(root / "sub" / "inner.jpg")]
    assert set(skipped.reasons) == {str(root / "secret.jpg"), str(root / "more"), str(root / "sub-alias")}
    assert "outside the collection folder" in skipped.reasons[str(root / "secret.jpg")]
    assert "outside the collection folder" in skipped.reasons[str(root / "more")]
    assert "--follow-links" in skipped.reasons[str(root / "more")]
    assert not any(str(outside) in path or "secret" in path or "more" in path for path in opened)  # never read

    opened.clear()
    skipped = Skipped()
    found = scan_folder(root, follow_links=True, skipped=skipped)
    assert [os.path.relpath(f.path, root) for f in found] == [
        "alias.jpg", "more/other.jpg", "real.jpg", "secret.jpg", "sub/inner.jpg"]
    assert list(skipped.reasons) == [str(root / "sub-alias")]  # each folder is scanned once
    assert "already scanned" in skipped.reasons[str(root / "sub-alias")]


def test_followed_folder_links_end_even_when_they_loop(tmp_path):
    jpeg(tmp_path / "a" / "one.jpg")
    os.symlink(tmp_path, tmp_path / "a" / "top")
    os.symlink("..", tmp_path / "a" / "parent")
    os.symlink(".", tmp_path / "a" / "self")
    skipped = Skipped()
    found = scan_folder(tmp_path, follow_links=True, skipped=skipped)
    assert [os.path.relpath(f.path, tmp_path) for f in found] == ["a/one.jpg"]
    assert {os.path.basename(p) for p in skipped.reasons} == {"top", "parent", "self"}
    assert all("already scanned" in r for r in skipped.reasons.values())


def test_paths_are_under_the_folder_resolved_once(tmp_path):
    jpeg(tmp_path / "real" / "x.jpg")
    os.symlink(tmp_path / "real", tmp_path / "link-to-root")
    found = scan_folder(tmp_path / "link-to-root")
    assert [f.path for f in found] == [str(tmp_path / "real" / "x.jpg")]


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    jpeg(tmp_path / "a.jpg", "red")
    before = fingerprint(scan_folder(tmp_path))
    jpeg(tmp_path / "b.jpg", "red")
    assert fingerprint(scan_folder(tmp_path)) != before


def test_broken_files_are_reported_not_fatal(tmp_path):
    for i in range(5):
        jpeg(tmp_path / f"{i}.jpg", (i * 40, 0, 0))
    (tmp_path / "2.jpg").write_bytes(b"not a jpeg at all")
    paths = sorted(str(p) for p in tmp_path.iterdir())
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
