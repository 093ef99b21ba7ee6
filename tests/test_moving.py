"""Move the others, and undo, against a stranger who can write in the collection or next to it (issue 28).

Undo trusts no log: every entry must move a file from inside the collection to a regular file in
the imgsim move folder the log was written for, and that folder must be imgsim's own (made by it,
private, marked). Each test first shows what the old undo would have acted on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from imgsim.core.errors import ImgsimError
from imgsim.duplicates import DuplicateGroup, Member, move_duplicates, moving, undo_moves


def member(path: Path, keep: bool, number: int) -> Member:
    data = path.read_bytes()
    return Member(str(path), 1.0, keep, None, None, len(data), number, number, hashlib.sha1(data).hexdigest())


@pytest.fixture
def moved(tmp_path):
    """Two exact copies moved out of a collection: (collection, move folder, log, the moved file's entry)."""
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    for name in ("a.jpg", "a-copy.jpg"):
        (photos / "trip" / name).write_bytes(b"the same picture")
    group = DuplicateGroup(0, True, [member(photos / "trip" / "a.jpg", True, 1),
                                     member(photos / "trip" / "a-copy.jpg", False, 2)])
    log = move_duplicates([group], tmp_path / "imgsim-duplicates", root=photos)
    [entry] = json.loads(log.read_text())["moves"]
    return photos, log.parent, log, entry


def snapshot(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def rewrite(log: Path, change) -> None:
    data = json.loads(log.read_text())
    change(data)
    log.write_text(json.dumps(data))


def test_a_log_rewritten_to_move_a_file_outside_the_collection_moves_nothing_and_says_why(moved, tmp_path):
    """The probe wrote an authorized_keys: `from` pointed outside the collection, `to` at the attacker's file."""
    photos, folder, log, entry = moved
    keys = tmp_path / "home" / ".ssh" / "authorized_keys"
    keys.parent.mkdir(parents=True)
    planted = folder / "attacker.pub"
    planted.write_bytes(b"ssh-ed25519 AAAA attacker")
    rewrite(log, lambda data: data["moves"].append({"from": str(keys), "to": str(planted)}))
    assert planted.exists() and not os.path.lexists(keys)  # all the old undo needed to move it there
    before = snapshot(photos, folder)
    with pytest.raises(ImgsimError, match=r"lists .*authorized_keys, which is not inside the collection .*: refused, "
                                          "nothing was moved") as refused:
        undo_moves(log, photos)
    assert "\n" not in str(refused.value)
    assert not keys.exists() and snapshot(photos, folder) == before  # not even the honest entry was undone


@pytest.mark.parametrize("where", ["outside everything", "a sibling of the move folder"])
def test_a_log_whose_to_leaves_the_move_folder_moves_nothing(moved, tmp_path, where):
    photos, folder, log, entry = moved
    secret = tmp_path / "secret.jpg" if where == "outside everything" else folder.with_name("imgsim-duplicatesX") / "s.jpg"
    secret.parent.mkdir(exist_ok=True)
    secret.write_bytes(b"someone's private picture")
    rewrite(log, lambda data: data["moves"].__setitem__(0, {"from": entry["from"], "to": str(secret)}))
    with pytest.raises(ImgsimError, match="which is not inside the move folder"):
        undo_moves(log, photos)
    assert secret.read_bytes() == b"someone's private picture" and not Path(entry["from"]).exists()


def test_a_log_pointing_at_another_folder_or_copied_elsewhere_or_linked_is_refused(moved, tmp_path):
    photos, folder, log, entry = moved
    fake = tmp_path / "made-by-someone"
    fake.mkdir()
    (fake / "x.jpg").write_bytes(b"x")
    forged = fake / log.name
    forged.write_text(log.read_text().replace(str(folder), str(fake)))
    with pytest.raises(ImgsimError, match="was not made by imgsim, so it is not a move folder imgsim can trust"):
        undo_moves(forged, photos)
    elsewhere = tmp_path / "copied.json"
    elsewhere.write_text(log.read_text())
    with pytest.raises(ImgsimError, match="not in the move folder .* it was written for"):
        undo_moves(elsewhere, photos)
    linked = folder / "linked.json"
    linked.symlink_to(elsewhere)
    with pytest.raises(ImgsimError, match="a link, not a move log: refused"):
        undo_moves(linked, photos)
    with pytest.raises(ImgsimError, match="written for the collection .*, not this one"):
        undo_moves(log, tmp_path / "another-collection")
    assert not Path(entry["from"]).exists() and Path(entry["to"]).exists()  # nothing moved by any of them
    assert undo_moves(log, photos) == 1  # the honest log still works


def test_a_moved_file_swapped_for_a_link_is_left_where_it_is(moved, tmp_path):
    """A link planted in the move folder would have put an outside file (its bytes) into the collection."""
    photos, folder, log, entry = moved
    outside = tmp_path / "private.txt"
    outside.write_bytes(b"private")
    outside.chmod(0o600)
    Path(entry["to"]).unlink()
    Path(entry["to"]).symlink_to(outside)
    assert Path(entry["to"]).read_bytes() == b"private"  # what moving it back through the link would have copied
    with pytest.raises(moving.UndoIncomplete, match="is no longer a plain file") as incomplete:
        undo_moves(log, photos)
    assert incomplete.value.restored == 0 and not os.path.lexists(entry["from"]) and outside.read_bytes() == b"private"


def test_a_collection_folder_swapped_for_a_link_out_is_not_moved_into(moved, tmp_path):
    photos, folder, log, entry = moved
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    trip = Path(entry["from"]).parent
    (trip / "a.jpg").rename(elsewhere / "kept.jpg")
    trip.rmdir()
    trip.symlink_to(elsewhere, target_is_directory=True)  # the collection's folder now leads out
    with pytest.raises(ImgsimError, match="not inside the collection"):
        undo_moves(log, photos)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["kept.jpg"] and Path(entry["to"]).exists()


def test_the_move_folder_must_be_imgsim_s_own(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (photos / name).write_bytes(b"same")

    def group(kept: str, other: str) -> list[DuplicateGroup]:
        return [DuplicateGroup(0, True, [member(photos / kept, True, 1), member(photos / other, False, 2)])]

    made_by_hand = tmp_path / "made-by-hand"
    made_by_hand.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "a-link").symlink_to(victim, target_is_directory=True)
    for folder, why in ((made_by_hand, "was not made by imgsim"), (tmp_path / "a-link", "is a link")):
        with pytest.raises(ImgsimError, match=why):
            move_duplicates(group("a.jpg", "b.jpg"), folder, root=photos)
    assert (photos / "b.jpg").exists() and list(victim.iterdir()) == [] and list(made_by_hand.iterdir()) == []

    ours = tmp_path / "imgsim-duplicates"
    move_duplicates(group("a.jpg", "b.jpg"), ours, root=photos)
    assert (ours.stat().st_mode & 0o777) == 0o700 and (ours / moving.MARKER).is_file()
    move_duplicates(group("a.jpg", "c.jpg"), ours, root=photos)  # imgsim's own: used again
    assert not (photos / "c.jpg").exists()
    ours.chmod(0o777)  # opened to others since: anyone could have planted links or edited a log
    with pytest.raises(ImgsimError, match="is open to other users"):
        move_duplicates(group("a.jpg", "d.jpg"), ours, root=photos)
    if os.geteuid() == 0:  # only root can give a folder away
        ours.chmod(0o700)
        os.chown(ours, 65534, 65534)
        with pytest.raises(ImgsimError, match="belongs to someone else"):
            move_duplicates(group("a.jpg", "d.jpg"), ours, root=photos)
