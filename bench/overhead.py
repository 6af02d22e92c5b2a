"""Local overhead: replay N articles through the whole pipeline; milliseconds per article and peak memory.

    python bench/overhead.py            # 1,000 and 5,000 articles
    python bench/overhead.py 200 1000   # other sizes

Each size runs in its own process, so the peak resident memory (ru_maxrss) is that size's own.
Target: <= 10 ms per article, memory flat in the number of articles.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(count: int) -> dict[str, float]:
    code = f"""
import asyncio, io, json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {str(HERE)!r})
from corpus import write_corpus
from pipeline.config import Settings
from pipeline.console import PlainProgress
from pipeline.model.replay import ReplayModel
from pipeline.prompts import PromptBook
from pipeline.runner import Runner, RunOptions
work = Path({tempfile.mkdtemp(prefix="newsdesk-bench-")!r})
write_corpus(work / "in", {count}, work / "rec")
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
settings = Settings(concurrency=16)
runner = Runner(settings, ReplayModel(work / "rec"), PromptBook(settings), PlainProgress(io.StringIO()))
started = time.perf_counter()
report = asyncio.run(runner.run([work / "in"], RunOptions(out=work / "out", mode="replay")))
elapsed = time.perf_counter() - started
assert report.counts["ok"] == {count}, report.counts
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"articles": {count}, "seconds": elapsed, "ms_per_article": 1000 * elapsed / {count},
                   "peak_rss_mb": peak / 1024, "rss_growth_mb": (peak - base_rss) / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 5000]
    print(f"{'articles':>9} {'seconds':>8} {'ms/article':>11} {'peak RSS MB':>12} {'RSS growth MB':>14}")
    for count in sizes:
        r = measure(count)
        print(f"{r['articles']:>9.0f} {r['seconds']:>8.2f} {r['ms_per_article']:>11.2f} "
              f"{r['peak_rss_mb']:>12.1f} {r['rss_growth_mb']:>14.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
