"""Local overhead: replay N articles through the whole pipeline; milliseconds per article and peak memory.

    python bench/overhead.py              # 1,000 and 5,000 articles, three runs of each
    python bench/overhead.py 200 1000     # other sizes
    python bench/overhead.py --repeat 5   # more runs of each size

Each run is printed, then the median of the runs of each size: the machine this runs on is shared,
and the same work takes from 9 to 16 ms of CPU per article depending on its load at the moment
(mostly the system time of creating the articles' files on its disk).

Each size runs in its own process. Runs of 50 articles or more check and write articles in worker
processes (one more than the CPUs), so memory and CPU are measured over the whole process tree. The
sampling is done from this script's process, outside the measured one: every 50 ms it reads /proc
for the run's process and its descendants and keeps the peak of their summed resident memory and
each process's CPU time. (A sampler inside the run would take its share of the run's CPU and
interpreter lock.)
Target: <= 10 ms per article, memory flat in the number of articles.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

PAGE, TICK = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")


class TreeSample:
    """The peak summed memory of a process tree and the last CPU time seen of each process in it."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak_rss = 0
        self.cpu: dict[int, float] = {}

    def take(self) -> None:
        rss, todo = 0, [self.root]
        while todo:
            pid = todo.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except OSError:  # it has just exited
                continue
            rss += int(fields[21]) * PAGE
            self.cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK
            for task in tasks:  # a child is listed under the thread that started it
                try:
                    todo += [int(child) for child in (task / "children").read_text().split()]
                except OSError:
                    continue
        self.peak_rss = max(self.peak_rss, rss)


def measure(count: int) -> dict[str, float]:
    code = f"""
import asyncio, json, os, resource, shutil, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {str(HERE)!r})
from corpus import write_corpus
from pipeline.config import Settings
from pipeline.console import PlainProgress
from pipeline.model.replay import ReplayModel
from pipeline.prompts import PromptBook
from pipeline.runner import Runner, RunOptions
from pipeline.workers import check_processes

if __name__ == "__main__":
    work = Path(tempfile.mkdtemp(prefix="newsdesk-bench-"))
    write_corpus(work / "in", {count}, work / "rec")
    base_kb = int(Path("/proc/self/statm").read_text().split()[1]) * {PAGE} // 1024
    settings = Settings(concurrency=16)
    progress = PlainProgress(open(os.devnull, "w"))  # a line per article, written out as on a terminal
    runner = Runner(settings, ReplayModel(work / "rec"), PromptBook(settings), progress)
    print("start", flush=True)
    try:
        cpu0, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        report = asyncio.run(runner.run([work / "in"], RunOptions(out=work / "out", mode="replay")))
        elapsed = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        shutil.rmtree(work)
    assert report.counts["ok"] == {count}, report.counts
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kb
    print(json.dumps({{"seconds": elapsed, "cpu_s": cpu, "main_growth_mb": growth_kb / 1024,
                      "processes": check_processes(settings.check_processes, {count})}}))
"""
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    if run.stdout.readline().strip() != "start":  # the corpus is written: the run begins
        raise SystemExit(f"the benchmark run failed (exit {run.wait()})")
    sample = TreeSample(run.pid)
    while run.poll() is None:
        sample.take()
        time.sleep(0.05)
    if run.returncode != 0:
        raise SystemExit(f"the benchmark run failed (exit {run.returncode})")
    result: dict[str, float] = json.loads(run.stdout.read().strip().splitlines()[-1])
    helpers_cpu = sum(cpu for pid, cpu in sample.cpu.items() if pid != run.pid)  # workers, forkserver
    result.update(articles=count, ms_per_article=1000 * result["seconds"] / count,
                  cpu_ms_per_article=1000 * (result["cpu_s"] + helpers_cpu) / count,
                  peak_rss_mb=sample.peak_rss / 2**20)  # fmt: skip
    return result


def main() -> None:
    args = sys.argv[1:]
    if any(arg in ("-h", "--help") for arg in args):
        print(__doc__)
        return
    repeat = 3
    if "--repeat" in args:
        at = args.index("--repeat")
        if at + 1 >= len(args) or not args[at + 1].isdigit() or int(args[at + 1]) < 1:
            raise SystemExit("--repeat takes a number of runs, such as 3")
        repeat = int(args[at + 1])
        del args[at : at + 2]
    if not all(arg.isdigit() for arg in args):
        raise SystemExit("usage: python bench/overhead.py [--repeat N] [ARTICLES ...]   (sizes: 1000 5000)")
    sizes = [int(arg) for arg in args] or [1000, 5000]
    print(f"{'':>7} {'articles':>9} {'seconds':>8} {'ms/article':>11} {'CPU ms/article':>15} "
          f"{'check procs':>12} {'peak RSS MB (all)':>18} {'main growth MB':>15}")  # fmt: skip
    for count in sizes:
        runs = []
        for number in range(1, repeat + 1):
            runs.append(measure(count))
            print(_row(f"run {number}", runs[-1]), flush=True)
        if repeat > 1:
            print(_row("median", {key: statistics.median(run[key] for run in runs) for key in runs[0]}))


def _row(label: str, r: dict[str, float]) -> str:
    return (f"{label:>7} {r['articles']:>9.0f} {r['seconds']:>8.2f} {r['ms_per_article']:>11.2f} "
            f"{r['cpu_ms_per_article']:>15.2f} {r['processes']:>12.0f} {r['peak_rss_mb']:>18.1f} "
            f"{r['main_growth_mb']:>15.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
