"""Where an article's heavy local work runs: in the runner's own process, or in worker processes.

That work is checking the answers (pure functions of the answer, the article, the glossary and the
system prompt; the figures above all) and rendering and writing the article's files. A big run
sends both to worker processes, one more than there are CPUs (a worker waiting on its pipe or on
the disk leaves its CPU to another), while the runner's event loop goes on with the model
calls, the journal, the index and the report. The workers start from a fresh forkserver (never a
fork of the runner, which has threads), ignore Ctrl-C (the runner handles it), and get the glossary
and system prompt once. When a worker dies (killed, out of memory), the rest of the run's work is
done in the runner's process; a file it was writing is a temporary one, never the file itself.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import signal
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

from pipeline.collector import collect_by_work
from pipeline.emit.output import WrittenArticle, publish_article
from pipeline.emit.render import SiteInfo
from pipeline.ingest.article import Article
from pipeline.prompts import Glossary
from pipeline.schema import Analysis, ModelPart
from pipeline.validate.findings import Finding
from pipeline.validate.injection import check_injection
from pipeline.validate.rules import check_part
from pipeline.validate.source import check_against_source

POOL_MIN_ARTICLES = 50  # below this, starting workers costs more than it saves
JOBS_PER_COLLECTION = 100  # a worker's garbage is collected after so many jobs (pipeline.collector)


@dataclass(frozen=True)
class CheckContext:
    """What the checks need besides the answer and the article."""

    glossary: Glossary
    system_prompt: str


def publish_unflushed(out: Path, analysis: Analysis, site: SiteInfo) -> WrittenArticle:
    return publish_article(out, analysis, site, durable=False)


def run_checks(part: ModelPart, article: Article, context: CheckContext) -> list[Finding]:
    """Every check of a parsed answer pair: structure and language, the source, injection."""
    findings = check_part(part)
    findings += check_against_source(part, article, context.glossary)
    findings += check_injection(part, article, context.system_prompt)
    return findings


class Workers(Protocol):
    async def check(self, part: ModelPart, article: Article) -> list[Finding]: ...

    async def publish(self, analysis: Analysis, site: SiteInfo, out: Path) -> WrittenArticle:
        """Render and write the article's files, not yet flushed to disk (``pipeline.checkpoints``)."""
        ...

    def close(self) -> None: ...


class InlineWorkers:
    """Checking and publishing in the calling process (small runs, tests, the validate command)."""

    def __init__(self, context: CheckContext) -> None:
        self.context = context

    async def check(self, part: ModelPart, article: Article) -> list[Finding]:
        return run_checks(part, article, self.context)

    async def publish(self, analysis: Analysis, site: SiteInfo, out: Path) -> WrittenArticle:
        # in a thread: while this article is rendered and written, the event loop goes on
        return await asyncio.to_thread(publish_unflushed, out, analysis, site)

    def close(self) -> None:
        pass


class WorkerLost(Exception):
    """A worker process died (killed, out of memory) with work of the runner's in it."""


class PooledWorkers:
    """Checking and publishing in `processes` worker processes. They start in a background thread
    (the forkserver imports the checks first: most of a second), and until they are up the
    runner's process does the work, as it would otherwise wait.

    Each worker has a pipe and takes one job at a time: the event loop writes a job into an idle
    worker's pipe and reads the answer when the pipe is readable. (A ProcessPoolExecutor costs
    about six times more of the runner's CPU per job, in its two feeder threads.) Jobs wait in
    the runner's process for a free worker, so writing one into a pipe never blocks on a full pipe,
    and the worker, reading, never waits for the runner while the runner waits for it."""

    def __init__(self, context: CheckContext, processes: int) -> None:
        self._inline = InlineWorkers(context)
        self._context = context
        self._count = processes
        self._processes: list[BaseProcess] = []
        self._pipes: list[Connection] = []
        self._idle: list[Connection] = []
        self._busy: dict[Connection, asyncio.Future[Any]] = {}
        self._waiting: deque[tuple[bytes, asyncio.Future[Any]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started: Future[bool] = Future()
        self._closed = False
        self._starter = threading.Thread(target=self._start, name="newsdesk-workers", daemon=True)
        self._starter.start()
        self.broken = False
        self.checked_in_workers = 0

    def _start(self) -> None:
        # Starting a process waits for the forkserver to finish its imports; in this thread the
        # event loop goes on meanwhile.
        try:
            self._spawn()
            self._started.set_result(True)
        except BaseException as exc:  # no process could start: the work stays inline
            self._started.set_exception(exc)

    def _spawn(self) -> None:
        start_method = _worker_start()
        for number in range(self._count):
            if self._closed:
                raise WorkerLost("the run ended before the workers started")
            ours, theirs = start_method.Pipe()
            process = start_method.Process(  # type: ignore[attr-defined]
                target=_serve, args=(theirs, self._context), name=f"newsdesk-check-{number}", daemon=True
            )
            self._pipes.append(ours)
            try:
                process.start()
            finally:
                theirs.close()
            self._processes.append(process)
            if ours.recv_bytes() != _READY:  # the worker has its context: it can take jobs
                raise WorkerLost("a worker did not start")
        self._idle = list(self._pipes)

    def wait_until_started(self, timeout: float = 60.0) -> None:
        self._started.result(timeout)

    def _usable(self) -> bool:
        if self.broken or not self._started.done():
            return False
        if self._started.exception() is not None:
            self.broken = True
            return False
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._attach(loop)
        return True

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the workers' answers in this event loop (a test may run several, one after another)."""
        self._detach()
        self._loop = loop
        for pipe in self._pipes:
            loop.add_reader(pipe.fileno(), self._answered, pipe)

    def _detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for pipe in self._pipes:
                if not pipe.closed:
                    self._loop.remove_reader(pipe.fileno())
        self._loop = None

    async def _run(self, job: str, *args: object) -> Any:
        assert self._loop is not None
        answer: asyncio.Future[Any] = self._loop.create_future()
        self._waiting.append((pickle.dumps((job, args), pickle.HIGHEST_PROTOCOL), answer))
        self._dispatch()
        return await answer

    def _dispatch(self) -> None:
        while self._idle and self._waiting:
            message, answer = self._waiting.popleft()
            if answer.done():  # its article was cancelled while it waited
                continue
            pipe = self._idle.pop()
            try:
                pipe.send_bytes(message)
            except OSError:
                self._lost(answer)
                return
            self._busy[pipe] = answer

    def _answered(self, pipe: Connection) -> None:
        answer = self._busy.pop(pipe, None)
        try:
            ok, value = pickle.loads(pipe.recv_bytes())
        except (EOFError, OSError):  # the worker died
            self._lost(answer)
            return
        except Exception as exc:  # an answer that cannot be read back (an exotic exception, say)
            ok, value = False, WorkerLost(f"a worker's answer could not be read: {exc}")
        self._idle.append(pipe)
        if answer is not None and not answer.done():
            if ok:
                answer.set_result(value)
            else:
                answer.set_exception(value)
        self._dispatch()

    def _lost(self, answer: asyncio.Future[Any] | None) -> None:
        """A worker died: every job given to the workers is done again in the runner's process."""
        self.broken = True
        self._detach()
        lost = [answer, *self._busy.values(), *(waiting for _, waiting in self._waiting)]
        self._busy.clear()
        self._waiting.clear()
        for future in lost:
            if future is not None and not future.done():
                future.set_exception(WorkerLost("a worker process died"))

    async def check(self, part: ModelPart, article: Article) -> list[Finding]:
        if self._usable():
            try:
                findings: list[Finding] = await self._run("check", part, article)
            except WorkerLost:
                pass  # the rest of the run checks here
            else:
                self.checked_in_workers += 1
                return findings
        return await self._inline.check(part, article)

    async def publish(self, analysis: Analysis, site: SiteInfo, out: Path) -> WrittenArticle:
        if self._usable():
            try:
                written: WrittenArticle = await self._run("publish", out, analysis, site)
            except WorkerLost:  # a file the worker left half-written is a temporary one, never the file
                pass
            else:
                return written
        return await self._inline.publish(analysis, site, out)

    def close(self) -> None:
        """Stop the workers: each ends when its pipe closes; any still busy after a while is killed."""
        self._closed = True
        self._starter.join()
        self._detach()
        for pipe in self._pipes:
            pipe.close()
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()


def check_processes(setting: int | None, articles: int) -> int:
    """How many processes check answers and write articles: the setting, else for big runs one more
    than the usable CPUs (each worker waits on its pipe and the disk part of the time)."""
    if setting is not None:
        return setting
    return usable_cpus() + 1 if articles >= POOL_MIN_ARTICLES else 1


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


_READY = b"ready"


def _serve(pipe: Connection, context: CheckContext) -> None:
    """A worker: take a job, answer `(True, result)` or `(False, exception)`, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    jobs: dict[str, Callable[..., object]] = {
        "check": lambda part, article: run_checks(part, article, context),
        "publish": publish_unflushed,
    }
    garbage = collect_by_work(JOBS_PER_COLLECTION)
    pipe.send_bytes(_READY)
    while True:
        garbage.tick()
        try:
            job, args = pickle.loads(pipe.recv_bytes())
        except EOFError:  # the runner closed the pipe (or died): the run is over
            return
        try:
            answer: tuple[bool, object] = (True, jobs[job](*args))
        except Exception as exc:
            answer = (False, exc)
        try:
            message = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an exception that cannot be sent: send what it says
            message = pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        pipe.send_bytes(message)
