"""The one narrow interface every model implementation offers: answer one request.

Implementations: :class:`~pipeline.model.live.LiveModel` (the openai SDK over HTTP),
:class:`~pipeline.model.replay.ReplayModel` (recordings, no network), and
:class:`~pipeline.model.fake.ScriptedModel` (unit tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.schema import Usage


@dataclass(frozen=True)
class CallKey:
    """Which request this is: the article, the call (`en` or `zh`) and the attempt number."""

    article_id: str
    call: str
    attempt: int

    @property
    def filename(self) -> str:
        return f"{self.call}-{self.attempt}.json"


@dataclass(frozen=True)
class ModelRequest:
    key: CallKey
    body: dict[str, Any]
    prompt_version: str


@dataclass(frozen=True)
class ModelReply:
    content: str | None
    finish_reason: str
    refusal: str | None = None
    usage: Usage = field(default_factory=Usage)
    body: dict[str, Any] = field(default_factory=dict)
    stale: bool = False
    journaled: bool = False  # answered from the call journal: paid for by an earlier run
    batch: bool = False  # answered by the Batch API (half price)


class ChatModel(Protocol):
    async def complete(self, request: ModelRequest) -> ModelReply: ...

    async def aclose(self) -> None: ...


def reply_from_body(body: dict[str, Any], stale: bool = False) -> ModelReply:
    """Read a ChatCompletion body defensively (compatible servers omit fields)."""
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    return ModelReply(
        content=message.get("content"),
        finish_reason=str(choice.get("finish_reason") or "stop"),
        refusal=message.get("refusal"),
        usage=usage_from_body(body),
        body=body,
        stale=stale,
    )


def usage_from_body(body: dict[str, Any]) -> Usage:
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
