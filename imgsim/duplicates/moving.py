"""Moving copies out of the collection, undoably: `move_duplicates` writes its JSON log of every (from, to) before it
moves a file, and `undo_moves` reads that log back, so even a run killed half-way can be undone. Nothing is deleted.

The move folder is imgsim's own: made by imgsim, private to the user who runs it (0700) and marked as
a move folder (`MARKER`); one that exists and is not (someone else's, a link, a folder made by
hand) is refused, so nobody else can plant links in it or edit its logs. Undo trusts no log even
so: every `from` must lie inside the collection, every `to` inside the move folder the log was
written for (a regular file, not a link), and the log itself must be a regular file in that folder.
"""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import json
import os
import shutil
import stat
import time
from pathlib import Path

from imgsim.core.errors import ImgsimError
from imgsim.core.files import NO_FOLLOW, NotAPlainFile, fsync_path, open_plain
from imgsim.duplicates.groups import DuplicateGroup

MARKER = ".imgsim-move-folder"  # in every move folder imgsim made
MAX_LOG_BYTES = 64 * 2**20  # a log names two paths per moved file: far more moves than any collection has copies


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
        raise ImgsimError(f"{target}: inside the collection {root}; the moved copies would be "
                          "indexed again. Choose a folder outside it")


def file_sha1(path, root=None) -> str | None:
    """The sha1 of a regular file's bytes now, read through no link (inside `root`, when given); None if it cannot be."""
    digest = hashlib.sha1()
    try:
        fd, _ = open_plain(path, root)
        with os.fdopen(fd, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, NotAPlainFile):
        return None
    return digest.hexdigest()


def inside(source, root: Path, folder: bool = False) -> bool:
    """Whether `source` is a plain file (not a link), or with `folder` a folder or a path not there yet, inside
    `root` once every link on its way is followed."""
    path = Path(source)
    try:
        if folder:
            return Path(root).resolve() in (path.resolve() / "x").parents
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
            raise ImgsimError(f"no duplicate group {number} to keep {path} in")
        if path not in {m.path for m in group.images}:
            raise ImgsimError(f"{path}: not a member of duplicate group {number}")
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
            raise ImgsimError(f"{source}: no longer there (or not a plain file); find the duplicates "
                              "again before moving")
        if not inside(path, root):
            raise ImgsimError(f"{source}: not inside the collection {root} once links are "
                              "followed; nothing was moved")
        folder = path.parent.resolve()
        if target == folder or folder in target.parents or target in path.resolve().parents:
            raise ImgsimError(f"{target}: inside or next to the copies' own folder {folder}; "
                              "moving there would put them back into the collection. Choose a folder outside it")
    for source, kept in exact:
        if file_sha1(source, root) != file_sha1(kept, root) or file_sha1(source, root) is None:
            raise ImgsimError(f"{source}: no longer the same bytes as {kept}; find the "
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


def move_file(source: str, dest: str, root) -> None:
    """Move a regular file inside `root` without ever overwriting: a hard link (fails if dest exists) then unlink, or a
    copy across file systems.

    The source is never followed if it is a link (the link itself is refused). The copy is written
    to `partial_path(dest)`, fsynced, then linked to dest (which fails if dest exists; renamed where
    hard links are not supported) and only then is the source unlinked. So a kill leaves the source
    whole and at worst a partial file under that name, which `undo_moves` removes.
    """
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    fd, info = open_plain(source, root)  # a regular file inside root, reached through no link
    try:
        try:
            os.link(source, dest, follow_symlinks=False)
            linked = os.stat(dest, follow_symlinks=False)
            if (linked.st_dev, linked.st_ino) != (info.st_dev, info.st_ino):  # swapped since it was opened
                os.unlink(dest)
                raise NotAPlainFile(source, "changed while it was being moved: refused")
        except FileExistsError:
            raise
        except OSError:  # another file system, or one without hard links
            copy_into_place(fd, info, Path(dest))
    finally:
        os.close(fd)
    os.unlink(source)


def copy_into_place(fd: int, info: os.stat_result, dest: Path) -> None:
    """Copy the open file (as it was when checked) to `dest`, through a partial file, never over a file."""
    partial = partial_path(dest)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)  # a killed move's leftover, ours by its name
    try:
        with os.fdopen(os.dup(fd), "rb") as src, open(partial, "xb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(partial, stat.S_IMODE(info.st_mode))
        os.utime(partial, ns=(info.st_atime_ns, info.st_mtime_ns))
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
    """Whether two regular files (neither a link) hold the same bytes."""
    try:
        if not all(stat.S_ISREG(os.lstat(path).st_mode) for path in (a, b)):
            return False
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
    (`plan_moves`). The target folder is imgsim's own (`move_folder`). The log (default
    `target_folder/imgsim-moves-<time>.json`, and always inside it) lists every move and is
    written before the first.
    """
    root = Path(root).expanduser().resolve()
    check_target(Path(target_folder).expanduser(), root)
    target = Path(target_folder).expanduser()
    if target.exists() and not target.is_dir():
        raise ImgsimError(f"{target}: not a folder")
    target = target.parent.resolve() / target.name  # the folder itself is checked, never followed (move_folder)
    moves = plan_moves(groups, target, keep, root)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    log_path = Path(log).expanduser() if log else unique_name(target / f"imgsim-moves-{stamp}.json", set())
    if os.path.lexists(target):
        move_folder(target)  # before anything is written: a folder that is not imgsim's own is refused
    if log_path.parent.resolve() != target:
        raise ImgsimError(f"{log_path}: a move log goes in the move folder {target}")
    created = not os.path.lexists(target)

    def cannot_write(exc: OSError) -> ImgsimError:
        if created:
            shutil.rmtree(target, ignore_errors=True)  # only what this call made: an empty folder and its mark
        where = exc.filename or target
        return ImgsimError(f"{where}: cannot write there ({exc.strerror or exc}); nothing was moved")

    try:  # apart from the log's: a folder asked for under a file is not "a log that already exists"
        move_folder(target, create=True)
    except OSError as exc:
        raise cannot_write(exc) from None
    try:
        write_log(log_path, {"format": 2, "created": stamp, "root": str(root), "target": str(target),
                             "moves": [{"from": a, "to": b} for a, b in moves]})
    except FileExistsError:
        raise ImgsimError(f"{log_path}: already exists; choose another log file") from None
    except OSError as exc:
        raise cannot_write(exc) from None
    for done, (source, dest) in enumerate(moves):
        try:
            if not inside(source, root):  # checked again: a folder may have been swapped for a link since
                raise OSError(f"no longer a plain file inside the collection {root}")
            move_file(source, dest, root)
        except (OSError, NotAPlainFile) as exc:
            why = exc.why if isinstance(exc, NotAPlainFile) else exc.strerror or exc
            raise ImgsimError(f"{source}: could not move it ({why}); {done} of {len(moves)} "
                              f"files were moved, undo with the log {log_path}") from None
    return log_path


def move_folder(target: Path, create: bool = False) -> Path:
    """`target` as imgsim's own move folder: made here (0700, marked), or made so by imgsim before; refuses anything else.

    A folder that exists without imgsim's mark, belongs to someone else, is open to others, or is
    a link is refused: whoever could write in it could plant links for the moves or edit the logs
    that undo reads.
    """
    if create:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(target, 0o700)
            fd = os.open(target / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as mark:
                mark.write("imgsim move folder: files moved out of a collection, and the logs that put them back\n")
            return target
        except FileExistsError:
            pass
    folder = mark = None
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        folder = os.lstat(target)
        mark = os.lstat(target / MARKER)
    why = ("is a link" if folder is not None and stat.S_ISLNK(folder.st_mode)
           else "was not made by imgsim" if folder is None or mark is None or not stat.S_ISREG(mark.st_mode)
           else "belongs to someone else" if folder.st_uid != os.geteuid() or mark.st_uid != os.geteuid()
           else "is open to other users" if folder.st_mode & 0o077 else None)
    if why:
        raise ImgsimError(f"{target}: {why}, so it is not a move folder imgsim can trust; choose a new "
                          "folder (imgsim makes it)")
    return target


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents while they are empty, up to (not including) `top`."""
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def undo_moves(log, root=None) -> int:
    """Put every file a move log lists back where it was; returns how many were put back.

    The log must be a regular file in the imgsim move folder it names (`move_folder`), and each
    entry must move a file from inside the collection (`root`, or the one the log names; both must
    agree) to a regular file inside that folder: a log that says otherwise is refused whole,
    naming the first entry that does, and nothing is moved. A file that now exists at its original
    path is left alone (never overwritten): the rest are restored, then UndoIncomplete names what
    was left. Running it twice restores nothing twice. A move (or undo) killed half-way is
    understood: a partial copy under `partial_path` is removed (the file it was copying is still
    whole), and a copy that was finished before its source was unlinked (the same bytes in both
    places) is removed, leaving the original.
    """
    root, target, moves = read_log(Path(log).expanduser(), root)
    restored, conflicts = 0, []
    for source, dest in reversed(moves):
        for leftover in (partial_path(dest), partial_path(source)):  # a copy killed half-way
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        here, there = os.path.lexists(source), os.path.lexists(dest)
        if there and not stat.S_ISREG(os.lstat(dest).st_mode):
            conflicts.append((source, f"{dest} is no longer a plain file"))
        elif here and there:
            if same_bytes(source, dest):  # killed between copy (or link) and unlink
                os.unlink(dest)
                restored += 1
                remove_empty_folders(Path(dest).parent, target)
            else:
                conflicts.append((source, "a file is at the original path again"))
        elif there:
            try:
                if not inside(Path(source).parent / ".", root, folder=True):
                    raise OSError(f"its folder is no longer inside the collection {root}")
                move_file(dest, source, target)
                restored += 1
                remove_empty_folders(Path(dest).parent, target)
            except (OSError, NotAPlainFile) as exc:
                why = exc.why if isinstance(exc, NotAPlainFile) else exc.strerror or exc
                conflicts.append((source, f"could not move it back ({why})"))
        elif not here:
            conflicts.append((source, f"missing from {dest}"))
    if conflicts:
        listed = "; ".join(f"{p}: {why}" for p, why in conflicts[:5])
        more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
        raise UndoIncomplete(f"put {restored} file(s) back; left {len(conflicts)}: {listed}{more}", restored, conflicts)
    return restored


def read_log(log: Path, root) -> tuple[Path, Path, list[tuple[str, str]]]:
    """(collection, move folder, moves) of a log `undo_moves` may act on; raises ImgsimError, naming why, otherwise."""
    if log.is_symlink():
        raise ImgsimError(f"{log}: a link, not a move log: refused, nothing was moved")
    try:
        fd, info = open_plain(log)
        with os.fdopen(fd, "rb") as fh:
            if info.st_size > MAX_LOG_BYTES:
                raise ValueError(f"{info.st_size / 2**20:.0f} MB")
            data = json.loads(fh.read(MAX_LOG_BYTES).decode("ascii"))
        moves = [(m["from"], m["to"]) for m in data["moves"]]
        target, logged_root = Path(data["target"]), Path(data.get("root") or root)
        if not all(isinstance(path, str) for move in moves for path in move):
            raise TypeError("a path that is not text")
    except NotAPlainFile as exc:
        raise ImgsimError(f"{log}: {exc.why}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ImgsimError(f"{log}: not a readable imgsim move log ({type(exc).__name__})") from None
    if root is not None and Path(root).expanduser().resolve() != logged_root.resolve():
        raise ImgsimError(f"{log}: written for the collection {logged_root}, not this one; "
                          "nothing was moved")
    root = logged_root.resolve()
    move_folder(target)
    if log.is_symlink() or Path(os.path.realpath(log)).parent != target.resolve():
        raise ImgsimError(f"{log}: not in the move folder {target} it was written for; nothing was moved")
    for source, dest in moves:
        if not inside(Path(source).parent / ".", root, folder=True):
            raise ImgsimError(f"{log}: lists {source}, which is not inside the collection "
                              f"{root}: refused, nothing was moved")
        if not Path(dest).is_relative_to(target) or not inside(Path(dest).parent / ".", target, folder=True):
            raise ImgsimError(f"{log}: lists {dest}, which is not inside the move folder "
                              f"{target}: refused, nothing was moved")
    return root, target, moves
