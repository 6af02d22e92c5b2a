"""Rate-limit use: the loopback server caps requests per window; newsdesk runs with --rpm at the cap.

    python bench/ratelimit.py              # cap 300 requests/minute, measured over a 10 s window
    python bench/ratelimit.py 600 120      # cap 600/min, 120 articles
    python bench/ratelimit.py --unpaced    # no --rpm, and 429s without Retry-After: no retry storm

Prints the achieved request rate as a share of the cap and the share of calls answered 429.
Target: >= 0.9 of the cap with < 3% answered 429 (with --rpm at the cap).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import fixture_script, timed_live_run, write_corpus

from pipeline.testing.server import FakeOpenAIServer

WINDOW_S = 10.0  # the server's sliding window; the cap per window is rpm * WINDOW_S / 60


async def run(rpm: int, count: int, unpaced: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="newsdesk-bench-"))
    write_corpus(work / "in", count)
    per_window = int(rpm * WINDOW_S / 60)
    limited = FakeOpenAIServer(script=fixture_script(), rpm_limit=per_window, rpm_window=WINDOW_S,
                               rpm_hints=not unpaced)  # fmt: skip
    with limited as server:
        elapsed, report = await timed_live_run(
            server.base_url, work / "in", work / "out", concurrency=16, rpm=None if unpaced else rpm
        )
        accepted, rejected = server.counters.accepted, server.counters.rejected_429
    achieved = accepted / elapsed * 60
    total = accepted + rejected
    ok = report.counts.get("ok")
    how = "newsdesk without --rpm, 429s without Retry-After" if unpaced else f"newsdesk --rpm {rpm}"
    print(f"cap {rpm}/min ({per_window} per {WINDOW_S:g}s window), {how}, {count} articles, ok={ok}")
    print(f"achieved {achieved:.0f}/min = {achieved / rpm:.2f} of the cap over {elapsed:.1f}s; "
          f"429s: {rejected} of {total} calls ({100 * rejected / max(total, 1):.1f}%)")  # fmt: skip


def main() -> None:
    unpaced = "--unpaced" in sys.argv
    args = [arg for arg in sys.argv[1:] if arg != "--unpaced"]
    rpm = int(args[0]) if args else 300
    count = int(args[1]) if len(args) > 1 else 100
    asyncio.run(run(rpm, count, unpaced))


if __name__ == "__main__":
    main()
