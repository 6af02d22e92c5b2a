"""The run's event log: one JSON object per line in ``OUT/logs/<run_id>.jsonl``.

Every line passes through the redactor, so no secret reaches the log at any verbosity.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pipeline.redact import Redactor


class EventLog:
    def __init__(self, path: Path | None, redactor: Redactor | None = None) -> None:
        self.path = path
        self.redactor = redactor or Redactor()
        self._handle: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("a", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> None:
        if self._handle is None:
            return
        record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
        self._handle.write(self.redactor(json.dumps(record, ensure_ascii=False, default=str)) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
