"""Client-side pacing shared by every request of a run.

* ``rpm`` / ``tpm``: requests and tokens per minute, spread evenly (a request may start once the
  previous one is 60/rpm seconds old, and once the token window has room for its estimate).
* On a 429 the whole run pauses for the server's Retry-After and slows down: the pace drops to
  70% and recovers by 2% with every success, so a rate limit never turns into a retry storm.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class RateGate:
    def __init__(self, rpm: int | None = None, tpm: int | None = None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.factor = 1.0  # the share of the configured pace in use (adaptive)
        self._next_start = 0.0
        self._paused_until = 0.0
        self._tokens: deque[tuple[float, int]] = deque()
        self._lock = asyncio.Lock()
        self.throttled = 0  # how many 429s slowed the run

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
        """A 429: pause everyone for the server's hint, and slow the pace."""
        self.throttled += 1
        pause = retry_after if retry_after is not None else 1.0
        self._paused_until = max(self._paused_until, time.monotonic() + pause)
        self.factor = max(0.1, self.factor * 0.7)

    def succeeded(self) -> None:
        self.factor = min(1.0, self.factor * 1.02)
