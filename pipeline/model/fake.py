"""A scripted model for unit tests: each request is answered by a function you give it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pipeline.model.base import ModelReply, ModelRequest
from pipeline.schema import Usage

Script = Callable[[ModelRequest], "ModelReply | BaseException"]


def text_reply(content: str | dict[str, Any], finish_reason: str = "stop", **extra: Any) -> ModelReply:
    """A reply carrying `content` (a dict is serialised to JSON)."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    usage = Usage(prompt_tokens=1000, completion_tokens=max(1, len(text) // 4))
    body = {"choices": [{"index": 0, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": text}}]}  # fmt: skip
    return ModelReply(content=text, finish_reason=finish_reason, usage=usage, body=body, **extra)


class ScriptedModel:
    """Calls `script(request)` for every request and keeps the requests for assertions."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        outcome = self.script(request)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        return None
