"""Near-duplicates: exact and near copies found, hard negatives left apart, keeper rule, exports, move and undo."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from imgsim import duplicates, features
from imgsim.core.errors import ImgsimError
from imgsim.duplicates import (
    DuplicateGroup,
    Member,
    candidates,
    duplicates_csv,
    find_duplicates,
    finding,
    move_duplicates,
    moving,
    results,
    signatures,
    undo_moves,
    verifying,
)
from imgsim.duplicates import groups as grouping
from tests.helpers import TINY

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
NEAR = ("reencoded.jpg", "half.png", "double.png", "cropped.png", "brighter.png")


def fit(img: Image.Image, side: int) -> Image.Image:
    scale = side / max(img.size)
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Path:
    return build_copies(tmp_path_factory.mktemp("dups") / "photos")


def build_copies(root: Path) -> Path:
    """Per photograph: an original (its left 55 %), an exact copy elsewhere, five near copies (JPEG
    quality 60, 50 % and 200 % size, 10 % of the area cropped, 10 % brighter) and a hard negative
    (its right 45 %: the same photograph, no pixel in common)."""
    from imgsim.inputs.demo import source_photos

    photos = source_photos()
    for name in PHOTOS:
        photo, folder = photos[name], root / name
        folder.mkdir(parents=True)
        w, h = photo.size
        original = fit(photo.crop((0, 0, round(w * 0.55), h)), 160)
        original.save(folder / "original.png")
        (root / "backup").mkdir(exist_ok=True)
        shutil.copyfile(folder / "original.png", root / "backup" / f"{name}.PNG")  # same bytes, other name
        original.save(folder / "reencoded.jpg", quality=60)
        fit(original, 80).save(folder / "half.png")
        fit(original, 320).save(folder / "double.png")
        ow, oh = original.size
        cut = (1 - 0.9 ** 0.5) / 2  # 2.6 % off each side: 10 % of the area gone
        original.crop((round(ow * cut), round(oh * cut), round(ow * (1 - cut)), round(oh * (1 - cut)))).save(
            folder / "cropped.png")
        ImageEnhance.Brightness(original).enhance(1.1).save(folder / "brighter.png")
        fit(photo.crop((round(w * 0.55), 0, w, h)), 160).save(folder / "other-crop.png")
    old = 1_500_000_000_000_000_000
    os.utime(root / "backup" / "astronaut.PNG", ns=(old, old))  # the older of two identical files is kept
    return root


@pytest.fixture(scope="module")
def version(tmp_path_factory, copies):
    from imgsim import Settings
    from imgsim.runs.training import train
    from imgsim.storage import store

    model_dir = tmp_path_factory.mktemp("dup-models") / "models"
    train(Settings(model_dir=model_dir, images=copies, **{**TINY, "latent_dim": 32, "epochs": 2, "clusters": 2}))
    return store.load_version(model_dir)


@pytest.fixture(scope="module")
def groups(version):
    return find_duplicates(version)


def group_of(groups, path) -> DuplicateGroup | None:
    return next((g for g in groups if str(path) in {m.path for m in g.images}), None)


def test_exact_copies_are_found_by_their_bytes(version, groups, copies):
    # Exact copies need no model: at a threshold no near pair reaches, and without content candidates (which no
    # threshold limits), only same-bytes groups remain.
    exact_only = find_duplicates(version, threshold=1.0, k=1, content=False)
    found = {frozenset(m.path for m in g.images) for g in exact_only}
    for name in PHOTOS:
        assert frozenset({str(copies / name / "original.png"), str(copies / "backup" / f"{name}.PNG")}) in found
    assert all(g.exact and all(m.score == 1.0 for m in g.images) for g in exact_only)
    assert len(exact_only) == len(PHOTOS)


def test_near_copies_join_the_exact_group_of_their_original(groups, copies):
    for name in PHOTOS:
        group = group_of(groups, copies / name / "original.png")
        assert group is not None and not group.exact
        paths = {m.path for m in group.images}
        assert str(copies / "backup" / f"{name}.PNG") in paths
        for near in NEAR:
            assert str(copies / name / near) in paths, (name, near)


def test_hard_negatives_are_not_grouped_at_the_default_threshold(groups, copies):
    for name in PHOTOS:
        assert group_of(groups, copies / name / "other-crop.png") is None
    originals = [group_of(groups, copies / name / "original.png") for name in PHOTOS]
    assert len({id(g) for g in originals}) == len(PHOTOS)  # no two photographs share a group
    assert len(groups) == len(PHOTOS)


def test_keeper_has_most_pixels_then_largest_file_then_is_oldest(groups, copies):
    for name in PHOTOS:
        group = group_of(groups, copies / name / "original.png")
        assert group.images[0].keep and sum(m.keep for m in group.images) == 1
        assert group.images[0].path == str(copies / name / "double.png")  # 320 px beats 160 px
        assert (group.images[0].width, group.images[0].height) == Image.open(copies / name / "double.png").size
        assert group.images[0].score == 1.0
        scores = [m.score for m in group.images[1:]]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
        copy = next(m for m in group.images if m.path.endswith(f"{name}.PNG"))
        original = next(m for m in group.images if m.path.endswith("original.png"))
        assert copy.score == original.score  # the same bytes score the same


def test_keeper_ties_go_to_the_larger_file_then_the_older(version, copies):
    keepers = {g.images[0].path for g in find_duplicates(version, threshold=1.0, k=1, content=False)}
    # Identical files: astronaut's backup copy was made older than its original; the others' are newer.
    assert str(copies / "backup" / "astronaut.PNG") in keepers
    assert {str(copies / name / "original.png") for name in PHOTOS[1:]} <= keepers
    bigger = Member("/b.jpg", 0.9, False, 10, 10, 200, 5, 1)
    smaller_older = Member("/a.jpg", 0.9, False, 10, 10, 100, 1, 2)
    unknown_size = Member("/c.jpg", 0.9, False, None, None, 10**9, 0, 3)
    ranked = sorted([smaller_older, unknown_size, bigger], key=grouping.keeper_order)
    assert [m.path for m in ranked] == ["/b.jpg", "/a.jpg", "/c.jpg"]


def test_groups_are_sorted_and_numbered_deterministically(version, groups):
    again = find_duplicates(version)
    assert [g.to_dict() for g in again] == [g.to_dict() for g in groups]
    assert [g.group for g in groups] == list(range(len(groups)))
    keys = [(-len(g.images), min(m.path for m in g.images)) for g in groups]
    assert keys == sorted(keys)


def test_json_shape(groups):
    data = json.loads(json.dumps([g.to_dict() for g in groups]))
    first = data[0]
    assert set(first) == {"group", "exact", "images", "links"} and first["group"] == 0 and first["exact"] is False
    assert set(first["images"][0]) == {"path", "score", "keep", "match", "width", "height", "bytes"}
    assert all(m["match"] in duplicates.MATCHES for g in data for m in g["images"])
    for g in data:  # the links that joined a group span it: one fewer than its members, each with its evidence
        assert len(g["links"]) == len(g["images"]) - 1 and all(link["match"] in duplicates.MATCHES for link in g["links"])
    assert first["images"][0]["keep"] is True and isinstance(first["images"][0]["bytes"], int)
    assert os.path.isabs(first["images"][0]["path"])


def test_csv_rows_are_one_per_member_and_never_formulas(groups):
    hostile = DuplicateGroup(7, True, [Member("=HYPERLINK(\"x\")\n.png", 1.0, True, 1, 1, 1, 1, 1),
                                       Member("+cmd.png", 1.0, False, None, None, 1, 2, 2)])
    rows = list(csv.reader(io.StringIO(duplicates_csv([*groups, hostile]))))
    assert rows[0] == ["group", "path", "role", "score", "exact", "match"]
    assert len(rows) == 1 + sum(len(g.images) for g in groups) + 2
    assert rows[1][2] == "keep" and rows[2][2] == "duplicate" and rows[1][4] == "false"
    assert all(row[5] in duplicates.MATCHES for row in rows[1:-2])
    assert rows[-2] == ["7", "'=HYPERLINK(\"x\")\\n.png", "keep", "1.0", "true", ""]
    assert rows[-1][1] == "'+cmd.png"


def test_threshold_and_k_are_checked(version):
    for bad in ({"threshold": 1.5}, {"threshold": -2}, {"k": 0}):
        with pytest.raises(ImgsimError):
            find_duplicates(version, **bad)


# --- real edits: frames, captions, crops; overlapping views ------------------------------------

def fake_version(paths, vectors):
    """A version-like object over these files with these latents (the exact engine), without a model."""
    import hashlib

    from imgsim.storage.engines import make_engine
    from imgsim.storage.records import Records

    paths = [str(p) for p in paths]
    records = Records.build(paths, [os.path.getsize(p) for p in paths], [os.stat(p).st_mtime_ns for p in paths],
                            [hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in paths], [0] * len(paths),
                            [[0.0, 0.0]] * len(paths))
    vectors = np.asarray(vectors, np.float32)
    engine = make_engine("exact").add(records.ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                                      records.groups)
    return SimpleNamespace(records=records, engine=lambda: engine, manifest={})


@pytest.fixture(scope="module")
def edited(tmp_path_factory) -> dict[str, Path]:
    """A photograph, copies of it that move its whole-picture hash (a border, a caption bar, a 20 % crop) and two
    views that are not copies (the same scene shifted by a third: a burst; another crop of the photograph)."""
    from PIL import ImageDraw, ImageFont, ImageOps

    from imgsim.inputs.demo import source_photos

    folder = tmp_path_factory.mktemp("edited")
    photo = source_photos()["coffee"]
    w, h = photo.size
    original = fit(photo.crop((0, 0, round(w * 0.6), h)), 256)
    captioned = Image.new("RGB", (original.width, original.height + 40), "white")
    captioned.paste(original, (0, 0))
    ImageDraw.Draw(captioned).text((12, original.height + 8), "Best day ever", fill="black",
                                   font=ImageFont.load_default(size=20))
    ow, oh = original.size
    files = {
        "original": original,
        "border": ImageOps.expand(original, 30, fill=(20, 20, 20)),
        "caption": captioned,
        "crop": original.crop((round(ow * 0.12), round(oh * 0.1), ow, oh)),  # 21 % of the area gone
        "burst": fit(photo.crop((round(w * 0.22), 0, round(w * 0.82), h)), 256),
        "other": fit(photo.crop((round(w * 0.5), 0, w, round(h * 0.6))), 256),
    }
    out = {}
    for name, img in files.items():
        out[name] = folder / f"{name}.png"
        img.save(out[name])
    return out


def test_a_framed_or_captioned_copy_is_found_by_its_content_and_geometry(edited):
    # Latents that propose nothing (orthogonal): the pictures inside their frames still do.
    paths = [edited[n] for n in ("original", "border", "caption", "burst", "other")]
    groups = find_duplicates(fake_version(paths, np.eye(len(paths))), threshold=0.95)
    assert len(groups) == 1, [[m.path for m in g.images] for g in groups]
    members = {Path(m.path).stem: m for m in groups[0].images}
    assert set(members) == {"original", "border", "caption"}
    by_content = {"content+geometry", "keypoints+geometry"}  # proposed by the pictures, confirmed by their keypoints
    assert {members[n].match for n in members} <= by_content
    assert groups[0].to_dict()["links"] and all(link["match"] in by_content for link in groups[0].to_dict()["links"])
    assert features.picture_hash(str(edited["caption"])) is not None
    # the whole pictures' pHashes alone would not have called them copies
    far = np.count_nonzero(features.picture_hash(str(edited["original"])) != features.picture_hash(str(edited["border"])))
    assert far > verifying.PHASH_MAX_DISTANCE


def test_member_vectors_reads_the_rows_asked_for_and_none_for_none(edited):
    vectors = np.eye(3, 4, dtype=np.float32)  # unit rows: stored as they are
    version = fake_version([edited[n] for n in ("original", "border", "caption")], vectors)
    got = grouping.member_vectors(version, {0, 2})
    assert sorted(got) == [0, 2] and np.allclose(got[0], vectors[0]) and np.allclose(got[2], vectors[2])
    assert grouping.member_vectors(version, set()) == {}


def test_a_cropped_copy_is_confirmed_by_geometry_and_overlapping_views_are_not(edited):
    # Latents that call everything the same picture: only the verification keeps the views apart.
    paths = [edited[n] for n in ("original", "crop", "burst", "other")]
    groups = find_duplicates(fake_version(paths, np.ones((len(paths), 4))), threshold=0.95)
    assert len(groups) == 1
    members = {Path(m.path).stem: m.match for m in groups[0].images}
    assert set(members) == {"original", "crop"}
    assert set(members.values()) <= {"latent+hash", "latent+geometry"}
    points = {n: features.keypoints(str(edited[n])) for n in ("original", "crop", "burst", "other")}
    assert features.same_scene(points["original"], points["crop"])
    assert not features.same_scene(points["original"], points["burst"])  # a shifted view: new content on both sides
    assert not features.same_scene(points["crop"], points["burst"])
    assert not features.same_scene(points["original"], points["other"])


def test_odd_images_get_a_plain_outcome(tmp_path, edited):
    odd = {"tiny.png": Image.new("RGB", (3, 3), "red"), "flat.png": Image.new("RGB", (300, 200), (40, 90, 200)),
           "flat2.png": Image.new("RGB", (320, 210), (40, 90, 200)),
           "sliver.png": Image.fromarray(np.random.default_rng(0).integers(0, 255, (4, 3000, 3), np.uint8))}
    for name, img in odd.items():
        img.save(tmp_path / name)
        assert features.keypoints(str(tmp_path / name)) is None  # too small, one colour or a sliver: no geometry
    assert features.content_box(np.zeros((50, 40, 3), np.float32)) == (0, 0, 40, 50)  # one colour: nothing to trim
    dot = np.zeros((10, 10, 3), np.float32)
    dot[3:7, 3:7] = 255.0  # a frame around a picture under 8 pixels: the frame is taken as the picture, left whole
    assert features.content_box(dot) == (0, 0, 10, 10)
    gone = tmp_path / "gone.png"
    shutil.copyfile(edited["border"], gone)
    paths = [edited["original"], gone, *(tmp_path / n for n in odd)]
    version = fake_version(paths, np.ones((len(paths), 4)))  # every pair proposed
    gone.unlink()  # unreadable since indexing: never confirmed
    groups = duplicates.scan_duplicates(version, 0.95).groups(0.95)
    found = {frozenset(Path(m.path).name for m in g.images) for g in groups}
    assert found == {frozenset({"flat.png", "flat2.png"})}  # one colour at two sizes; a red square is not a blue one
    assert features.picture_hash(str(gone)) is None and features.keypoints(str(gone)) is None


# --- the scan's bounds: budget, caches, stored results -----------------------------------------

def test_a_scan_stops_at_its_budget_and_never_calls_what_it_left_a_copy(edited):
    paths = [edited[n] for n in ("original", "border", "caption", "crop", "burst", "other")]
    version = fake_version(paths, np.ones((len(paths), 4)))  # every pair proposed
    full = duplicates.scan_duplicates(version, 0.95)
    assert full.stats.unchecked == 0 and len(full.groups(0.95)) == 1
    starved = duplicates.scan_duplicates(version, 0.95, budget_s=0.0)
    assert starved.stats.unchecked == len(starved.candidates) > 0
    assert starved.groups(0.95) == []  # unchecked pairs are never copies
    assert f"{starved.stats.unchecked} candidate pair(s) left unchecked" in starved.stats.summary()


def test_verification_goes_by_promise_until_the_clock_passes_the_deadline(edited):
    from imgsim.features import signature

    table = signatures.Signatures.build([signature(str(edited[n])) for n in ("original", "crop", "burst", "other")])
    found = candidates.Candidates(np.asarray([[0, 2], [0, 1], [2, 3]]), np.asarray([0.91, 0.99, np.nan], np.float32),
                                  np.asarray([-1, -1, -1], np.int16), np.asarray([0, 0, 7], np.int32))
    ticks = iter(range(100))
    verified = verifying.verify(found, table, 0.9, deadline=2, clock=lambda: next(ticks))
    # promise: a latent 0.99 (0.9 of the way from the floor), 7 shared keypoints (0.29), a latent 0.91 (0.1)
    assert verified.kinds[1] in ("hash", "geometry")  # the most promising pair: checked first, a copy
    assert verified.kinds[2] is None  # the next: checked, two other pictures
    assert verified.kinds[0] == verifying.UNCHECKED and verified.unchecked == 1  # the budget's end: left, and said


def test_a_second_scan_reads_no_file_and_a_wrong_cache_is_read_again(version):
    path = signatures.version_folder(version.model_dir, version.id) / signatures.FILE
    path.unlink(missing_ok=True)
    first = signatures.signatures(version)
    assert first.read == len(version.records) and path.exists()
    again = signatures.signatures(version)
    assert again.read == 0 and np.array_equal(again.phash, first.phash) and np.array_equal(again.points, first.points)
    good = path.read_bytes()
    other = SimpleNamespace(ids=version.records.ids, sha1=np.roll(version.records.sha1, 1))  # other files' cache
    signatures.save(path, first, other)
    wrong = [path.read_bytes(), good[: len(good) // 2], b"not a cache at all"]
    with np.load(io.BytesIO(good)) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["offsets"] = arrays["offsets"] + 1  # keypoints that point past the end
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    wrong.append(buffer.getvalue())
    for damaged in wrong:
        path.write_bytes(damaged)
        table = signatures.signatures(version)
        assert table.read == len(version.records) and np.array_equal(table.phash, first.phash)
        assert path.read_bytes() != damaged  # replaced by a good one


def test_a_new_version_reads_only_the_files_its_parent_s_cache_lacks(version, edited):
    from imgsim.core.ids import new_version_id
    from imgsim.storage.records import Records

    signatures.signatures(version)  # the parent's cache
    r = version.records
    extra = str(edited["other"])
    records = Records.build([*r.paths, extra], [*r.sizes, 1], [*r.mtimes, 1],
                            [*map(grouping.sha1_text, r.sha1), "f" * 40], [*r.groups, 0], np.zeros((len(r) + 1, 2)))
    child = SimpleNamespace(records=records, manifest={"parent": version.id}, model_dir=version.model_dir,
                            id=new_version_id())
    table = signatures.signatures(child)
    assert table.read == 1 and table.readable[-1]


def test_a_stored_scan_that_is_damaged_or_not_this_version_s_is_no_result(version, stored):
    path = results.result_path(version.model_dir, version.id)
    good = path.read_bytes()
    assert results.load(version) is not None
    with np.load(io.BytesIO(good)) as data:
        arrays = {name: data[name] for name in data.files}

    def altered(**changes):
        buffer = io.BytesIO()
        np.savez(buffer, **{**arrays, **changes})
        return buffer.getvalue()

    meta = json.loads(str(arrays["meta"]))
    for damaged in (b"garbage", good[:200], altered(pairs=arrays["pairs"] + 1),  # images it does not hold
                    altered(meta=np.asarray(json.dumps({**meta, "version": "20200101-000000-abcd"}))),
                    altered(kinds=np.full_like(arrays["kinds"], 7)), altered(latent=arrays["latent"][:0])):
        path.write_bytes(damaged)
        assert results.load(version) is None
    path.write_bytes(good)


def test_no_content_makes_the_candidates_grow_faster_than_the_images(tmp_path):
    """4,000 flat 16 x 16 pictures made 8 M candidate pairs (every hash alike); each source now keeps a few per image."""
    paths = []
    for i in range(300):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (16, 16), (80 * (i % 4), 0, 0)).save(paths[-1])
    version = fake_version(paths, np.ones((len(paths), 4)))  # the latents call them all alike too
    scan = duplicates.scan_duplicates(version, 0.95)
    bound = candidates.LATENT_K + 2 * candidates.HASH_K + candidates.KEYPOINT_K
    assert 0 < len(scan.candidates) <= len(paths) * bound
    for group in scan.groups(0.95):  # and what is grouped is one colour
        assert len({int(Path(m.path).stem) % 4 for m in group.images}) == 1


def test_pictures_that_share_only_a_frame_are_not_copies(edited, tmp_path):
    from imgsim.features import agreement, signature

    noise = np.random.default_rng(1).integers(0, 256, (400, 400, 3), np.uint8)
    framed = {}
    for name in ("original", "other"):
        canvas = noise.copy()
        picture = np.asarray(fit(Image.open(edited[name]).convert("RGB"), 240))
        canvas[80:80 + picture.shape[0], 80:80 + picture.shape[1]] = picture
        framed[name] = tmp_path / f"{name}.png"
        Image.fromarray(canvas).save(framed[name])
    a, b = (signature(str(framed[n])).keypoints for n in ("original", "other"))
    shared = agreement(a, b)
    assert shared is not None and shared.inliers >= 10 and shared.cover >= 0.85  # the frame agrees everywhere...
    assert not shared.same  # ...but nowhere in the middle
    assert agreement(a, signature(str(edited["original"])).keypoints).same  # the framed copy of a picture is one


# --- moving and undoing -------------------------------------------------------------------------

@pytest.fixture
def movable(tmp_path, groups, copies):
    """The groups found, over a private copy of the collection's files."""
    work = Path(shutil.copytree(copies, tmp_path / "photos"))

    def moved(member):
        return dataclasses.replace(member, path=str(work / Path(member.path).relative_to(copies)))

    return work, [dataclasses.replace(g, images=[moved(m) for m in g.images]) for g in groups]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_move_then_undo_puts_every_file_back_byte_identical(tmp_path, movable):
    work, groups = movable
    before = snapshot(work)
    target = tmp_path / "dups"
    log = move_duplicates(groups, target, root=work)
    assert log.parent == target and log.name.startswith("imgsim-moves-") and log.suffix == ".json"
    for group in groups:
        assert Path(group.keeper.path).exists()
        assert not any(Path(m.path).exists() for m in group.images if not m.keep)
    moves = json.loads(log.read_text())["moves"]
    assert len(moves) == sum(len(g.images) - 1 for g in groups)
    assert all(Path(m["to"]).is_relative_to(target) and Path(m["to"]).exists() for m in moves)
    assert len({m["to"] for m in moves}) == len(moves)
    assert undo_moves(log) == len(moves)
    assert snapshot(work) == before
    assert undo_moves(log) == 0  # a second undo finds nothing to put back


def test_keep_override_keeps_the_chosen_file(tmp_path, movable):
    work, groups = movable
    chosen = next(m.path for m in groups[0].images if not m.keep)
    move_duplicates(groups[:1], tmp_path / "dups", keep={groups[0].group: chosen}, root=work)
    assert Path(chosen).exists() and not Path(groups[0].keeper.path).exists()
    with pytest.raises(ImgsimError, match="not a member"):
        move_duplicates(groups[1:2], tmp_path / "dups2", keep={groups[1].group: chosen}, root=work)
    with pytest.raises(ImgsimError, match="no duplicate group"):
        move_duplicates(groups[1:2], tmp_path / "dups3", keep={99: chosen}, root=work)


def test_move_never_overwrites_a_file_in_the_target(tmp_path, movable):
    work, groups = movable
    target = moving.move_folder(tmp_path / "dups", create=True)  # imgsim's own, from an earlier move
    first = next(m for m in groups[0].images if not m.keep)
    relative = Path(first.path).relative_to(work)
    squatter = target / relative
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"mine")
    original_bytes = Path(first.path).read_bytes()
    log = move_duplicates(groups, target, root=work)
    assert squatter.read_bytes() == b"mine"
    to = next(m["to"] for m in json.loads(log.read_text())["moves"] if m["from"] == first.path)
    assert Path(to).name == f"{relative.stem} (1){relative.suffix}" and Path(to).read_bytes() == original_bytes
    undo_moves(log)
    assert squatter.read_bytes() == b"mine" and Path(first.path).read_bytes() == original_bytes


def test_undo_refuses_to_overwrite_a_file_that_reappeared(tmp_path, movable):
    work, groups = movable
    log = move_duplicates(groups, tmp_path / "dups", root=work)
    moves = json.loads(log.read_text())["moves"]
    Path(moves[0]["from"]).write_bytes(b"new file")
    with pytest.raises(duplicates.UndoIncomplete, match="original path") as info:
        undo_moves(log)
    assert info.value.restored == len(moves) - 1 and [p for p, _ in info.value.conflicts] == [moves[0]["from"]]
    assert Path(moves[0]["from"]).read_bytes() == b"new file" and Path(moves[0]["to"]).exists()


def test_a_move_that_fails_half_way_can_be_undone(tmp_path, movable, monkeypatch):
    work, groups = movable
    before = snapshot(work)
    real, calls = moving.move_file, []

    def fail_on_third(source, dest, root):  # a disk that fills up mid-run
        calls.append(source)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(source, dest, root)

    monkeypatch.setattr(moving, "move_file", fail_on_third)
    with pytest.raises(ImgsimError, match="2 of .* moved, undo with the log") as info:
        move_duplicates(groups, tmp_path / "dups", root=work)
    monkeypatch.undo()
    log = next((tmp_path / "dups").glob("imgsim-moves-*.json"))
    assert str(log) in str(info.value)
    assert undo_moves(log) == 2
    assert snapshot(work) == before


def test_bad_targets_and_missing_files_move_nothing(tmp_path, movable):
    work, groups = movable
    before = snapshot(work)
    keeper_folder = Path(groups[0].keeper.path).parent
    (tmp_path / "a-file").write_bytes(b"x")
    cases = {
        "inside the copies' folder": (keeper_folder / "dups", "inside the collection"),
        "the collection itself": (work, "inside the collection"),
        "an ancestor of it": (tmp_path, "would put them back into the collection"),
        "a file": (tmp_path / "a-file", "a-file: not a folder"),
        # not "the log already exists" (what it said while the folder and the log shared one error branch)
        "under a file": (tmp_path / "a-file" / "dups", "a-file: cannot write there (File exists); nothing was moved"),
    }
    for why, (target, said) in cases.items():
        with pytest.raises(ImgsimError) as info:
            move_duplicates(groups, target, root=work)
        assert "\n" not in str(info.value) and said in str(info.value), (why, str(info.value))
        assert snapshot(work) == before, why
        assert not list(tmp_path.rglob("imgsim-moves-*.json")), why
    long_log = tmp_path / "dups" / ("x" * 300 + ".json")  # the folder is made, then its log cannot be written
    with pytest.raises(ImgsimError, match="cannot write there .*; nothing was moved"):
        move_duplicates(groups, tmp_path / "dups", root=work, log=long_log)
    assert snapshot(work) == before and not (tmp_path / "dups").exists()  # what this call made is gone again
    gone = next(m for m in groups[1].images if not m.keep)
    Path(gone.path).unlink()
    with pytest.raises(ImgsimError, match="no longer there"):
        move_duplicates(groups, tmp_path / "dups", root=work)
    assert not (tmp_path / "dups").exists()


def test_check_target_refuses_a_folder_inside_the_collection(tmp_path):
    duplicates.check_target(tmp_path / "elsewhere", tmp_path / "photos")
    with pytest.raises(ImgsimError, match="inside the collection"):
        duplicates.check_target(tmp_path / "photos" / "dups", tmp_path / "photos")


def test_undo_of_something_that_is_not_a_log_is_one_line(tmp_path):
    bad = tmp_path / "log.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ImgsimError, match="not a readable imgsim move log"):
        undo_moves(bad)


def member(path: Path, keep: bool, number: int) -> Member:
    import hashlib

    data = path.read_bytes()
    return Member(str(path), 1.0, keep, None, None, len(data), number, number, hashlib.sha1(data).hexdigest())


def test_a_folder_linked_out_of_the_collection_is_never_moved_from(tmp_path):
    photos, outside = tmp_path / "photos", tmp_path / "outside"
    photos.mkdir()
    outside.mkdir()
    (photos / "a.png").write_bytes(b"same bytes")
    (outside / "a.png").write_bytes(b"same bytes")  # someone's file elsewhere, reached through a linked folder
    (photos / "linked").symlink_to(outside, target_is_directory=True)
    group = DuplicateGroup(0, True, [member(photos / "a.png", True, 1), member(photos / "linked" / "a.png", False, 2)])
    with pytest.raises(ImgsimError, match="not inside the collection") as info:
        move_duplicates([group], tmp_path / "dups", root=photos)
    assert "\n" not in str(info.value)
    assert (outside / "a.png").read_bytes() == b"same bytes" and not (tmp_path / "dups").exists()


def test_an_exact_copy_whose_bytes_changed_since_indexing_is_not_moved(tmp_path, movable):
    work, groups = movable
    group, kept, spare = next((g, a, b) for g in groups for a in g.images for b in g.images
                              if a is not b and a.sha1 == b.sha1)  # an original and its backup: recorded as the same bytes
    Path(spare.path).write_bytes(Path(spare.path).read_bytes() + b"edited since")
    before = snapshot(work)
    with pytest.raises(ImgsimError, match="no longer the same bytes"):
        move_duplicates([group], tmp_path / "dups", keep={group.group: kept.path}, root=work)
    assert snapshot(work) == before and not (tmp_path / "dups").exists()


KILLED_MOVE = """
import json, os, shutil, signal, sys
from imgsim import duplicates
from imgsim.duplicates import DuplicateGroup, Member

root, target, keep, spare, where = sys.argv[1:]
if where == "mid-copy":
    def copy_part(src, dst, length=0):
        dst.write(src.read(100_000))
        dst.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    shutil.copyfileobj = copy_part
else:  # once the copy is whole, before the source is unlinked
    unlink = os.unlink
    os.unlink = lambda path, *a, **k: os.kill(os.getpid(), signal.SIGKILL) if str(path) == spare else unlink(path, *a, **k)
members = [Member(path, 1.0, path == keep, None, None, 0, 0, i, "") for i, path in enumerate((keep, spare))]
duplicates.move_duplicates([DuplicateGroup(0, True, members)], target, root=root)
"""


@pytest.mark.parametrize("where", ["mid-copy", "before-unlink"])
def test_a_move_across_file_systems_killed_half_way_is_undone(tmp_path, where):
    """SIGKILL during a move to another file system: the original is whole, and undo leaves nothing behind."""
    import signal
    import subprocess
    import sys
    import tempfile

    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system (/dev/shm) beside the temporary folder")
    photos = tmp_path / "photos"
    photos.mkdir()
    data = os.urandom(1_000_000)
    (photos / "keep.jpg").write_bytes(data)
    (photos / "copy.jpg").write_bytes(data)
    target = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="imgsim-test-")) / "dups"
    try:
        run = subprocess.run([sys.executable, "-c", KILLED_MOVE, str(photos), str(target), str(photos / "keep.jpg"),
                              str(photos / "copy.jpg"), where], cwd=Path(__file__).resolve().parent.parent)
        assert run.returncode == -signal.SIGKILL
        [log] = target.glob("imgsim-moves-*.json")
        assert (photos / "copy.jpg").read_bytes() == data  # the original is whole whatever the moment
        assert undo_moves(log) == (1 if where == "before-unlink" else 0)
        assert (photos / "copy.jpg").read_bytes() == data and sorted(os.listdir(photos)) == ["copy.jpg", "keep.jpg"]
        assert sorted(p.name for p in target.rglob("*")) == sorted([log.name, moving.MARKER])  # no partial or second copy
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)


def test_a_move_across_file_systems_moves_the_bytes_and_undo_puts_them_back(tmp_path):
    import tempfile

    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system (/dev/shm) beside the temporary folder")
    photos = tmp_path / "photos"
    photos.mkdir()
    data = os.urandom(300_000)
    for name in ("keep.jpg", "copy.jpg"):
        (photos / name).write_bytes(data)
    group = DuplicateGroup(0, True, [member(photos / "keep.jpg", True, 1), member(photos / "copy.jpg", False, 2)])
    target = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="imgsim-test-")) / "dups"
    try:
        log = move_duplicates([group], target, root=photos)
        assert not (photos / "copy.jpg").exists() and (target / "copy.jpg").read_bytes() == data
        assert not list(target.glob(".imgsim-partial-*"))
        assert undo_moves(log) == 1 and (photos / "copy.jpg").read_bytes() == data
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)


def test_one_scan_at_the_lowest_threshold_gives_every_higher_threshold_s_groups(version):
    from imgsim.duplicates import scan_duplicates

    scan = scan_duplicates(version, 0.80)
    for threshold in (0.99, 0.95, 0.9, 0.80):
        assert [g.to_dict() for g in scan.groups(threshold)] == [g.to_dict() for g in find_duplicates(version, threshold)]
    with pytest.raises(ImgsimError, match="below this scan"):
        scan.groups(0.7)


@pytest.fixture
def no_scanning(monkeypatch):
    """Any scan's first steps record a call instead of running: a page that shows copies must not reach them."""
    calls = []

    def refuse(name):
        return lambda *args, **kwargs: calls.append(name) or (_ for _ in ()).throw(AssertionError(f"{name} ran"))

    monkeypatch.setattr(candidates, "latent_pairs", refuse("latent_pairs"))
    monkeypatch.setattr(signatures, "read_all", refuse("read_all"))
    monkeypatch.setattr(finding, "verify", refuse("verify"))
    return calls


def duplicates_page(model_dir, images, readonly: bool, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from imgsim import Settings

    if readonly:
        monkeypatch.setenv("IMGSIM_READONLY", "1")  # what a visitor can make the server do
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.session_state["settings"] = Settings(model_dir=model_dir, images=images)
    at.run()
    return at.switch_page("pages/duplicates.py").run()


@pytest.fixture
def stored(version):
    return results.scan_and_save(version)  # what the background job does after training


def test_a_visitor_sees_the_stored_scan_at_every_threshold_and_no_scan_runs(version, copies, monkeypatch, stored,
                                                                             no_scanning):
    """The page ran a whole scan for whoever opened it (read-only visitors too); now it reads the version's last result."""
    thresholds = (0.9, 0.99, 0.95, 1.0)
    expected = {threshold: len(stored.groups(threshold)) for threshold in thresholds}
    at = duplicates_page(version.model_dir, copies, True, monkeypatch)
    for threshold in thresholds:
        at.slider(key="dup-threshold").set_value(threshold).run()
        assert not at.exception and not at.error
        assert int(at.markdown[0].value.split("**")[1]) == expected[threshold], threshold  # the stored groups
    assert "Scanned just now" in " ".join(c.value for c in at.caption)
    assert no_scanning == []
    assert not [b for b in at.button if b.label in ("Move the others", "Scan again")]  # read-only: view only


def test_a_version_never_scanned_is_said_so_and_only_a_writer_can_start_one(version, copies, monkeypatch, no_scanning):
    from imgsim.runs import jobs

    results.result_path(version.model_dir, version.id).unlink(missing_ok=True)
    at = duplicates_page(version.model_dir, copies, True, monkeypatch)
    assert not at.exception and "not been scanned" in at.info[0].value and not at.button
    started = []
    monkeypatch.setattr(jobs, "start_scan", lambda model_dir, version_id: started.append(version_id))
    monkeypatch.delenv("IMGSIM_READONLY")
    at = duplicates_page(version.model_dir, copies, False, monkeypatch)
    [button] = [b for b in at.button if b.label == "Look for copies"]
    button.click().run()
    assert started == [version.id] and no_scanning == []  # started in the background, not by the page


def test_the_command_line_shows_the_kept_scan_and_scans_only_when_there_is_none(version, capsys, monkeypatch):
    from imgsim.cli import main

    results.result_path(version.model_dir, version.id).unlink(missing_ok=True)
    assert main(["duplicates", f"--model-dir={version.model_dir}"]) == 0
    first = capsys.readouterr()
    assert "scanned now" in first.err and results.load(version) is not None
    calls = []
    monkeypatch.setattr(candidates, "latent_pairs", lambda *args, **kwargs: calls.append(args) or 1 / 0)
    assert main(["duplicates", f"--model-dir={version.model_dir}"]) == 0
    second = capsys.readouterr()
    assert "as found by the scan of 0 minute(s) ago" in second.err and second.out == first.out and calls == []


def test_a_long_list_is_drawn_a_page_at_a_time():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string("""
import streamlit as st
from pages.common import page_of
st.session_state["shown"] = page_of(list(range(100)), 24, key="gallery", what="groups")
""").run()
    assert at.session_state["shown"] == list(range(24)) and "Groups 1–24 of 100" in at.caption[0].value
    at.number_input(key="gallery-5").set_value(5).run()
    assert at.session_state["shown"] == [96, 97, 98, 99]
