"""One run per output folder: an OS file lock, plus a note of who holds it.

The lock itself is an advisory OS lock (filelock), which the kernel releases when its process
dies, even under ``kill -9``. Next to it, ``.newsdesk.lock.json`` names the holder (pid, host,
start time) so a second run can say who is in the way, and a run that finds the note of a dead
holder takes over with a warning.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from pipeline.emit.write import atomic_write_text
from pipeline.errors import ConfigError, LockedError

LOCK_NAME = ".newsdesk.lock"
NOTE_NAME = ".newsdesk.lock.json"


class RunLock:
    def __init__(self, out: Path, run_id: str) -> None:
        self.out = out
        self.run_id = run_id
        self._lock = FileLock(str(out / LOCK_NAME))
        self.took_over: dict[str, object] | None = None

    def __enter__(self) -> RunLock:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(timeout=0)
        except Timeout:  # (a subclass of OSError: it must come first)
            raise LockedError(f"{self.out} is in use by another newsdesk run ({_describe(self._note())}); "
                              "wait for it to finish or use another --out folder") from None  # fmt: skip
        except OSError as exc:
            raise ConfigError(
                f"cannot write to the output folder {self.out}: {exc.strerror or exc}"
            ) from None
        previous = self._note()
        if previous:  # a note survives only when its holder died without cleaning up
            self.took_over = previous
        note = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": self.run_id,
                "started_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        try:  # also proves the folder is writable before anything is paid for
            atomic_write_text(self.out / NOTE_NAME, json.dumps(note) + "\n")
        except OSError as exc:
            self._lock.release()
            raise ConfigError(
                f"cannot write to the output folder {self.out}: {exc.strerror or exc}"
            ) from None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        (self.out / NOTE_NAME).unlink(missing_ok=True)
        self._lock.release()

    def _note(self) -> dict[str, object] | None:
        try:
            data = json.loads((self.out / NOTE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def _describe(note: dict[str, object] | None) -> str:
    if not note:
        return "holder unknown"
    return f"pid {note.get('pid')} on {note.get('host')}, started {note.get('started_at')}"


def describe_holder(note: dict[str, object]) -> str:
    return _describe(note)
