"""Where an article's heavy local work runs: in the runner's own process, or in worker processes.

That work is checking the answers (pure functions of the answer, the article, the glossary and the
system prompt; the figures above all) and rendering the article's files. A big run
sends both to worker processes, one per CPU, while the runner's event loop goes on with the model
calls, the files, the journal and the report. The workers start from a fresh forkserver (never a fork of
the runner, which has threads), ignore Ctrl-C (the runner handles it), and get the glossary and
system prompt once. When a worker dies (killed, out of memory), the rest of the run's work is
done in the runner's process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

from pipeline.emit.output import RenderedArticle, render_article
from pipeline.emit.render import SiteInfo
from pipeline.ingest.article import Article
from pipeline.prompts import Glossary
from pipeline.schema import Analysis, ModelPart
from pipeline.validate.findings import Finding
from pipeline.validate.injection import check_injection
from pipeline.validate.rules import check_part
from pipeline.validate.source import check_against_source

POOL_MIN_ARTICLES = 50  # below this, starting workers costs more than it saves


@dataclass(frozen=True)
class CheckContext:
    """What the checks need besides the answer and the article."""

    glossary: Glossary
    system_prompt: str


def run_checks(part: ModelPart, article: Article, context: CheckContext) -> list[Finding]:
    """Every check of a parsed answer pair: structure and language, the source, injection."""
    findings = check_part(part)
    findings += check_against_source(part, article, context.glossary)
    findings += check_injection(part, article, context.system_prompt)
    return findings


class Workers(Protocol):
    async def check(self, part: ModelPart, article: Article) -> list[Finding]: ...

    async def render(self, analysis: Analysis, site: SiteInfo) -> RenderedArticle: ...

    def close(self) -> None: ...


class InlineWorkers:
    """Checking and rendering in the calling process (small runs, tests, the validate command)."""

    def __init__(self, context: CheckContext) -> None:
        self.context = context

    async def check(self, part: ModelPart, article: Article) -> list[Finding]:
        return run_checks(part, article, self.context)

    async def render(self, analysis: Analysis, site: SiteInfo) -> RenderedArticle:
        return render_article(analysis, site)

    def close(self) -> None:
        pass


class PooledWorkers:
    """Checking and rendering in `processes` worker processes. They start in a background thread
    (the forkserver imports the checks first: most of a second), and until they are up the
    runner's process does the work, as it would otherwise wait."""

    def __init__(self, context: CheckContext, processes: int) -> None:
        self._inline = InlineWorkers(context)
        self._pool = ProcessPoolExecutor(
            processes, mp_context=_worker_start(), initializer=_start_worker, initargs=(context,)
        )
        self._started: Future[bool] = Future()
        self._starter = threading.Thread(target=self._start, name="newsdesk-workers", daemon=True)
        self._starter.start()
        self.broken = False
        self.checked_in_workers = 0

    def _start(self) -> None:
        # Starting a process waits for the forkserver to finish its imports; in this thread the
        # event loop goes on meanwhile.
        try:
            self._started.set_result(self._pool.submit(_ready).result())
        except BaseException as exc:  # no process could start: the work stays inline
            self._started.set_exception(exc)

    def wait_until_started(self, timeout: float = 60.0) -> None:
        self._started.result(timeout)

    def _usable(self) -> bool:
        if self.broken or not self._started.done():
            return False
        if self._started.exception() is not None:
            self.broken = True
        return not self.broken

    async def check(self, part: ModelPart, article: Article) -> list[Finding]:
        if self._usable():
            loop = asyncio.get_running_loop()
            try:
                findings = await loop.run_in_executor(self._pool, _check_in_worker, part, article)
            except BrokenProcessPool:
                self.broken = True  # a worker died: the rest of the run checks here
            else:
                self.checked_in_workers += 1
                return findings
        return await self._inline.check(part, article)

    async def render(self, analysis: Analysis, site: SiteInfo) -> RenderedArticle:
        if self._usable():
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._pool, render_article, analysis, site)
            except BrokenProcessPool:
                self.broken = True
        return await self._inline.render(analysis, site)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._starter.join()


def check_processes(setting: int | None, articles: int) -> int:
    """How many processes check answers: the setting, else one per usable CPU for big runs."""
    if setting is not None:
        return setting
    return usable_cpus() if articles >= POOL_MIN_ARTICLES else 1


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def new_workers(context: CheckContext, processes: int) -> Workers:
    if processes > 1:
        try:
            return PooledWorkers(context, processes)
        except (OSError, ImportError):  # no process support here (no semaphores, say): work inline
            pass
    return InlineWorkers(context)


def _worker_start() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Workers fork from a server that has imported the checks and cn2an's tables once, instead of
    # each importing them (seconds of CPU). "__main__" is the standard library's default preload.
    context.set_forkserver_preload(["__main__", __name__, "cn2an"])
    return context


_context: CheckContext | None = None


def _start_worker(context: CheckContext) -> None:
    global _context
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _context = context


def _ready() -> bool:
    return _context is not None


def _check_in_worker(part: ModelPart, article: Article) -> list[Finding]:
    if _context is None:
        raise RuntimeError("a check worker was used before it was started")
    return run_checks(part, article, _context)
