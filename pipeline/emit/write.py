"""The one place that writes output files: atomically (temporary file, fsync, rename)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: once, at import, before any thread
    os.umask(mask)
    return mask


# A temporary file is created readable by its owner only; the file it becomes gets the mode any
# new file gets (0644 under the usual umask 022), so a web server can publish the site.
_FILE_MODE = 0o666 & ~_current_umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a torn one."""
    atomic_write_chunks(path, (text,))


def atomic_write_chunks(path: Path, chunks: Iterable[str]) -> None:
    """Write the pieces of a document as they come, atomically: a page of any size never sits whole
    in memory. An error while producing the pieces leaves the old file in place."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:  # the folder is made only when missing: one system call less per file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporaries(folder: Path, names: Iterable[str] = ("*",)) -> None:
    """Delete the temporary files a killed process left in `folder` mid-write (``kill -9``, a power
    cut) for the files `names` (glob patterns); only the holder of the output folder's lock may."""
    for name in names:
        for leftover in folder.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)
