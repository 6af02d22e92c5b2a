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
    usage_estimated: bool = False  # the endpoint reported no usage: the tokens are estimated
    endpoint_errors: dict[str, int] = field(default_factory=dict)  # retried before it, by kind ("429")


class ChatModel(Protocol):
    async def complete(self, request: ModelRequest) -> ModelReply: ...

    async def aclose(self) -> None: ...


def reply_from_body(body: dict[str, Any], stale: bool = False) -> ModelReply:
    """Read a ChatCompletion body defensively: compatible servers omit fields, and a recording or
    journal file may have been edited by hand. What is missing or of the wrong type is absent."""
    choices = body.get("choices")
    choice = _object(choices[0]) if isinstance(choices, list) and choices else {}
    message = _object(choice.get("message"))
    return ModelReply(
        content=_text(message.get("content")),
        finish_reason=str(choice.get("finish_reason") or "stop"),
        refusal=_text(message.get("refusal")),
        usage=usage_from_body(body),
        body=body,
        stale=stale,
    )


def usage_from_body(body: dict[str, Any]) -> Usage:
    usage = _object(body.get("usage"))
    details = _object(usage.get("prompt_tokens_details"))
    return Usage(
        prompt_tokens=_count(usage.get("prompt_tokens")),
        cached_tokens=_count(details.get("cached_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
    )


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: object) -> int:
    """A token count as reported (an integer, a float, digits); 0 when it is none of them."""
    if not isinstance(value, int | float | str):
        return 0
    try:
        return max(int(value), 0)
    except (ValueError, OverflowError):  # "many", NaN, infinity
        return 0
