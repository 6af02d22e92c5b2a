"""Throughput against the loopback server: N articles, server latency L, --concurrency C.

    python bench/throughput.py                 # 200 articles, L = 0.3 s, C = 16
    python bench/throughput.py 400 0.5 32

Prints the wall time, the ideal time (calls x L / C) and their ratio (ideal / measured; 1.0 is
ideal). newsdesk sends an article's two calls at once, so C articles put up to 2C requests in
flight and the ratio can exceed 1. Target: >= 0.9 at C = 16, L = 300 ms, 200 articles.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import fixture_script, timed_live_run, write_corpus

from pipeline.testing.server import FakeOpenAIServer


async def run(count: int, latency: float, concurrency: int) -> tuple[float, int, dict[str, int]]:
    work = Path(tempfile.mkdtemp(prefix="newsdesk-bench-"))
    write_corpus(work / "in", count)
    with FakeOpenAIServer(script=fixture_script(), latency=latency) as server:
        elapsed, report = await timed_live_run(
            server.base_url, work / "in", work / "out", concurrency=concurrency
        )
        calls = sum(1 for r in server.requests if r.path.endswith("/chat/completions"))
    return elapsed, calls, report.counts


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.3
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    elapsed, calls, counts = asyncio.run(run(count, latency, concurrency))
    ideal = calls * latency / concurrency
    print(
        f"articles={count} latency={latency}s concurrency={concurrency} calls={calls} ok={counts.get('ok')}"
    )
    print(f"measured {elapsed:.2f}s, ideal {ideal:.2f}s, ratio ideal/measured {ideal / elapsed:.2f}")


if __name__ == "__main__":
    main()
