"""Client-side pacing shared by every request of a run.

* ``rpm`` / ``tpm``: requests and tokens per minute, spread evenly (a request may start once the
  previous one is 60/rpm seconds old, and once the token window has room for its estimate).
* On a 429 the whole run pauses for the server's Retry-After (without one: 1 s, doubling with
  every 429 in a row, up to a minute) and slows down: the pace drops to 70% and recovers by 2%
  with every success, so a rate limit never turns into a retry storm. Without --rpm, a 429
  without Retry-After starts a pace at 70% of the rate of the last minute's requests (the
  server's limit, as met), once there are a few to tell it by.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

UNHINTED_PAUSE_S = 1.0  # the pause after a 429 without Retry-After, doubling with each in a row
MAX_UNHINTED_PAUSE_S = 60.0


class RateGate:
    def __init__(self, rpm: int | None = None, tpm: int | None = None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.factor = 1.0  # the share of the configured pace in use (adaptive)
        self._next_start = 0.0
        self._paused_until = 0.0
        self._tokens: deque[tuple[float, int]] = deque()
        self._starts: deque[float] = deque()  # request starts of the last minute
        self._first_start = 0.0
        self._lock = asyncio.Lock()
        self.throttled = 0  # how many 429s slowed the run
        self._paused_from = 0.0  # when the latest pause began (it lasts until _paused_until)
        self._paused_before = 0.0  # seconds of the pauses before it
        self._in_a_row = 0  # 429s since the last success

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a request of `tokens` (estimated) may start."""
        async with self._lock:
            while True:
                wait = self._wait_needed(time.monotonic(), tokens)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            now = time.monotonic()
            if self.rpm:
                self._next_start = max(now, self._next_start) + 60.0 / (self.rpm * self.factor)
            if self.tpm and tokens:
                self._tokens.append((now, tokens))
            if not self._starts and self._first_start == 0.0:
                self._first_start = now
            self._starts.append(now)
            while self._starts and now - self._starts[0] >= 60.0:
                self._starts.popleft()

    def _wait_needed(self, now: float, tokens: int) -> float:
        wait = max(0.0, self._paused_until - now)
        if self.rpm:
            wait = max(wait, self._next_start - now)
        if self.tpm and tokens:
            while self._tokens and now - self._tokens[0][0] >= 60.0:
                self._tokens.popleft()
            budget = self.tpm * self.factor
            used = sum(n for _, n in self._tokens)
            if used + tokens > budget and self._tokens:
                wait = max(wait, 60.0 - (now - self._tokens[0][0]))
        return wait

    def throttle(self, retry_after: float | None) -> None:
        """A 429: pause everyone for the server's hint (or a pause doubling with each 429 in a
        row), and slow the pace; without --rpm and without a hint, pace the run from here on. The
        429s of requests sent before the pause began count once: they are the same excess."""
        self.throttled += 1
        now = time.monotonic()
        if now >= self._paused_until:
            self._in_a_row += 1
            if self.rpm is None and retry_after is None and len(self._starts) >= 5:
                # no wait to go by, and enough requests to tell the rate the server refused
                self.rpm, self.factor = self._recent_rpm(), 1.0  # from here on, at most that rate
            self.factor = max(0.1, self.factor * 0.7)
        unhinted = min(MAX_UNHINTED_PAUSE_S, UNHINTED_PAUSE_S * 2.0 ** (self._in_a_row - 1))
        pause = retry_after if retry_after is not None else unhinted
        if now >= self._paused_until:  # a new pause: the one before is over
            self._paused_before += self._paused_until - self._paused_from
            self._paused_from = now
        self._paused_until = max(self._paused_until, now + pause)

    def paused_s(self) -> float:
        """How long the run has been paused for 429s so far (overlapping pauses count once)."""
        current = max(0.0, min(time.monotonic(), self._paused_until) - self._paused_from)
        return self._paused_before + current

    def _recent_rpm(self) -> int:
        """Requests per minute over the last minute (or since the first request, if sooner, but over
        at least ten seconds: the burst of requests a run starts with is no steady rate)."""
        span = min(60.0, max(10.0, time.monotonic() - self._first_start))  # not a first burst's rate
        return max(1, round(len(self._starts) * 60.0 / span))

    def succeeded(self) -> None:
        self._in_a_row = 0
        self.factor = min(1.0, self.factor * 1.02)
