"""Which recordings are current, stale, missing, unreadable or orphaned (``newsdesk fixtures status``).

Each input is replayed as a run would replay it, answers checked and re-asks followed, so every
recording the run would use is judged, re-asks included: *current* when it answers the exact
request sent today, *stale* when the request has changed since it was recorded, *missing* when
the run needs one that is not there, *unreadable* when it (or the input) cannot be read, and
*orphaned* when no input uses it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.analyze import Analyzer
from pipeline.errors import InputError, RecordingMissing
from pipeline.ingest import InputFailure, Limits, load_articles, real_path
from pipeline.ingest.article import Article
from pipeline.model.base import ModelReply, ModelRequest
from pipeline.model.replay import ReplayModel, recording_path
from pipeline.prompts import PromptBook

State = Literal["current", "stale", "missing", "unreadable", "orphaned"]
STATES: tuple[State, ...] = ("current", "stale", "missing", "unreadable", "orphaned")


@dataclass(frozen=True)
class RecordingState:
    state: State
    path: str
    article_id: str
    source: str | None
    call: str | None
    recorded_version: str | None = None
    attempt: int = 0
    reason: str | None = None  # why it is unreadable


def recording_states(
    paths: Iterable[Path], recordings: Path, book: PromptBook, limits: Limits
) -> list[RecordingState]:
    """The state of every recording the inputs under `paths` use, and of those none uses. A path
    or recordings folder that does not exist is an InputError (a typo must not read as "all
    missing")."""
    paths = list(paths)
    for path in paths:
        if not path.exists():
            raise InputError(str(path), "no such file or folder")
    if not recordings.is_dir():
        raise InputError(str(recordings), "no such recordings folder")
    return asyncio.run(_walk(paths, recordings, book, limits))


async def _walk(
    paths: list[Path], recordings: Path, book: PromptBook, limits: Limits
) -> list[RecordingState]:
    states: list[RecordingState] = []
    for item in load_articles(paths, limits):
        if isinstance(item, InputFailure):
            states.append(RecordingState("unreadable", item.label, "", item.label, None, reason=item.reason))
            continue
        probe = _Probe(ReplayModel(recordings), item)
        await Analyzer(probe, book, book.settings).analyze(item)
        states += probe.states
    used = {real_path(Path(s.path)) for s in states}
    for path in sorted(recordings.glob("*/*.json")):
        if real_path(path) not in used:
            states.append(RecordingState("orphaned", str(path), path.parent.name, None, None, _version(path)))
    return states


class _Probe:
    """Replays one article's calls and notes the state of each recording it reads."""

    def __init__(self, replay: ReplayModel, article: Article) -> None:
        self.replay = replay
        self.article = article
        self.states: list[RecordingState] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        path = recording_path(self.replay.folder, request)
        try:
            reply = await self.replay.complete(request)
        except RecordingMissing as exc:  # the article's conversation ends here
            state: State = "unreadable" if path.exists() else "missing"
            self._note(state, path, request, reason=str(exc) if state == "unreadable" else None)
            raise
        self._note("stale" if reply.stale else "current", path, request, _version(path))
        return reply

    def _note(self, state: State, path: Path, request: ModelRequest, version: str | None = None,
              reason: str | None = None) -> None:  # fmt: skip
        key = request.key
        self.states.append(RecordingState(state, str(path), key.article_id, self.article.input_path, key.call,
                                          version, key.attempt, reason))  # fmt: skip

    async def aclose(self) -> None:
        return None


def _version(path: Path) -> str | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = document.get("prompt_version") if isinstance(document, dict) else None
    return version if isinstance(version, str) else None
