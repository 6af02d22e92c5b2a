"""A loopback OpenAI-compatible HTTP server, so tests exercise the real ``openai`` SDK over HTTP.

The server replays recorded chat completions, can be scripted, injects faults on demand,
and emulates the Files and Batch APIs closely enough for ``client.files`` / ``client.batches``::

    with FakeOpenAIServer(Path("fixtures/recordings"), faults=FaultPlan(queue=["429"])) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        ...

Routing of ``POST /v1/chat/completions``: a ``script`` decides the reply when given; otherwise the
recording whose ``request.messages`` is the longest prefix of the incoming messages (role and
content, message by message) answers, with the incoming ``model`` echoed. A re-ask (a recorded
conversation plus extra turns) is therefore answered by the recording it extends.

Run standalone (serves until Ctrl-C, prints its base URL on the first line of stdout)::

    python -m pipeline.testing.server --recordings DIR [--port N] [--fault-rate 0.25 --seed 1]
        [--latency 0.3] [--rpm N]

Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import random
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import collapse_rfc2231_value
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self, TypeAlias, cast, get_args
from urllib.parse import parse_qsl, urlsplit

JSONDict: TypeAlias = dict[str, Any]
Body: TypeAlias = "JSONDict | list[Any] | str | bytes | None"

FaultKind = Literal[
    "429",
    "500",
    "503",
    "drop",
    "malformed",
    "html",
    "length",
    "schema",
    "refusal",
    "content_filter",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

DEFAULT_MODEL = "newsdesk-replay"
CHAT_ENDPOINT = "/v1/chat/completions"
REFUSAL_TEXT = "I can't help with that."
SCHEMA_BREAKING_CONTENT = '{"oops": true}'
DEFAULT_BATCH_STATUSES: tuple[str, ...] = ("validating", "in_progress", "completed")
_BATCH_STEPS = frozenset({"validating", "in_progress", "finalizing", "completed"})
_COUNT_NAMES = ("total", "completed", "failed")
_BATCH_TIMESTAMPS = ("in_progress_at", "finalizing_at", "completed_at", "failed_at")
_MALFORMED_BODY = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"in'
_HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)


# ----------------------------------------------------------------------------- replies


def error_body(
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> JSONDict:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _estimate_tokens(value: Any) -> int:
    return max(1, len(json.dumps(value, ensure_ascii=False)) // 4)


def completion_body(
    request: Mapping[str, Any],
    content: str | None,
    *,
    finish_reason: str = "stop",
    refusal: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    cached_tokens: int = 0,
) -> JSONDict:
    """A ChatCompletion body answering ``request`` (token counts estimated when not given)."""
    prompt = _estimate_tokens(request.get("messages")) if prompt_tokens is None else prompt_tokens
    completion = _estimate_tokens(content) if completion_tokens is None else completion_tokens
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", DEFAULT_MODEL),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        },
    }


@dataclass(frozen=True)
class Reply:
    """One HTTP answer. ``body``: dict/list is sent as JSON, str/bytes as they are."""

    status: int = 200
    body: Body = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False  # close the socket without answering

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        body = error_body(message, error_type=error_type, code=code, param=param)
        return cls(status=status, body=body, headers=dict(headers or {}))

    @classmethod
    def chat(
        cls,
        request: Mapping[str, Any],
        content: str | None,
        *,
        finish_reason: str = "stop",
        refusal: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cached_tokens: int = 0,
    ) -> Reply:
        """A 200 ChatCompletion answering ``request`` (see :func:`completion_body`)."""
        body = completion_body(
            request,
            content,
            finish_reason=finish_reason,
            refusal=refusal,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
        )
        return cls(body=body)

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        if self.body is None:
            return b""
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")

    def json_value(self) -> Any:
        """The body as a JSON value (text for a body that is not JSON)."""
        if isinstance(self.body, bytes):
            return self.body.decode("utf-8", errors="replace")
        return self.body

    def with_header(self, name: str, value: str) -> Reply:
        return dataclasses.replace(self, headers={**self.headers, name: value})


# ----------------------------------------------------------------------------- recordings


class RecordingKey(NamedTuple):
    article_id: str
    call: str
    attempt: int


@dataclass(frozen=True)
class Recording:
    path: Path
    key: RecordingKey
    prompt_version: str
    request_sha256: str
    request: JSONDict
    response: JSONDict

    @property
    def messages(self) -> list[JSONDict]:
        return cast(list[JSONDict], self.request["messages"])


def load_recordings(root: Path) -> list[Recording]:
    """Every recording under ``root`` (recursively, ``*.json``); other files are ignored."""
    paths = [root] if root.is_file() else sorted(root.rglob("*.json"))
    found = (read_recording(path) for path in paths)
    return [recording for recording in found if recording is not None]


def read_recording(path: Path) -> Recording | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not _is_recording(data):
        return None
    key = RecordingKey(data["key"]["article_id"], data["key"]["call"], data["key"]["attempt"])
    return Recording(
        path, key, data["prompt_version"], data["request_sha256"], data["request"], data["response"]
    )


def _is_recording(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    request, response = data.get("request"), data.get("response")
    return (
        _is_key(data.get("key"))
        and isinstance(data.get("prompt_version"), str)
        and isinstance(data.get("request_sha256"), str)
        and isinstance(request, dict)
        and _is_messages(request.get("messages"))
        and isinstance(response, dict)
        and isinstance(response.get("choices"), list)
    )


def _is_key(key: Any) -> bool:
    if not isinstance(key, dict):
        return False
    attempt = key.get("attempt")
    return (
        isinstance(key.get("article_id"), str)
        and isinstance(key.get("call"), str)
        and isinstance(attempt, int)
        and not isinstance(attempt, bool)
    )


def _is_messages(messages: Any) -> bool:
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
    )


def find_recording(recordings: Iterable[Recording], messages: Sequence[Any]) -> Recording | None:
    """The recording whose messages are the longest prefix of ``messages`` (first one on ties)."""
    best: Recording | None = None
    for recording in recordings:
        longer = best is None or len(recording.messages) > len(best.messages)
        if longer and _is_prefix(recording.messages, messages):
            best = recording
    return best


def _is_prefix(recorded: Sequence[JSONDict], incoming: Sequence[Any]) -> bool:
    if len(recorded) > len(incoming):
        return False
    return all(_same_message(mine, theirs) for mine, theirs in zip(recorded, incoming, strict=False))


def _same_message(recorded: JSONDict, incoming: Any) -> bool:
    return (
        isinstance(incoming, dict)
        and recorded.get("role") == incoming.get("role")
        and recorded.get("content") == incoming.get("content")
    )


# ----------------------------------------------------------------------------- faults


def check_fault_kinds(names: Iterable[str | None]) -> list[FaultKind | None]:
    """Validate fault names (``None`` means "no fault"); raises ``ValueError`` on unknown names."""
    unknown = sorted({name for name in names if name is not None and name not in FAULT_KINDS})
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
    return [cast(FaultKind | None, name) for name in names]


@dataclass(eq=False)
class FaultPlan:
    """Which requests fail, and how.

    ``queue`` is applied to the next requests in order (``None`` = answer normally); once it is
    used up, each request fails with probability ``rate``, the kind drawn from ``kinds`` with a
    ``random.Random(seed)``. ``injected`` logs every fault drawn, in order.
    """

    queue: Sequence[FaultKind | None] = ()
    rate: float = 0.0
    seed: int | None = None
    kinds: Sequence[FaultKind] = FAULT_KINDS
    retry_after: str | None = "1"  # the 429's Retry-After header (None: not sent)
    retry_after_ms: int | None = None  # the 429's retry-after-ms header (None: not sent)
    html_status: int = 200
    injected: list[FaultKind] = field(default_factory=list, init=False)
    _pending: deque[FaultKind | None] = field(init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        check_fault_kinds([*self.queue, *self.kinds])
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")
        if self.rate and not self.kinds:
            raise ValueError("a fault rate needs at least one fault kind")
        self._pending = deque(self.queue)
        self._rng = random.Random(self.seed)

    def next_fault(self) -> FaultKind | None:
        with self._lock:
            fault = self._draw()
            if fault is not None:
                self.injected.append(fault)
            return fault

    def _draw(self) -> FaultKind | None:
        if self._pending:
            return self._pending.popleft()
        if self.rate and self._rng.random() < self.rate:
            return self._rng.choice(list(self.kinds))
        return None


def _retry_headers(plan: FaultPlan) -> dict[str, str]:
    headers = {}
    if plan.retry_after is not None:
        headers["retry-after"] = plan.retry_after
    if plan.retry_after_ms is not None:
        headers["retry-after-ms"] = str(plan.retry_after_ms)
    return headers


_FAULT_REPLIES: dict[str, Callable[[FaultPlan], Reply]] = {
    "429": lambda plan: Reply.error(
        429,
        "Rate limit reached for requests. Please try again later.",
        error_type="requests",
        code="rate_limit_exceeded",
        headers=_retry_headers(plan),
    ),
    "500": lambda _: Reply.error(
        500,
        "The server had an error while processing your request. Sorry about that!",
        error_type="server_error",
    ),
    "503": lambda _: Reply.error(
        503,
        "The engine is currently overloaded, please try again later.",
        error_type="server_error",
    ),
    "drop": lambda _: Reply(drop=True),
    "malformed": lambda _: Reply(body=_MALFORMED_BODY),
    "html": lambda plan: Reply(
        status=plan.html_status, body=_HTML_PAGE, content_type="text/html; charset=utf-8"
    ),
}


def fault_reply(fault: FaultKind, plan: FaultPlan) -> Reply | None:
    """The reply replacing the answer, or ``None`` for a fault that alters the answer instead."""
    build = _FAULT_REPLIES.get(fault)
    return None if build is None else build(plan)


def _cut_to_length(choice: JSONDict) -> None:
    content = choice["message"].get("content")
    if isinstance(content, str):
        choice["message"]["content"] = content[: len(content) // 3]
    choice["finish_reason"] = "length"


def _break_schema(choice: JSONDict) -> None:
    choice["message"].update(content=SCHEMA_BREAKING_CONTENT, refusal=None)
    choice["finish_reason"] = "stop"


def _refuse(choice: JSONDict) -> None:
    choice["message"].update(content=None, refusal=REFUSAL_TEXT)
    choice["finish_reason"] = "stop"


def _filter_content(choice: JSONDict) -> None:
    choice["message"].update(content=None, refusal=None)
    choice["finish_reason"] = "content_filter"


_CONTENT_FAULTS: dict[str, Callable[[JSONDict], None]] = {
    "length": _cut_to_length,
    "schema": _break_schema,
    "refusal": _refuse,
    "content_filter": _filter_content,
}


def apply_content_fault(reply: Reply, fault: FaultKind) -> Reply:
    """Alter every choice of a 200 ChatCompletion reply; other replies are returned unchanged."""
    alter = _CONTENT_FAULTS.get(fault)
    body = reply.body
    if alter is None or reply.status != 200 or not isinstance(body, dict):
        return reply
    body = copy.deepcopy(body)
    for choice in body.get("choices") or []:
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            alter(choice)
    return dataclasses.replace(reply, body=body)


# ----------------------------------------------------------------------------- rate limit


@dataclass(frozen=True)
class Counters:
    accepted: int  # chat requests let through by the rpm limiter
    rejected_429: int  # chat requests the rpm limiter answered with 429


class _RateLimiter:
    """A sliding-window request counter; ``limit=None`` only counts."""

    def __init__(self, limit: int | None, window: float, hints: bool = True) -> None:
        self.limit, self.window, self.hints = limit, window, hints
        self.accepted = self.rejected = 0
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self) -> float | None:
        """``None`` when the request may go, else the seconds until a slot frees."""
        with self._lock:
            now = time.monotonic()
            while self._stamps and self._stamps[0] <= now - self.window:
                self._stamps.popleft()
            if self.limit is not None and len(self._stamps) >= self.limit:
                self.rejected += 1
                return self._stamps[0] + self.window - now
            if self.limit is not None:
                self._stamps.append(now)
            self.accepted += 1
            return None

    def reply(self, wait: float) -> Reply:
        hints = {"retry-after": str(max(1, math.ceil(wait))),
                 "retry-after-ms": str(max(1, math.ceil(wait * 1000)))}  # fmt: skip
        headers = {
            **(hints if self.hints else {}),  # some providers send no Retry-After
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{wait:.3f}s",
        }
        message = (
            f"Rate limit reached for requests per min (RPM): Limit {self.limit}, "
            f"Used {self.limit}, Requested 1. Please try again in {wait:.3f}s."
        )
        return Reply.error(429, message, error_type="requests", code="rate_limit_exceeded", headers=headers)


# ----------------------------------------------------------------------------- files, batches


class FormPart(NamedTuple):
    filename: str | None
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _header_param(header: str, value: str, param: str) -> str | None:
    message = Message()
    message[header] = value
    found = message.get_param(param, header=header)
    return None if found is None else collapse_rfc2231_value(found)


def parse_multipart(content_type: str, data: bytes) -> dict[str, FormPart]:
    """The fields of a ``multipart/form-data`` body, by name."""
    boundary = _header_param("content-type", content_type, "boundary")
    if not boundary:
        return {}
    parts: dict[str, FormPart] = {}
    for chunk in data.split(b"--" + boundary.encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break
        named = _parse_part(chunk)
        if named is not None:
            parts[named[0]] = named[1]
    return parts


def _parse_part(chunk: bytes) -> tuple[str, FormPart] | None:
    head, separator, payload = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
    if not separator:
        return None
    headers = BytesHeaderParser().parsebytes(head + b"\r\n")
    name = headers.get_param("name", header="content-disposition")
    if name is None:
        return None
    filename = headers.get_filename()
    return collapse_rfc2231_value(name), FormPart(filename, payload.removesuffix(b"\r\n"))


@dataclass
class _StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_json(self) -> JSONDict:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class _Batch:
    id: str
    request: JSONDict  # the create body: input_file_id, endpoint, completion_window, metadata
    lines: list[JSONDict]
    steps: deque[str]  # statuses still to come, one per retrieve
    errors: JSONDict | None
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "validating"
    timestamps: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNT_NAMES, 0))
    usage: JSONDict | None = None

    def to_json(self) -> JSONDict:
        stamps = {name: self.timestamps.get(name) for name in _BATCH_TIMESTAMPS}
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.request["endpoint"],
            "errors": self.errors,
            "input_file_id": self.request["input_file_id"],
            "completion_window": self.request["completion_window"],
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 86400,
            **stamps,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": dict(self.counts),
            "usage": self.usage,
            "metadata": self.request.get("metadata"),
        }


def _line_problem(line: Any, endpoint: str, seen: set[str]) -> str | None:
    if not isinstance(line, dict):
        return "each line must be a JSON object"
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "missing 'custom_id'"
    if custom_id in seen:
        return f"duplicate custom_id {custom_id!r}"
    if line.get("method") != "POST" or line.get("url") != endpoint:
        return f"'method' must be POST and 'url' must be {endpoint!r}"
    if not isinstance(line.get("body"), dict):
        return "'body' must be a JSON object"
    seen.add(custom_id)
    return None


def parse_batch_input(data: bytes, endpoint: str) -> tuple[list[JSONDict], list[JSONDict]]:
    """The input file's request lines, and its validation errors (Batch ``errors.data`` items)."""
    lines: list[JSONDict] = []
    errors: list[JSONDict] = []
    seen: set[str] = set()
    for number, text in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        problem = _line_problem(line, endpoint, seen)
        if problem is None:
            lines.append(line)
        else:
            error = {"code": "invalid_request", "message": problem, "param": None, "line": number}
            errors.append(error)
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "The input file is empty.", "line": None})
    return lines, errors


def _batch_usage(bodies: Iterable[Any]) -> JSONDict:
    totals = {"prompt_tokens": 0, "completion_tokens": 0, "cached": 0, "reasoning": 0}
    for body in bodies:
        usage = body.get("usage") if isinstance(body, dict) else None
        if isinstance(usage, dict):
            totals["prompt_tokens"] += usage.get("prompt_tokens") or 0
            totals["completion_tokens"] += usage.get("completion_tokens") or 0
            totals["cached"] += (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            details = usage.get("completion_tokens_details") or {}
            totals["reasoning"] += details.get("reasoning_tokens") or 0
    return {
        "input_tokens": totals["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": totals["cached"]},
        "output_tokens": totals["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": totals["reasoning"]},
        "total_tokens": totals["prompt_tokens"] + totals["completion_tokens"],
    }


def _jsonl(rows: Sequence[JSONDict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def _not_found(kind: str, object_id: str) -> Reply:
    return Reply.error(404, f"No such {kind} object: {object_id}", param="id")


# ----------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # the parsed JSON body, or None
    raw: bytes = field(default=b"", repr=False)
    received_at: float = field(default_factory=time.monotonic)  # for checking waits between retries
    query: dict[str, str] = field(default_factory=dict)  # the query string's parameters


Endpoint: TypeAlias = Callable[[RecordedRequest, "tuple[str, ...]"], Reply]


class FakeOpenAIServer:
    """An OpenAI-compatible server on a loopback port; a context manager (start/stop)."""

    def __init__(
        self,
        recordings: Path | None = None,
        *,
        script: Callable[[JSONDict], Reply] | None = None,
        faults: FaultPlan | None = None,
        latency: float = 0.0,
        api_key: str | None = None,
        rpm_limit: int | None = None,
        known_models: set[str] | None = None,
        rpm_window: float = 60.0,
        rpm_hints: bool = True,
        batch_statuses: Sequence[str] = DEFAULT_BATCH_STATUSES,
        batch_max_requests: int = 50_000,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        _check_batch_statuses(batch_statuses)
        self.recordings = load_recordings(recordings) if recordings is not None else []
        self.script = script
        self.faults = faults
        self.latency = latency
        self.api_key = api_key
        self.known_models = known_models
        self.verbose = verbose
        self.errors: list[BaseException] = []  # exceptions raised while answering (sent as 500)
        self._batch_statuses = tuple(batch_statuses)
        self._batch_max_requests = batch_max_requests  # a bigger batch fails validation, as OpenAI's do
        self._address = (host, port)
        self._limiter = _RateLimiter(rpm_limit, rpm_window, rpm_hints)  # hints: Retry-After on its 429s
        self._requests: list[RecordedRequest] = []
        self._files: dict[str, _StoredFile] = {}
        self._batches: dict[str, _Batch] = {}
        self._ids = 0
        self._lock = threading.RLock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._route_table()

    # -- lifecycle

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        self._httpd = _HTTPServer(self._address, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests look at

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self._address[0]}:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def counters(self) -> Counters:
        return Counters(self._limiter.accepted, self._limiter.rejected)

    # -- dispatch

    def handle(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> Reply:
        """Answer one HTTP request (``headers`` with lower-cased names)."""
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        request = RecordedRequest(method, parts.path, dict(headers), _json_or_none(raw), raw, query=query)
        with self._lock:
            self._requests.append(request)
        reply = self._guarded_route(request)
        return reply.with_header("x-request-id", self._next_id("req"))

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Endpoint]]:
        routes: list[tuple[str, str, Endpoint]] = [
            ("POST", CHAT_ENDPOINT, self._chat_endpoint),
            ("GET", "/v1/models", self._models_endpoint),
            ("POST", "/v1/files", self._upload_endpoint),
            ("GET", "/v1/files/([^/]+)", self._file_endpoint),
            ("GET", "/v1/files/([^/]+)/content", self._file_content_endpoint),
            ("POST", "/v1/batches", self._create_batch_endpoint),
            ("GET", "/v1/batches", self._list_batches_endpoint),
            ("GET", "/v1/batches/([^/]+)", self._batch_endpoint),
        ]
        return [(method, re.compile(pattern), endpoint) for method, pattern, endpoint in routes]

    def _guarded_route(self, request: RecordedRequest) -> Reply:
        try:
            return self._route(request)
        except Exception as exc:  # a crash (say, in a script) must still answer
            with self._lock:
                self.errors.append(exc)
            traceback.print_exc(file=sys.stderr)
            return Reply.error(500, f"The fake server failed: {exc!r}", error_type="server_error")

    def _route(self, request: RecordedRequest) -> Reply:
        denied = self._auth_error(request.headers)
        if denied is not None:
            return denied
        for method, pattern, endpoint in self._routes:
            match = pattern.fullmatch(request.path)
            if match is not None and method == request.method:
                return endpoint(request, match.groups())
        return Reply.error(404, f"Invalid URL ({request.method} {request.path})")

    def _auth_error(self, headers: Mapping[str, str]) -> Reply | None:
        if self.api_key is None or headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        given = headers.get("authorization", "").removeprefix("Bearer ").strip()
        message = (
            f"Incorrect API key provided: {given[:3]}***{given[-2:]}."
            if given
            else "You didn't provide an API key."
        )
        return Reply.error(401, message, code="invalid_api_key")

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}_{self._ids:06d}"

    # -- chat completions

    def _chat_endpoint(self, request: RecordedRequest, _groups: tuple[str, ...]) -> Reply:
        wait = self._limiter.admit()
        if wait is not None:
            return self._limiter.reply(wait)
        if self.latency > 0:
            time.sleep(self.latency)
        return self.chat(request.body)

    def chat(self, body: Any) -> Reply:
        """Answer one chat-completions body (the route HTTP requests and batch lines share)."""
        problem = self._chat_problem(body)
        if problem is not None:
            return problem
        fault = self.faults.next_fault() if self.faults is not None else None
        if fault is None:
            return self._answer(body)
        assert self.faults is not None
        replaced = fault_reply(fault, self.faults)
        return replaced if replaced is not None else apply_content_fault(self._answer(body), fault)

    def _chat_problem(self, body: Any) -> Reply | None:
        if not isinstance(body, dict):
            return Reply.error(400, "We could not parse the JSON body of your request.")
        for name, kind in (("model", str), ("messages", list)):
            if not isinstance(body.get(name), kind):
                message = f"Missing required parameter: '{name}'."
                return Reply.error(400, message, param=name, code="missing_required_parameter")
        if body.get("stream"):
            message = "Streaming is not supported by the fake server."
            return Reply.error(400, message, param="stream", code="unsupported_value")
        model = body["model"]
        if self.known_models is not None and model not in self.known_models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            return Reply.error(404, message, code="model_not_found")
        return None

    def _answer(self, body: JSONDict) -> Reply:
        if self.script is not None:
            return self.script(body)
        recording = find_recording(self.recordings, body["messages"])
        if recording is None:
            return self._no_recording(body["messages"])
        response = copy.deepcopy(recording.response)
        response["model"] = body["model"]
        return Reply(body=response)

    def _no_recording(self, messages: Sequence[Any]) -> Reply:
        last = messages[-1] if messages else {}
        content = last.get("content") if isinstance(last, dict) else last
        message = (
            f"No recording found for this conversation: none of the {len(self.recordings)} "
            f"recorded message lists is a prefix of its {len(messages)} messages "
            f"(last message: {str(content)[:80]!r})."
        )
        return Reply.error(400, message, code="recording_not_found", param="messages")

    def _models_endpoint(self, _request: RecordedRequest, _groups: tuple[str, ...]) -> Reply:
        models = sorted(self.known_models) if self.known_models else [DEFAULT_MODEL]
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "newsdesk"} for m in models]
        return Reply(body={"object": "list", "data": data})

    # -- files

    def _upload_endpoint(self, request: RecordedRequest, _groups: tuple[str, ...]) -> Reply:
        form = parse_multipart(request.headers.get("content-type", ""), request.raw)
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or purpose is None:
            message = "Missing required parameters: 'file' and 'purpose' (multipart/form-data)."
            return Reply.error(400, message, code="missing_required_parameter")
        stored = self._store_file(upload.filename or "upload", purpose.text, upload.data)
        return Reply(body=stored.to_json())

    def _store_file(self, filename: str, purpose: str, data: bytes) -> _StoredFile:
        stored = _StoredFile(self._next_id("file"), filename, purpose, data, int(time.time()))
        with self._lock:
            self._files[stored.id] = stored
        return stored

    def _file_endpoint(self, _request: RecordedRequest, groups: tuple[str, ...]) -> Reply:
        stored = self._files.get(groups[0])
        return _not_found("File", groups[0]) if stored is None else Reply(body=stored.to_json())

    def _file_content_endpoint(self, _request: RecordedRequest, groups: tuple[str, ...]) -> Reply:
        stored = self._files.get(groups[0])
        if stored is None:
            return _not_found("File", groups[0])
        return Reply(body=stored.data, content_type="application/octet-stream")

    # -- batches

    def _create_batch_endpoint(self, request: RecordedRequest, _groups: tuple[str, ...]) -> Reply:
        problem = self._batch_problem(request.body)
        if problem is not None:
            return problem
        body = cast(JSONDict, request.body)
        data = self._files[body["input_file_id"]].data
        lines, errors = parse_batch_input(data, body["endpoint"])
        most = self._batch_max_requests
        if len(lines) > most:
            message = f"The input file has {len(lines)} requests; a batch takes at most {most}."
            errors.append({"code": "too_many_requests", "message": message, "line": None})
        steps = ("validating", "failed") if errors else self._batch_statuses
        batch_errors = {"object": "list", "data": errors} if errors else None
        batch = _Batch(self._next_id("batch"), body, lines, deque(steps), batch_errors)
        with self._lock:
            self._batches[batch.id] = batch
            self._advance(batch)
            return Reply(body=batch.to_json())

    def _batch_problem(self, body: Any) -> Reply | None:
        if not isinstance(body, dict):
            return Reply.error(400, "We could not parse the JSON body of your request.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                message = f"Missing required parameter: '{name}'."
                return Reply.error(400, message, param=name, code="missing_required_parameter")
        if body["endpoint"] != CHAT_ENDPOINT:
            message = f"Only {CHAT_ENDPOINT} is emulated, not {body['endpoint']!r}."
            return Reply.error(400, message, param="endpoint", code="invalid_value")
        if body["completion_window"] != "24h":
            message = "completion_window must be '24h'."
            return Reply.error(400, message, param="completion_window", code="invalid_value")
        stored = self._files.get(body["input_file_id"])
        if stored is None:
            return _not_found("File", body["input_file_id"])
        if stored.purpose != "batch":
            message = f"File {stored.id} has purpose {stored.purpose!r}, not 'batch'."
            return Reply.error(400, message, param="input_file_id", code="invalid_value")
        return None

    def _list_batches_endpoint(self, request: RecordedRequest, _groups: tuple[str, ...]) -> Reply:
        """The batches, newest first, a page of `limit` after the batch `after` (a listing does not
        move a batch on)."""
        limit = int(request.query.get("limit", "20"))
        with self._lock:
            newest_first = [batch.to_json() for batch in reversed(self._batches.values())]
        ids = [batch["id"] for batch in newest_first]
        after = request.query.get("after")
        start = ids.index(after) + 1 if after in ids else 0
        data = newest_first[start : start + limit]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        more = start + limit < len(newest_first)
        return Reply(
            body={"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}
        )

    def _batch_endpoint(self, _request: RecordedRequest, groups: tuple[str, ...]) -> Reply:
        with self._lock:
            batch = self._batches.get(groups[0])
            if batch is None:
                return _not_found("Batch", groups[0])
            self._advance(batch)
            return Reply(body=batch.to_json())

    def _advance(self, batch: _Batch) -> None:
        if not batch.steps:
            return
        batch.status = batch.steps.popleft()
        batch.timestamps[f"{batch.status}_at"] = int(time.time())
        if batch.status == "completed":
            self._run_batch(batch)

    def _run_batch(self, batch: _Batch) -> None:
        results = [self._run_line(line) for line in batch.lines]
        done = [row for ok, row in results if ok]
        failed = [row for ok, row in results if not ok]
        if done:
            name = f"{batch.id}_output.jsonl"
            batch.output_file_id = self._store_file(name, "batch_output", _jsonl(done)).id
        if failed:
            name = f"{batch.id}_error.jsonl"
            batch.error_file_id = self._store_file(name, "batch_output", _jsonl(failed)).id
        batch.counts = {"total": len(results), "completed": len(done), "failed": len(failed)}
        batch.usage = _batch_usage(row["response"]["body"] for row in done)

    def _run_line(self, line: JSONDict) -> tuple[bool, JSONDict]:
        reply = self.chat(line["body"])
        head = {"id": self._next_id("batch_req"), "custom_id": line["custom_id"]}
        if reply.drop:
            error = {"code": "server_error", "message": "The connection dropped mid-request."}
            return False, {**head, "response": None, "error": error}
        response = {
            "status_code": reply.status,
            "request_id": self._next_id("req"),
            "body": reply.json_value(),
        }
        return reply.status == 200, {**head, "response": response, "error": None}


def _check_batch_statuses(statuses: Sequence[str]) -> None:
    if not statuses or statuses[-1] != "completed" or not set(statuses) <= _BATCH_STEPS:
        raise ValueError(f"batch_statuses must end with 'completed', within {sorted(_BATCH_STEPS)}")


def _json_or_none(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


# ----------------------------------------------------------------------------- HTTP plumbing

_Request: TypeAlias = "socket.socket | tuple[bytes, socket.socket]"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: FakeOpenAIServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: _Request, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: _Request) -> None:
        with self._connections_lock:
            self._connections.discard(cast(socket.socket, request))
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Unblock handler threads waiting on kept-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: _Request, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client went away
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    @property
    def _app(self) -> FakeOpenAIServer:
        return cast(_HTTPServer, self.server).app

    def _serve(self) -> None:
        raw = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self._app.handle(self.command, self.path, headers, raw)
        if reply.drop:
            self.close_connection = True
            return
        self._send(reply)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def _send(self, reply: Reply) -> None:
        data = reply.encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if self._app.verbose:
            super().log_message(format, *args)


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.testing.server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--recordings", type=Path, required=True, help="directory of recordings")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of failed requests")
    parser.add_argument("--fault-kinds", default=",".join(FAULT_KINDS), help="comma-separated")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault draws")
    parser.add_argument("--retry-after", default="1", help="Retry-After of injected 429s")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat request")
    parser.add_argument("--rpm", type=int, default=None, help="requests-per-minute cap")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument("--model", action="append", default=None, help="a known model (repeat)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def _cli_faults(args: argparse.Namespace) -> FaultPlan | None:
    if not args.fault_rate:
        return None
    kinds = [kind.strip() for kind in args.fault_kinds.split(",") if kind.strip()]
    checked = [kind for kind in check_fault_kinds(kinds) if kind is not None]
    return FaultPlan(rate=args.fault_rate, seed=args.seed, kinds=checked, retry_after=args.retry_after)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = _cli_faults(args)
    except ValueError as exc:
        parser.error(str(exc))
    server = FakeOpenAIServer(
        args.recordings,
        faults=faults,
        latency=args.latency,
        api_key=args.api_key,
        rpm_limit=args.rpm,
        known_models=set(args.model) if args.model else None,
        host=args.host,
        port=args.port,
        verbose=args.verbose,
    )
    with server:
        print(server.base_url, flush=True)
        print(f"{len(server.recordings)} recordings; Ctrl-C stops", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
