"""Local overhead: replay N articles through the whole pipeline; milliseconds per article and peak memory.

    python bench/overhead.py            # 1,000 and 5,000 articles
    python bench/overhead.py 200 1000   # other sizes

Each size runs in its own process. Runs of 50 articles or more check answers in worker processes
(one per CPU), so memory and CPU are measured over the whole process tree: a sampler reads
/proc every 20 ms and keeps the peak of the summed resident memory and each process's CPU time.
Target: <= 10 ms per article, memory flat in the number of articles.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

SAMPLER = """
import os, threading
from pathlib import Path
PAGE, TICK = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")

def tree(root):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append((int(stat.parent.name), fields))
    found, todo = [], [root]
    while todo:
        for pid, fields in children.get(todo.pop(), []):
            found.append((pid, fields)); todo.append(pid)
    return found

class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak_rss, self.cpu, self.stop = 0, {}, threading.Event()
    def run(self):
        me = os.getpid()
        while not self.stop.wait(0.02):
            own = int(Path("/proc/self/statm").read_text().split()[1]) * PAGE
            rss = own
            for pid, fields in tree(me):
                rss += int(fields[21]) * PAGE
                self.cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK
            self.peak_rss = max(self.peak_rss, rss)
"""


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
from pipeline.workers import check_processes
{SAMPLER}
work = Path({tempfile.mkdtemp(prefix="newsdesk-bench-")!r})
write_corpus(work / "in", {count}, work / "rec")
base_rss = int(Path("/proc/self/statm").read_text().split()[1]) * PAGE
settings = Settings(concurrency=16)
runner = Runner(settings, ReplayModel(work / "rec"), PromptBook(settings), PlainProgress(io.StringIO()))
sampler = Sampler(); sampler.start()
cpu0, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
report = asyncio.run(runner.run([work / "in"], RunOptions(out=work / "out", mode="replay")))
elapsed = time.perf_counter() - started
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
sampler.stop.set(); sampler.join()
assert report.counts["ok"] == {count}, report.counts
cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime) + sum(sampler.cpu.values())
print(json.dumps({{"articles": {count}, "seconds": elapsed, "ms_per_article": 1000 * elapsed / {count},
                   "cpu_ms_per_article": 1000 * cpu / {count},
                   "processes": check_processes(settings.check_processes, {count}),
                   "peak_rss_mb": sampler.peak_rss / 2**20, "main_growth_mb": (resource.getrusage(
                       resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss) / 2**20}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 5000]
    print(f"{'articles':>9} {'seconds':>8} {'ms/article':>11} {'CPU ms/article':>15} {'check procs':>12} "
          f"{'peak RSS MB (all)':>18} {'main growth MB':>15}")  # fmt: skip
    for count in sizes:
        r = measure(count)
        print(f"{r['articles']:>9.0f} {r['seconds']:>8.2f} {r['ms_per_article']:>11.2f} "
              f"{r['cpu_ms_per_article']:>15.2f} {r['processes']:>12.0f} {r['peak_rss_mb']:>18.1f} "
              f"{r['main_growth_mb']:>15.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
