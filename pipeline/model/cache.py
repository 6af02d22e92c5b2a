"""The call journal: every answered call of an unfinished article is kept under ``OUT/.calls``.

A rerun after a crash (or ``kill -9``) answers those calls from the journal instead of paying for
them again, as long as the request is byte-for-byte the same. The runner clears an article's
journal once its outputs are on disk (``pipeline.checkpoints``), drops the answers of a failed
article's calls that were refused, filtered, cut off or rejected by the checks (a retry must ask
again, not replay them), and drops it all when ``--force`` redoes the article.

Each answer also says which run made the call (``paid_in``; none for a Batch API answer) and
whether an article entry in a run's log and report holds its cost (``accounted``, set once the
article's entry is recorded; a finished article's journal is cleared once its files are on disk).
A run reports the cost of each answer it uses that no entry holds: the Batch API answers, and the
calls of a run that was killed (or interrupted mid-article) before it recorded them; once, however
often it uses them. So does a run that skips an article whose answers are still journaled.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.emit.write import atomic_write_text
from pipeline.model.base import ChatModel, ModelReply, ModelRequest, reply_from_body
from pipeline.model.replay import recording_document, recording_path, request_sha256
from pipeline.schema import Usage

JOURNAL_DIR = ".calls"


class JournaledModel:
    def __init__(self, inner: ChatModel, folder: Path) -> None:
        self.inner = inner
        self.folder = folder
        self._run_id: str | None = None
        self._counted: set[Path] = set()

    @property
    def run_id(self) -> str | None:
        """The run under way: it pays for the calls it makes and reports the answers it counts."""
        return self._run_id

    @run_id.setter
    def run_id(self, run_id: str | None) -> None:
        self._run_id = run_id
        # the answers whose cost the run has counted: in memory, since a run killed before its
        # report has reported nothing, and the next run counts them again
        self._counted = set()

    async def complete(self, request: ModelRequest) -> ModelReply:
        path = recording_path(self.folder, request)
        document = self._document(path, request)
        if document is not None:
            return self._replay(path, document)
        reply = await self.inner.complete(request)
        self.save(request, reply.body, paid_in=self.run_id)
        return reply

    def save(
        self,
        request: ModelRequest,
        response: dict[str, Any],
        *,
        batch: bool = False,
        paid_in: str | None = None,
    ) -> None:
        """Journal an answer: a live call's, counted by the run that made it (`paid_in`), or a
        Batch API answer (`batch`), counted by the run that first uses it."""
        document = {**recording_document(request, response), "batch": batch, "paid_in": paid_in,
                    "accounted": False}  # fmt: skip
        self._write(path=recording_path(self.folder, request), document=document)

    def holds(self, article_id: str) -> bool:
        """Whether any answer of the article is journaled."""
        return any((self.folder / article_id).glob("*.json"))

    def has(self, request: ModelRequest) -> bool:
        return self._document(recording_path(self.folder, request), request) is not None

    def account(self, article_id: str) -> None:
        """The article's entry, which counts its journaled answers, is recorded in this run's report
        (and log): no later run counts them again."""
        for path, document in self._documents(article_id):
            if document.get("accounted") is False:
                try:
                    self._write(path, {**document, "accounted": True})
                except OSError:  # a full disk, say: a later run reports this cost once more, no worse
                    continue

    def unreported(self, article_id: str) -> tuple[Usage, Usage]:
        """What the article's journaled answers cost that no report holds yet, at the live and at
        the Batch API price: those of a run that stopped (killed, a power cut) after it wrote the
        article's files and before it reported them. This run counts them, once."""
        live, batch = Usage(), Usage()
        for path, document in self._documents(article_id):
            if not isinstance(document.get("response"), dict):
                continue
            reply = self._replay(path, document)
            if reply.journaled:  # in a report already, or counted by this run
                continue
            if reply.batch:
                batch = batch + reply.usage
            else:
                live = live + reply.usage
        return live, batch

    def _documents(self, article_id: str) -> Iterator[tuple[Path, dict[str, Any]]]:
        """The article's journal files that can be read, with what they hold."""
        for path in sorted((self.folder / article_id).glob("*.json")):
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(document, dict):
                yield path, document

    def _replay(self, path: Path, document: dict[str, Any]) -> ModelReply:
        reply = reply_from_body(document["response"])
        if "accounted" not in document:  # journaled by an older version
            if document.get("batch") and document.get("batch_run") == self.run_id:
                return replace(reply, batch=True)
            return replace(reply, journaled=True)
        made_here = document.get("paid_in") is not None and document.get("paid_in") == self.run_id
        if document["accounted"] or made_here or path in self._counted:
            return replace(reply, journaled=True)  # in a report already, or counted by this run
        # a Batch API answer used for the first time, or a call of a run that ended before it
        # reported it (killed, or interrupted mid-article): this run counts it, once
        self._counted.add(path)
        return replace(reply, batch=bool(document.get("batch")))

    def _document(self, path: Path, request: ModelRequest) -> dict[str, Any] | None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(document, dict) or document.get("request_sha256") != request_sha256(request.body):
            return None
        if not isinstance(document.get("response"), dict):  # torn by hand: the call is made again
            return None
        return document

    def _write(self, path: Path, document: dict[str, Any]) -> None:
        atomic_write_text(path, json.dumps(document, ensure_ascii=False) + "\n")

    def forget(self, article_id: str, calls: list[str] | None = None) -> None:
        """Drop the article's journaled answers: all of them, or those of the `calls` given."""
        if calls is None:
            shutil.rmtree(self.folder / article_id, ignore_errors=True)
            return
        for call in calls:
            for path in (self.folder / article_id).glob(f"{call}-*.json"):
                path.unlink(missing_ok=True)

    def rate_limit_pause_s(self) -> float:
        """How long the endpoint's 429s have paused the run (a model that paces nothing: 0)."""
        pause = getattr(self.inner, "rate_limit_pause_s", None)
        return float(pause()) if callable(pause) else 0.0

    async def aclose(self) -> None:
        await self.inner.aclose()
