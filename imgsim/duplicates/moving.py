"""Moving copies out of the collection, undoably: `move_duplicates` writes its JSON log of every (from, to) before it
moves a file, and `undo_moves` reads that log back, so even a run killed half-way can be undone. Nothing is deleted."""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from imgsim.core.errors import ImgsimError
from imgsim.core.files import fsync_path
from imgsim.core.text import one_line
from imgsim.duplicates.finding import DuplicateGroup


class UndoIncomplete(ImgsimError):
    """`undo_moves` restored what it could; `conflicts` lists the files it left where they are, and why."""

    def __init__(self, message: str, restored: int, conflicts: list[tuple[str, str]]):
        super().__init__(message)
        self.restored = restored
        self.conflicts = conflicts



def check_target(target_folder, root) -> None:
    """Refuse a target folder inside the collection `root`: the next index would find the moved copies again."""
    target, root = Path(target_folder).expanduser().resolve(), Path(root).expanduser().resolve()
    if target == root or root in target.parents:
        raise ImgsimError(f"{one_line(target)}: inside the collection {one_line(root)}; the moved copies would be "
                          "indexed again. Choose a folder outside it")


def file_sha1(path) -> str | None:
    """The sha1 of a file's bytes now (None if it cannot be read)."""
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def inside(source, root: Path) -> bool:
    """Whether `source` is a plain file (not a link) that is inside the collection `root` once every link on its way is followed."""
    path = Path(source)
    try:
        return not path.is_symlink() and path.is_file() and root in path.resolve(strict=True).parents
    except (OSError, RuntimeError):  # a link loop on the way
        return False


def plan_moves(groups, target: Path, keep: dict | None, root: Path) -> list[tuple[str, str]]:
    """(from, to) for every member not kept, checked before anything moves.

    Every source must be a plain file inside the collection `root` with every link on its way
    followed (a folder linked to somewhere else is not the collection), and a file moved as an
    exact copy of the one kept must still hold the same bytes: the hash was recorded at index time.
    """
    keep = dict(keep or {})
    by_number = {g.group: g for g in groups}
    for number, path in keep.items():
        group = by_number.get(number)
        if group is None:
            raise ImgsimError(f"no duplicate group {one_line(number)} to keep {one_line(path)} in")
        if path not in {m.path for m in group.images}:
            raise ImgsimError(f"{one_line(path)}: not a member of duplicate group {number}")
    sources, exact = [], []
    for group in groups:
        kept = keep.get(group.group) or group.keeper.path
        kept_sha1 = next(m.sha1 for m in group.images if m.path == kept)
        for m in group.images:
            if m.path != kept:
                sources.append(m.path)
                if kept_sha1 and m.sha1 == kept_sha1:
                    exact.append((m.path, kept))
    if len(set(sources)) != len(sources):
        raise ImgsimError("the same file is listed in two duplicate groups; find the duplicates again")
    for source in sources:
        path = Path(source)
        if path.is_symlink() or not path.is_file():
            raise ImgsimError(f"{one_line(source)}: no longer there (or not a plain file); find the duplicates "
                              "again before moving")
        if not inside(path, root):
            raise ImgsimError(f"{one_line(source)}: not inside the collection {one_line(root)} once links are "
                              "followed; nothing was moved")
        folder = path.parent.resolve()
        if target == folder or folder in target.parents or target in path.resolve().parents:
            raise ImgsimError(f"{one_line(target)}: inside or next to the copies' own folder {one_line(folder)}; "
                              "moving there would put them back into the collection. Choose a folder outside it")
    for source, kept in exact:
        if file_sha1(source) != file_sha1(kept) or file_sha1(source) is None:
            raise ImgsimError(f"{one_line(source)}: no longer the same bytes as {one_line(kept)}; find the "
                              "duplicates again before moving")
    if not sources:
        return []
    common = Path(os.path.commonpath([str(Path(s).resolve().parent) for s in sources]))
    planned, moves = set(), []
    for source in sources:
        dest = unique_name(target / Path(source).resolve().relative_to(common), planned)
        planned.add(dest)
        moves.append((source, str(dest)))
    return moves


def unique_name(path: Path, taken: set) -> Path:
    """`path`, or `name (1).ext`, `name (2).ext` ... : the first that neither exists nor is planned."""
    candidate, n = path, 0
    while candidate in taken or os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
    return candidate


def partial_path(dest) -> Path:
    """Where a copy to `dest` is written until it is whole: a hidden name beside it, the same for every try."""
    dest = Path(dest)
    return dest.parent / f".imgsim-partial-{hashlib.sha1(os.fsencode(dest.name)).hexdigest()[:16]}"


def move_file(source: str, dest: str) -> None:
    """Move without ever overwriting: a hard link (fails if dest exists) then unlink, or a copy across file systems.

    The copy is written to `partial_path(dest)`, fsynced, then linked to dest (which fails if dest
    exists; renamed where hard links are not supported) and only then is the source unlinked. So a
    kill leaves the source whole and at worst a partial file under that name, which `undo_moves` removes.
    """
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except FileExistsError:
        raise
    except OSError:  # another file system, or one without hard links
        copy_into_place(source, Path(dest))
    os.unlink(source)


def copy_into_place(source: str, dest: Path) -> None:
    partial = partial_path(dest)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)  # a killed move's leftover, ours by its name
    try:
        with open(source, "rb") as src, open(partial, "xb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        shutil.copystat(source, partial)
        try:
            os.link(partial, dest)
            os.unlink(partial)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links (FAT, exFAT): a rename, after checking
            if os.path.lexists(dest):
                raise FileExistsError(17, "File exists", str(dest)) from None
            os.rename(partial, dest)
        fsync_path(dest.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def same_bytes(a: str, b: str) -> bool:
    try:
        return os.path.getsize(a) == os.path.getsize(b) and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def write_log(path: Path, data: dict) -> None:
    """Create the log (never over an existing file) and make it durable before any file moves."""
    with open(path, "x", encoding="ascii") as fh:
        json.dump(data, fh, indent=1, ensure_ascii=True)  # undecodable names survive as \\udcxx
        fh.flush()
        os.fsync(fh.fileno())


def move_duplicates(groups: list[DuplicateGroup], target_folder, keep: dict[int, str] | None = None, log=None, *,
                    root) -> Path:
    """Move every member but each group's keeper (or `keep[group]`) out of the collection `root` into
    `target_folder`; returns the undo log.

    Files keep their folders relative to the copies' common folder; a name already taken gets
    " (1)", " (2)" ... Nothing is overwritten or deleted, and nothing outside `root` is touched
    (`plan_moves`). The log (default `target_folder/imgsim-moves-<time>.json`) lists every move
    and is written before the first.
    """
    root = Path(root).expanduser().resolve()
    check_target(Path(target_folder).expanduser(), root)
    target = Path(target_folder).expanduser()
    if target.exists() and not target.is_dir():
        raise ImgsimError(f"{one_line(target)}: not a folder")
    target = target.resolve()
    moves = plan_moves(groups, target, keep, root)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    log_path = Path(log).expanduser() if log else unique_name(target / f"imgsim-moves-{stamp}.json", set())
    created = not target.exists()
    try:
        target.mkdir(parents=True, exist_ok=True)
        write_log(log_path, {"format": 1, "created": stamp, "target": str(target),
                             "moves": [{"from": a, "to": b} for a, b in moves]})
    except FileExistsError:
        raise ImgsimError(f"{one_line(log_path)}: already exists; choose another log file") from None
    except OSError as exc:
        if created:
            shutil.rmtree(target, ignore_errors=True)  # only what this call made: an empty folder
        where = exc.filename or target
        raise ImgsimError(f"{one_line(where)}: cannot write there ({exc.strerror or exc}); nothing was moved") from None
    for done, (source, dest) in enumerate(moves):
        try:
            if not inside(source, root):  # checked again: a folder may have been swapped for a link since
                raise OSError(f"no longer a plain file inside the collection {one_line(root)}")
            move_file(source, dest)
        except OSError as exc:
            raise ImgsimError(f"{one_line(source)}: could not move it ({exc.strerror or exc}); {done} of {len(moves)} "
                              f"files were moved, undo with the log {one_line(log_path)}") from None
    return log_path


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents while they are empty, up to (not including) `top`."""
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def undo_moves(log) -> int:
    """Put every file a move log lists back where it was; returns how many were put back.

    A file that now exists at its original path is left alone (never overwritten): the rest are
    restored, then UndoIncomplete names what was left. Running it twice restores nothing twice. A
    move (or undo) killed half-way is understood: a partial copy under `partial_path` is removed (the
    file it was copying is still whole), and a copy that was finished before its source was
    unlinked (the same bytes in both places) is removed, leaving the original.
    """
    log = Path(log).expanduser()
    try:
        data = json.loads(log.read_text(encoding="ascii"))
        moves = [(str(m["from"]), str(m["to"])) for m in data["moves"]]
        target = Path(data["target"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImgsimError(f"{one_line(log)}: not a readable imgsim move log ({type(exc).__name__})") from None
    restored, conflicts = 0, []
    for source, dest in reversed(moves):
        for leftover in (partial_path(dest), partial_path(source)):  # a copy killed half-way
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        here, there = os.path.lexists(source), os.path.lexists(dest)
        if here and there:
            if os.path.samefile(source, dest) or same_bytes(source, dest):  # killed between copy (or link) and unlink
                os.unlink(dest)
                restored += 1
                remove_empty_folders(Path(dest).parent, target)
            else:
                conflicts.append((source, "a file is at the original path again"))
        elif there:
            try:
                move_file(dest, source)
                restored += 1
                remove_empty_folders(Path(dest).parent, target)
            except OSError as exc:
                conflicts.append((source, f"could not move it back ({exc.strerror or exc})"))
        elif not here:
            conflicts.append((source, f"missing from {one_line(dest)}"))
    if conflicts:
        listed = "; ".join(f"{one_line(p)}: {why}" for p, why in conflicts[:5])
        more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
        raise UndoIncomplete(f"put {restored} file(s) back; left {len(conflicts)}: {listed}{more}", restored, conflicts)
    return restored

