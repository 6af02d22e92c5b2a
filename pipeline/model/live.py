"""The live model: the official openai SDK against any OpenAI-compatible endpoint.

The SDK's own retries are off (``max_retries=0``); tenacity is the one retry layer. It retries
429, 408, 409, 5xx, timeouts, connection errors and unreadable bodies, honouring
``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date; up to two minutes), else exponential
backoff with jitter.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential_jitter,
)

from pipeline.config import Settings
from pipeline.errors import ConfigError, ModelUnavailable
from pipeline.ingest.article import estimate_tokens
from pipeline.model.base import ModelReply, ModelRequest, reply_from_body
from pipeline.model.ratelimit import RateGate
from pipeline.redact import Redactor
from pipeline.schema import Usage

MAX_RETRY_AFTER_S = 120.0
RATE_LIMIT_PATIENCE_S = 600.0  # how long one request keeps coming back after 429s
_backoff = wait_exponential_jitter(multiplier=0.5, max=20, jitter=0.5)


class MalformedResponse(Exception):
    """The endpoint answered 2xx with a body that is not a chat completion."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APIConnectionError, MalformedResponse)):
        return True
    if not isinstance(exc, openai.APIStatusError):
        return False
    if exc.response.headers.get("x-should-retry") == "false" or _out_of_quota(exc):
        return False
    return exc.status_code in (408, 409, 429) or exc.status_code >= 500


def _out_of_quota(exc: openai.APIStatusError) -> bool:
    """A 429 that no wait cures: the account has no credit left (OpenAI's insufficient_quota)."""
    return exc.status_code == 429 and getattr(exc, "code", None) == "insufficient_quota"


class _Patience:
    """When to stop retrying one request: after `attempts` failures, not counting 429s. A 429 says
    to come back later: the request comes back, paced, for RATE_LIMIT_PATIENCE_S from its first
    429 (time spent queued before it does not count; once the time is up it gives up at its next
    turn, without asking again)."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self.failures = 0
        self.first_429: float | None = None
        self.last_429: openai.RateLimitError | None = None
        self.errors: Counter[str] = Counter()  # what each failed attempt met, by kind

    def exhausted(self) -> bool:
        return self.first_429 is not None and time.monotonic() - self.first_429 >= RATE_LIMIT_PATIENCE_S

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not self.last_429:  # (the same 429 again: its time ran out while it queued, unasked)
            self.errors[error_kind(exc)] += 1
        if isinstance(exc, openai.RateLimitError):
            if self.first_429 is None:
                self.first_429 = time.monotonic()
            self.last_429 = exc
            return self.exhausted()
        self.failures += 1
        return self.failures >= self.attempts


def error_kind(exc: BaseException | None) -> str:
    """What a failed attempt met, as the report and the log count endpoint errors: "429", "503",
    "timeout", "connection", "malformed reply"."""
    if isinstance(exc, openai.APIStatusError):
        return str(exc.status_code)
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, MalformedResponse):
        return "malformed reply"
    return type(exc).__name__


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's requested wait, from `retry-after-ms` or `retry-after`, if sane."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            seconds = _seconds_until(value) if scale == 1.0 else math.nan
        if 0 <= seconds <= MAX_RETRY_AFTER_S:
            return seconds
    return None


def _seconds_until(http_date: str) -> float:
    """The wait a Retry-After given as an HTTP date asks for ("Wed, 21 Oct 2026 07:28:00 GMT");
    NaN when it is no date."""
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return math.nan
    if when.tzinfo is None:  # RFC 9110 dates are in GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _estimated_usage(body: dict[str, Any], reply: ModelReply) -> Usage:
    """The tokens of a call whose reply reports none, estimated from the text (so that costs and
    --budget-usd still count it)."""
    prompt = estimate_tokens(json.dumps(body.get("messages", []), ensure_ascii=False))
    return Usage(prompt_tokens=prompt, completion_tokens=estimate_tokens(reply.content or ""))


def wait_for(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    hinted = retry_after_seconds(exc)
    return hinted if hinted is not None else _backoff(state)


def ensure_allowed(base_url: str | None) -> None:
    """With NEWSDESK_OFFLINE=1 (set by the test suite) only loopback endpoints may be called."""
    if os.environ.get("NEWSDESK_OFFLINE") != "1":
        return
    host = urlsplit(base_url or "https://api.openai.com/v1").hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"NEWSDESK_OFFLINE=1 forbids calling {host or 'the default endpoint'}")


class LiveModel:
    """One AsyncOpenAI client per process, pool sized to the concurrency, explicit timeouts."""

    def __init__(self, settings: Settings, api_key: str, redactor: Redactor | None = None) -> None:
        ensure_allowed(settings.base_url)
        self.settings = settings
        self.gate = RateGate(settings.rpm, settings.tpm)
        self.redactor = redactor or Redactor([api_key])
        pool = max(8, settings.concurrency * 2)
        timeout = httpx2.Timeout(settings.timeout_s, connect=settings.connect_timeout_s, pool=30.0)
        self.client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=settings.base_url,
            max_retries=0,
            timeout=timeout,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=pool, max_keepalive_connections=pool),
                timeout=timeout,
            ),
        )

    async def complete(self, request: ModelRequest) -> ModelReply:
        patience = _Patience(self.settings.max_retries + 1)
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_retryable),
            wait=wait_for,
            stop=patience,
            reraise=True,
        )
        try:
            body: dict[str, Any] = await retrying(self._paced_post, request.body, patience)
        except (openai.APIStatusError, openai.APIConnectionError, MalformedResponse) as exc:
            if not is_retryable(exc):  # counted only when it was retried (or gave up the retries)
                patience.errors[error_kind(exc)] += 1
            raise self._unavailable(exc, patience.errors) from None
        reply = reply_from_body(self.redactor.scrub_json(body))
        reply = replace(reply, endpoint_errors=dict(patience.errors))
        if not isinstance(body.get("usage"), dict):  # some compatible servers leave it out
            return replace(reply, usage=_estimated_usage(request.body, reply), usage_estimated=True)
        return reply

    def rate_limit_pause_s(self) -> float:
        """How long the endpoint's 429s have paused every request of the run so far."""
        return self.gate.paused_s()

    def _unavailable(self, exc: Exception, errors: Counter[str]) -> ModelUnavailable:
        """The error of a call that failed for good, with what every attempt met."""
        if isinstance(exc, openai.APIStatusError):
            fatal = exc.status_code in (401, 403, 404) or _out_of_quota(exc) or is_retryable(exc)
            return ModelUnavailable(self._status_message(exc), fatal=fatal, endpoint_errors=errors)
        if isinstance(exc, openai.APIConnectionError):
            return ModelUnavailable(self._connection_message(exc), fatal=True, endpoint_errors=errors)
        message = f"the endpoint's reply is not a chat completion ({exc}); check --base-url"
        return ModelUnavailable(self.redactor(message), fatal=True, endpoint_errors=errors)

    async def _paced_post(self, body: dict[str, Any], patience: _Patience) -> dict[str, Any]:
        await self.gate.acquire(_token_estimate(body))
        if patience.exhausted() and patience.last_429 is not None:  # its time ran out while it queued
            raise patience.last_429
        try:
            data = await self._post(body)
        except openai.RateLimitError as exc:
            self.gate.throttle(retry_after_seconds(exc))
            raise
        self.gate.succeeded()
        return data

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = await self.client.chat.completions.with_raw_response.create(**body)
        text = raw.http_response.text
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise MalformedResponse(f"not JSON (starts {self.redactor(text)[:60]!r})") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise MalformedResponse("no choices in the body")
        return data

    def _status_message(self, exc: openai.APIStatusError) -> str:
        where = self.settings.base_url or "the OpenAI API"
        if exc.status_code == 401:
            return (f"{where} rejected the API key (401); set ${self.settings.api_key_env} "
                    "to a valid key")  # fmt: skip
        if _out_of_quota(exc):
            return f"{where} answered 429 insufficient_quota: the account has no credit left; add credit"
        if exc.status_code == 403:
            return f"{where} refused access (403); check the key's permissions for this model"
        if exc.status_code == 404:
            return (f"{where} answered 404: model {self.settings.model!r} or the endpoint was not found; "
                    "check --model and --base-url")  # fmt: skip
        detail = self.redactor(_error_detail(exc))
        return f"{where} answered HTTP {exc.status_code}: {detail}"

    def _connection_message(self, exc: openai.APIConnectionError) -> str:
        where = self.settings.base_url or "the OpenAI API"
        kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "could not be reached"
        return (
            f"{where} {kind} after {self.settings.max_retries + 1} attempts; check --base-url and the network"
        )

    async def aclose(self) -> None:
        await self.client.close()


def _token_estimate(body: dict[str, Any]) -> int:
    """What a request may count against a tokens-per-minute limit: its prompt and a typical reply."""
    prompt = sum(estimate_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return prompt + min(int(limit), 2000)


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:300]
    return exc.message[:300]
