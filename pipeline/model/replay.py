"""Record and replay: one JSON file per model call under ``DIR/<article id>/<call>-<attempt>.json``.

A recording holds ``request`` (the exact body sent), ``response`` (the exact body received),
the ``key`` that finds it again and the ``prompt_version`` it was made with. No API key or
header is ever written. A recording is *stale* when the request sent today differs from the one
recorded (the prompts, the glossary, the schema or the model parameters changed for it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.emit.write import atomic_write_text
from pipeline.errors import RecordingMissing, RecordingStale, RecordingUnwritable
from pipeline.model.base import ChatModel, ModelReply, ModelRequest, reply_from_body


def request_sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def recording_path(folder: Path, request: ModelRequest) -> Path:
    return folder / request.key.article_id / request.key.filename


def recording_document(request: ModelRequest, response: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": {"article_id": request.key.article_id, "call": request.key.call,
                "attempt": request.key.attempt},
        "prompt_version": request.prompt_version,
        "request_sha256": request_sha256(request.body),
        "request": request.body,
        "response": response,
    }  # fmt: skip


def read_recording(path: Path, request: ModelRequest) -> dict[str, Any]:
    """The recording at `path`, with a "response" object; RecordingMissing, naming the file and
    the fix, when there is none or it cannot be read."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        key = request.key
        raise RecordingMissing(
            f"no recording for article {key.article_id} call {key.call} attempt {key.attempt} in "
            f"{path.parent.parent}; record it with `newsdesk run ARTICLE --record {path.parent.parent}` "
            "against a live endpoint"
        ) from None
    except json.JSONDecodeError as exc:
        raise RecordingMissing(f"recording {path} is not valid JSON ({exc.msg}); record it again") from None
    except UnicodeDecodeError:
        raise RecordingMissing(f"recording {path} is not UTF-8 text; record it again") from None
    except OSError as exc:
        raise RecordingMissing(
            f"recording {path} cannot be read ({exc.strerror or exc}); record it again"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("response"), dict):
        raise RecordingMissing(
            f'recording {path} holds no recorded response (a JSON object with a "response" '
            "object); record it again"
        )
    return document


def is_stale(document: dict[str, Any], request: ModelRequest) -> bool:
    """Whether a recording answers another request than `request`, by the hash of the request it
    stored: an edit to the Chinese task leaves the English calls current, and a re-ask whose
    findings changed is stale. (A recording without a hash goes by its prompt version.)"""
    recorded = document.get("request_sha256")
    if not isinstance(recorded, str):
        return document.get("prompt_version") != request.prompt_version
    return recorded != request_sha256(request.body)


class ReplayModel:
    """Answers from recordings; never touches the network."""

    def __init__(self, folder: Path, *, strict: bool = False) -> None:
        self.folder = folder
        self.strict = strict  # fail stale recordings instead of answering with a warning

    async def complete(self, request: ModelRequest) -> ModelReply:
        path = recording_path(self.folder, request)
        document = read_recording(path, request)
        stale = is_stale(document, request)
        if stale and self.strict:
            raise RecordingStale(
                f"recording {path} was made for another request (prompt version "
                f"{document.get('prompt_version')}, not the current {request.prompt_version}); "
                "record it again with --record"
            )
        return reply_from_body(document["response"], stale=stale)

    async def aclose(self) -> None:
        return None


class RecordingModel:
    """Wraps a model and saves every answered call (around the call journal, so that an answer is
    journaled before its recording is written)."""

    def __init__(self, inner: ChatModel, folder: Path) -> None:
        self.inner = inner
        self.folder = folder

    async def complete(self, request: ModelRequest) -> ModelReply:
        reply = await self.inner.complete(request)
        document = recording_document(request, reply.body)
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        path = recording_path(self.folder, request)
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise RecordingUnwritable(
                f"cannot save the recording {path} ({exc.strerror or exc}); make --record {self.folder} "
                "a writable folder (the answer is kept in the call journal, so it is not paid for again)",
                reply,
            ) from None
        return reply

    async def aclose(self) -> None:
        await self.inner.aclose()
