"""The one place that writes output files: atomically (temporary file, fsync, rename).

A run writes its articles' files without an fsync each and flushes them to disk together now and
then (`flush_to_disk`, see ``pipeline.checkpoints``): three fsyncs per article cost as much CPU as
rendering it, or more when the disks are busy."""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: once, at import, before any thread
    os.umask(mask)
    return mask


# A temporary file is created readable by its owner only; the file it becomes gets the mode any
# new file gets (0644 under the usual umask 022), so a web server can publish the site.
_FILE_MODE = 0o666 & ~_current_umask()


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A new file ``.<name>.<random>.tmp`` beside `path`, open for writing, mode 0600."""
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:  # the folder is made only when missing: one system call less per file
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def _discard(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a torn one.
    With `durable`, the bytes and the name are on disk when it returns (fsync of the file and of
    its folder); without, they are once the caller has flushed them (`flush_to_disk`): a crash of
    the process or ``kill -9`` leaves the old file or the new one either way, a power cut before
    the flush may leave the file torn.

    The bytes are written with os.write, not through a text file object: the same bytes (UTF-8, no
    newline translation) without its buffer and its system calls (fstat, ioctl, two lseek)."""
    data = text.encode("utf-8")
    fd, tmp = _temporary_beside(path)
    try:
        try:
            os.fchmod(fd, _FILE_MODE)
            done = os.write(fd, data)
            while done < len(data):  # a short write: rare, but the rest must follow
                done += os.write(fd, data[done:])
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    if durable:  # the new name too: after a power cut, the file is there under its name
        _fsync_path(path.parent)


def atomic_write_chunks(path: Path, chunks: Iterable[str]) -> None:
    """Write the pieces of a document as they come, atomically: a page of any size never sits whole
    in memory. An error while producing the pieces leaves the old file in place."""
    fd, tmp = _temporary_beside(path)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    _fsync_path(path.parent)


def _fsync_path(name: str | Path) -> None:
    """fsync a file or folder by its name (a folder can be opened so on POSIX systems only)."""
    if os.name != "posix" and os.path.isdir(name):
        return
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@lru_cache(maxsize=1)
def _syncfs() -> Callable[[int], int] | None:
    """The C library's syncfs(2), on Linux 5.8 or later (before, it did not report a failed write
    to disk, and a flush that lost data would pass), or None."""
    version = re.match(r"(\d+)\.(\d+)", os.uname().release) if sys.platform == "linux" else None
    if version is None or (int(version[1]), int(version[2])) < (5, 8):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the libraries this process has loaded
    except (OSError, TypeError):
        return None
    syncfs: Callable[[int], int] | None = getattr(libc, "syncfs", None)
    return syncfs


def flush_to_disk(paths: Iterable[str | Path]) -> None:
    """Put files written without `durable` (and their names, in their folders) on disk.

    With syncfs(2), one call per file system does it for all of them: the file system writes every
    waiting change at once, where an fsync per file costs a journal commit each. Elsewhere each
    file, each folder holding one and the folders holding those are fsynced (a new article's
    folder is a new name in its parent)."""
    files = [os.fspath(path) for path in paths]
    folders = sorted({os.path.dirname(file) for file in files})
    parents = sorted({os.path.dirname(folder) for folder in folders} - set(folders))
    syncfs = _syncfs()
    if syncfs is not None:
        devices: set[int] = set()
        for folder in folders:
            device = os.stat(folder).st_dev
            if device in devices:
                continue
            devices.add(device)
            fd = os.open(folder, os.O_RDONLY)
            try:
                if syncfs(fd) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, os.strerror(error), folder)
            finally:
                os.close(fd)
        return
    for name in [*files, *folders, *parents]:
        _fsync_path(name)


@lru_cache(maxsize=32)
def _temporaries_of(names: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """Whether a file name is that of a temporary file of one of `names` (glob patterns), as
    Path.glob matches it."""
    flags = re.IGNORECASE if os.path.normcase("A") == "a" else 0
    pattern = "|".join(fnmatch.translate(f".{name}.*.tmp") for name in names)
    return re.compile(pattern, flags).fullmatch


def remove_temporaries(folder: Path, names: Iterable[str] = ("*",)) -> None:
    """Delete the temporary files a killed process left in `folder` mid-write (``kill -9``, a power
    cut) for the files `names` (glob patterns); only the holder of the output folder's lock may."""
    names = tuple(names)
    is_temporary = _temporaries_of(names)
    try:  # the folder is read once, whatever the number of names
        with os.scandir(folder) as entries:
            leftovers = [entry.path for entry in entries if is_temporary(entry.name)]
    except (FileNotFoundError, NotADirectoryError):  # no folder: nothing left over
        return
    except OSError:  # anything else as Path.glob deals with it
        leftovers = [os.fspath(p) for name in names for p in folder.glob(f".{name}.*.tmp")]
    for leftover in leftovers:
        _discard(leftover)
