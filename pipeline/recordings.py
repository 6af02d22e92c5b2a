"""Which recordings are current, stale, missing or orphaned (``newsdesk fixtures status``).

A recording is *current* when it was made with the prompt version the templates give today,
*stale* when with another one, *missing* when an input has no recording for a call, and
*orphaned* when no input uses it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.errors import InputError
from pipeline.ingest import Limits, load_articles
from pipeline.ingest.article import Article
from pipeline.model.base import CallKey, ModelRequest
from pipeline.model.replay import recording_path
from pipeline.prompts import PromptBook
from pipeline.schema import LANGS

State = Literal["current", "stale", "missing", "orphaned"]


@dataclass(frozen=True)
class RecordingState:
    state: State
    path: str
    article_id: str
    source: str | None
    call: str | None
    recorded_version: str | None = None


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
    states: list[RecordingState] = []
    used: set[Path] = set()
    for article in load_articles(paths, limits):
        if not isinstance(article, Article):
            continue
        for call in LANGS:
            request = ModelRequest(CallKey(article.id, call, 0), {}, book.version)
            path = recording_path(recordings, request)
            used.add(path.resolve())
            states.append(_state(path, article, call, book.version))
    for path in sorted(recordings.glob("*/*.json")):
        if path.resolve() not in used and not _is_retry_of_used(path, used):
            states.append(RecordingState("orphaned", str(path), path.parent.name, None, None, _version(path)))
    return states


def _state(path: Path, article: Article, call: str, current: str) -> RecordingState:
    if not path.is_file():
        return RecordingState("missing", str(path), article.id, article.input_path, call)
    version = _version(path)
    state: State = "current" if version == current else "stale"
    return RecordingState(state, str(path), article.id, article.input_path, call, version)


def _is_retry_of_used(path: Path, used: set[Path]) -> bool:
    """`en-1.json` (a re-ask) belongs to an input whose `en-0.json` is used."""
    call = path.stem.rsplit("-", 1)[0]
    return (path.parent / f"{call}-0.json").resolve() in used


def _version(path: Path) -> str | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = document.get("prompt_version") if isinstance(document, dict) else None
    return version if isinstance(version, str) else None
