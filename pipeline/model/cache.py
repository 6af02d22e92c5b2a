"""The call journal: every answered call of an unfinished article is kept under ``OUT/.calls``.

A rerun after a crash (or ``kill -9``) answers those calls from the journal instead of paying for
them again, as long as the request is byte-for-byte the same. The runner clears an article's
journal once its outputs are written, drops the answers of a failed article's calls that were
refused, filtered, cut off or rejected by the checks (a retry must ask again, not replay them),
and drops it all when ``--force`` redoes the article.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.emit.write import atomic_write_text
from pipeline.model.base import ChatModel, ModelReply, ModelRequest, reply_from_body
from pipeline.model.replay import recording_document, recording_path, request_sha256

JOURNAL_DIR = ".calls"


class JournaledModel:
    def __init__(self, inner: ChatModel, folder: Path) -> None:
        self.inner = inner
        self.folder = folder
        self.run_id: str | None = None  # the run under way: a batch answer it collects is paid by it

    async def complete(self, request: ModelRequest) -> ModelReply:
        path = recording_path(self.folder, request)
        cached = self._read(path, request)
        if cached is not None:
            return cached
        reply = await self.inner.complete(request)
        self.save(request, reply.body)
        return reply

    def save(self, request: ModelRequest, response: dict[str, Any], *, batch: bool = False) -> None:
        document = {**recording_document(request, response), "batch": batch}
        if batch:
            document["batch_run"] = self.run_id
        atomic_write_text(
            recording_path(self.folder, request), json.dumps(document, ensure_ascii=False) + "\n"
        )

    def has(self, request: ModelRequest) -> bool:
        return self._read(recording_path(self.folder, request), request) is not None

    def _read(self, path: Path, request: ModelRequest) -> ModelReply | None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(document, dict) or document.get("request_sha256") != request_sha256(request.body):
            return None
        if not isinstance(document.get("response"), dict):  # torn by hand: the call is made again
            return None
        reply = reply_from_body(document["response"])
        if document.get("batch") and document.get("batch_run") == self.run_id:
            return replace(reply, batch=True)  # collected by this run's batch: paid now, at the batch price
        return replace(reply, journaled=True)

    def forget(self, article_id: str, calls: list[str] | None = None) -> None:
        """Drop the article's journaled answers: all of them, or those of the `calls` given."""
        if calls is None:
            shutil.rmtree(self.folder / article_id, ignore_errors=True)
            return
        for call in calls:
            for path in (self.folder / article_id).glob(f"{call}-*.json"):
                path.unlink(missing_ok=True)

    async def aclose(self) -> None:
        await self.inner.aclose()
