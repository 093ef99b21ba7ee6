"""Files written whole or not at all, and durable once written: the one atomic write imgsim uses.

`write_atomic` fills a temporary file in the target's own folder (so the rename cannot cross file
systems), fsyncs it, renames it over the target and fsyncs the folder, so that a reader sees the
old file or the new one, never half of one, and a power cut after the call cannot undo it. A kill
mid-write leaves at worst a hidden `.<name>.<random>` file beside the target.

Segment files (`write_file`, `checked_path`) are the other kind: content-addressed, named by the
sha256 of their bytes, written once and never replaced while intact. The image records
(imgsim.storage.records) and the vector engines (imgsim.storage.engines) both keep theirs in `segments/`. This
module sits below storage and the engines: of imgsim it imports only the errors.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from imgsim.core.errors import DamagedIndexError, ImgsimError

NAME = re.compile(r"^([0-9a-f]{64})\.[a-z0-9]+(\.[a-z0-9]+)*$")  # a segment file: <sha256>.<kind>...


def fsync_path(path) -> None:
    """Flush a file's or a folder's entry to disk (a folder: the names in it, after a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def temporary_beside(path) -> Path:
    """A new hidden name in `path`'s folder for a file that will be renamed to `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}")


def write_atomic(path, data: str | bytes, encoding: str = "utf-8", durable: bool = True) -> Path:
    """Replace `path` with `data` (text is encoded with `encoding`) whole or not at all; returns the path."""
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    return write_atomic_with(path, lambda fh: fh.write(payload), durable)


def write_atomic_with(path, write: Callable[[BinaryIO], object], durable: bool = True) -> Path:
    """Replace `path` with what `write(binary file)` writes (np.save, np.savez ...), whole or not at all.

    `durable=False` skips both fsyncs: for a cache that is checked when read and made again when it is
    damaged (display thumbnails), where a power cut may lose the file but never shows half of one.
    """
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)
    return path


class NotAPlainFile(ImgsimError):
    """A path imgsim would read or write is a link out of its folder, a device, a FIFO, or changed on the way."""

    def __init__(self, path, why: str):
        super().__init__(f"{path}: {why}")
        self.why = why


def inside(path, root) -> bool:
    """Whether `path`, every link on its way followed, lies in `root` (followed too)."""
    try:
        real, top = os.path.realpath(path), os.path.realpath(root)
    except (OSError, ValueError):
        return False
    return os.path.commonpath([real, top]) == top


NO_FOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def open_folder(path, parent: int | None = None) -> int:
    """A folder's descriptor, never through a link (`path` relative to the open folder `parent`, when given)."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | NO_FOLLOW, dir_fd=parent)


def open_plain(path, root=None) -> tuple[int, os.stat_result]:
    """Open a regular file for reading, following no link that was not there when its path was resolved.

    The path is resolved once; with `root`, the result must lie inside `root`. Then every folder on
    the way is opened by name below the one before, with no-follow, so a folder swapped for a link
    after the check is refused rather than followed; the file itself must be regular (a FIFO, a
    device such as /dev/zero, a socket are refused; opening one never blocks). Returns the open
    descriptor, which the caller closes, and its stat. Raises NotAPlainFile or OSError.
    """
    real = os.path.realpath(path)
    top = os.path.realpath(root) if root is not None else os.path.sep
    if os.path.commonpath([real, top]) != top or real == top:
        how = "a link that leads" if os.path.islink(path) else "lies"
        raise NotAPlainFile(path, f"{how} outside {top}: refused")
    *folders, name = Path(real).relative_to(top).parts
    folder = os.open(top, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in folders:
            inner = open_folder(part, folder)
            os.close(folder)
            folder = inner
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | NO_FOLLOW, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotAPlainFile(path, "a link appeared on its way after it was checked: refused") from None
        raise
    finally:
        os.close(folder)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotAPlainFile(path, f"not a regular file ({kind_of(info.st_mode)}): refused")
    return fd, info


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, in a word or two."""
    for test, word in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                       (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a link")):
        if test(mode):
            return word
    return "not a file"


def read_plain(path, max_bytes: int) -> bytes:
    """A regular file's bytes, for the small files kept in a model folder (names, labels, a run's status).

    No link is followed and a FIFO or device is refused (a labels file replaced by a link to
    /dev/zero was read until memory ran out); over `max_bytes` is refused too. Raises
    FileNotFoundError when there is none, OSError when it cannot be opened (ELOOP: a link),
    ValueError naming the problem otherwise.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NO_FOLLOW)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"not a regular file ({kind_of(info.st_mode)})")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"over {max_bytes:,} bytes")
    return data


def open_npz(path, max_bytes: int):
    """An .npz cache file opened for `np.load`, after the checks that bound what loading it can cost.

    For derived files kept beside the versions (outside their checksums): a regular file (no link
    followed, never a FIFO), at most `max_bytes` (the caller's bound from the version's image count),
    every member stored uncompressed, so that its arrays take no more memory than the file's own
    bytes (a deflated member of a few MB can hold gigabytes). Returns np.load's NpzFile (a context
    manager; pickles refused); raises FileNotFoundError when there is none, ValueError naming the
    problem otherwise, before any array is read.
    """
    import zipfile

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NO_FOLLOW)
    fh = os.fdopen(fd, "rb")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"not a regular file ({kind_of(info.st_mode)})")
        if info.st_size > max_bytes:
            raise ValueError(f"{info.st_size:,} bytes, more than the {max_bytes:,} this version's arrays can take")
        try:
            members = zipfile.ZipFile(fh).infolist()
        except zipfile.BadZipFile as exc:
            raise ValueError(f"not an .npz file ({exc})") from None
        packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED or m.file_size != m.compress_size]
        if packed:
            raise ValueError(f"{packed[0]} is compressed (it could hold far more than the file's size)")
        fh.seek(0)
        return np.lib.npyio.NpzFile(fh, own_fid=True, allow_pickle=False)  # closes the file when it is closed
    except BaseException:
        fh.close()
        raise


def write_file(folder: Path, suffix: str, write) -> str:
    """Have `write(path)` fill a temporary file, then file it under the sha256 of its bytes.

    A file already there under that name is kept when intact (another version's, or a crashed
    run's) and replaced when damaged. Returns the name; the caller fsyncs the folder (once for
    all of a save's files). Not imgsim.core.files.write_atomic: the name is known only once the bytes are.
    """
    tmp = folder / f".tmp-{secrets.token_hex(8)}{suffix}"
    try:
        write(tmp)
        fsync_path(tmp)
        digest = sha256_of(tmp)
        name = digest + suffix
        final = folder / name
        if final.is_file() and sha256_of(final) == digest:
            tmp.unlink()
        else:
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return name


def write_array(folder: Path, suffix: str, array: np.ndarray) -> str:
    def write(path):
        with open(path, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

    return write_file(folder, suffix, write)


def checked_path(folder: Path, name, verify: bool = True) -> Path:
    """The path of a segment file named in a state, after checking its name and its checksum."""
    if not isinstance(name, str) or not NAME.match(name):
        raise DamagedIndexError(f"{folder}: {json.dumps(name)} is not a segment file name")
    path = folder / name
    if not path.is_file():
        raise DamagedIndexError(f"{path}: segment file is missing")
    if verify and sha256_of(path) != NAME.match(name).group(1):
        raise DamagedIndexError(f"{path}: segment file is damaged (checksum mismatch)")
    return path


def open_array(folder: Path, name, verify: bool, dtype, shape, mmap: bool = False) -> np.ndarray:
    path = checked_path(folder, name, verify)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DamagedIndexError(f"{path}: not a readable array ({exc})") from None
    if array.dtype != dtype or array.shape[: len(shape)] != shape or array.ndim != len(shape):
        raise DamagedIndexError(
            f"{path}: holds {array.dtype} {array.shape}, the state expects {np.dtype(dtype)} {shape}"
        )
    return array
