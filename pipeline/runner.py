"""The batch runner: every input through ingest -> model -> validate -> emit, concurrently.

Inputs are read lazily and at most ``concurrency`` articles are in flight, so memory stays flat
however many articles a folder holds. One bad input never stops the batch. An article whose
outputs already exist for the same content, prompt version, schema version and model is skipped
without a model call; identical inputs are processed once; with a budget, articles that could
exceed it are not started. The output folder is locked for the run, every event is logged to
``OUT/logs/<run_id>.jsonl`` and the report goes to ``OUT/run-report.json`` and
``OUT/runs/<run_id>.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from pipeline.analyze import Analyzer, ArticleOutcome, check_context, first_request
from pipeline.checkpoints import Checkpoints
from pipeline.collector import collecting_every
from pipeline.config import Settings
from pipeline.cost import cost_usd
from pipeline.emit.index import IndexSpool, write_index
from pipeline.emit.output import ARTICLE_FILES, article_dir, is_article_id, pages_whole, read_analysis
from pipeline.emit.render import SiteInfo
from pipeline.emit.write import atomic_write_chunks, remove_temporaries
from pipeline.errors import ConfigError, OutputError, debugging
from pipeline.events import EventLog
from pipeline.ingest import InputFailure, Limits, check_out_apart, discover, load_file, path_label
from pipeline.ingest.article import Article, estimate_tokens
from pipeline.lock import RunLock, describe_holder
from pipeline.model.base import ChatModel
from pipeline.model.cache import JournaledModel
from pipeline.prompts import PromptBook
from pipeline.redact import Redactor
from pipeline.report import ArticleEntry, RunReport
from pipeline.schema import LANGS, SCHEMA_VERSION, FindingOut, Usage
from pipeline.workers import check_processes, new_workers

RunMode = Literal["live", "replay", "record", "batch"]


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, entry: ArticleEntry) -> None: ...

    def note(self, message: str) -> None: ...

    def finish(self, report: RunReport) -> None: ...


@dataclass
class RunOptions:
    out: Path
    mode: RunMode = "live"
    force: bool = False
    shard: tuple[int, int] | None = None  # (k, n): this job takes the k-th of n shares, 1-based
    journal_is_fresh: bool = False  # the journal holds this run's answers (the Batch API's): --force keeps it


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` with 1 <= K <= N."""
    match = re.fullmatch(r"([0-9]+)/([0-9]+)", text.strip())
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"--shard takes K/N with 1 <= K <= N, not {text!r}")
    return int(match.group(1)), int(match.group(2))


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    k, n = shard
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % n == k - 1


@dataclass
class Budget:
    """Stops starting articles once the next one could take the spend past the limit."""

    limit_usd: float
    per_token_in: float  # USD per prompt token
    per_token_out: float  # USD per completion token
    default_completion: int
    spent: float = 0.0
    reserved: float = 0.0
    completions: list[int] = field(default_factory=list)
    exhausted: bool = False

    def estimate(self, prompt_tokens: int) -> float:
        completion = (
            sum(self.completions) / len(self.completions) if self.completions else self.default_completion
        )
        return prompt_tokens * self.per_token_in + completion * self.per_token_out

    def try_reserve(self, amount: float) -> bool:
        if self.exhausted or self.spent + self.reserved + amount > self.limit_usd:
            self.exhausted = True
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: float, actual: float, completion_tokens: int) -> None:
        self.reserved -= reserved
        self.spent += actual
        if completion_tokens:
            self.completions.append(completion_tokens)


class Runner:
    def __init__(
        self,
        settings: Settings,
        model: ChatModel,
        book: PromptBook,
        progress: Progress,
        journal: JournaledModel | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.redactor = redactor or Redactor()
        self.settings = settings
        self.model = model
        self.book = book
        self.progress = progress
        self.journal = journal
        self.analyzer = Analyzer(model, book, settings)
        self.site = SiteInfo(settings.site_name, settings.site_name_zh, settings.site_url)
        self._index: IndexSpool | None = None  # during a run: the entries of the articles it wrote
        self._force = False  # during a run: --force
        self._forget_on_force = True  # and with it, the article's journaled answers are dropped
        self._outputs_by_content: dict[str, str] | None = None  # content hash -> article id, when needed
        self._checkpoints = Checkpoints(self._on_disk)  # a run's written articles, until flushed to disk
        self._first_by_hash: dict[str, str] = {}
        self._opened = 0  # how many of the run's input files were opened
        self.limits = Limits(settings.max_input_bytes, settings.max_input_tokens)
        self.halted: str | None = None
        self._overhead_tokens = estimate_tokens(book.messages(_PROBE, "en")[0]["content"]) + 400

    async def run(
        self,
        paths: Iterable[str | Path],
        options: RunOptions,
        run_id: str | None = None,
        before: Callable[[EventLog], Awaitable[None]] | None = None,
    ) -> RunReport:
        """Process every input; `before` runs first, inside the lock (the Batch API step)."""
        run_id = run_id or new_run_id()
        paths = list(paths)
        check_out_apart(paths, options.out)
        with RunLock(options.out, run_id) as lock:
            events = _open_run_files(options.out, run_id, self.redactor)
            try:
                if lock.took_over:
                    holder = describe_holder(lock.took_over)
                    message = f"took over the lock of a run that is no longer running ({holder})"
                    self.progress.note(f"warning: {message}")
                    events.emit("lock_taken_over", previous=lock.took_over)
                if self.journal is not None:
                    self.journal.run_id = run_id  # answers a batch collects now are this run's to pay
                started = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
                if before is not None:
                    await before(events)
                return await self._run(paths, options, run_id, events, started)
            except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C, SIGTERM: the log says so
                events.emit("run_interrupted", run_id=run_id)
                raise
            finally:
                events.close()

    async def _run(
        self, paths: Iterable[str | Path], options: RunOptions, run_id: str, events: EventLog,
        since: tuple[float, str],
    ) -> RunReport:  # fmt: skip
        started, started_at = since  # before the Batch API step, if any: the run's whole time
        report = RunReport(run_id=run_id, mode=options.mode, model=self.settings.model,
                           prompt_version=self.book.version, budget_usd=self.settings.budget_usd,
                           started_at=started_at)  # fmt: skip
        self._force = options.force
        self._forget_on_force = not options.journal_is_fresh
        self._outputs_by_content = None
        self._checkpoints = Checkpoints(self._on_disk)
        self._first_by_hash = {}  # content hash -> the input that had it first
        inputs = list(discover(paths, exclude=options.out))
        total = _count(inputs)
        self.progress.start(total)
        events.emit("run_started", run_id=run_id, mode=options.mode, model=self.settings.model,
                    prompt_version=self.book.version, inputs=total, files=len(inputs),
                    shard=options.shard)  # fmt: skip
        budget = self._budget()

        spool_path = options.out / "runs" / f".{run_id}.entries.jsonl"
        spool_path.parent.mkdir(parents=True, exist_ok=True)
        for left in spool_path.parent.glob(".*.entries.jsonl"):  # of runs killed (-9) before they ended
            left.unlink(missing_ok=True)  # we hold the lock: no other run is writing one
        remove_temporaries(options.out, ("index.html", "feed.xml", "run-report.json"))
        remove_temporaries(options.out / "runs", ("*.json",))
        kept: list[ArticleEntry] = []

        def record(entry: ArticleEntry) -> None:
            report.add(entry)
            spool.write(entry.model_dump_json() + "\n")  # memory stays flat: entries live on disk
            if len(kept) < IN_MEMORY_ENTRIES:
                kept.append(entry)
            self.progress.advance(entry)
            events.emit("article", **entry.model_dump(exclude={"findings", "outputs"}))
            garbage.tick()

        processes = check_processes(self.settings.check_processes, total)
        self.analyzer.workers = new_workers(check_context(self.book), processes)
        interrupted: BaseException | None = None
        try:
            with IndexSpool(self.site) as self._index, collecting_every() as garbage:
                with spool_path.open("w", encoding="utf-8") as spool:
                    items = self._load(inputs)
                    try:
                        await self._process_all(items, options, budget, record, events)
                    except (asyncio.CancelledError, KeyboardInterrupt) as exc:  # Ctrl-C, SIGTERM
                        interrupted = exc  # what finished is still reported and indexed, then it stops
                        self.halted = "interrupted (Ctrl-C or SIGTERM): run again to do the rest"
                        self._record_unreached(items, options, record, inputs)
                self._finish(report, options, started, spool_path, events, self._index)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            message = f"cannot write the run report in {options.out} ({reason}); finished articles are whole"
            raise OutputError(message) from None
        finally:
            self._index = None
            self.analyzer.workers.close()
            spool_path.unlink(missing_ok=True)
        if len(kept) == sum(report.counts.values()):
            report.articles = kept  # small runs keep their entries in memory for the caller too
        self.progress.finish(report)  # the progress bar stops (and gives the terminal its cursor back)
        if interrupted is not None:
            raise interrupted
        return report

    def _finish(
        self, report: RunReport, options: RunOptions, started: float, spool: Path, events: EventLog,
        index: IndexSpool,
    ) -> None:  # fmt: skip
        try:  # the articles' files are on disk before the report says so
            self._checkpoints.flush()
        except OSError as exc:  # their answers stay journaled: the next run checks them again
            report.flush_error = exc.strerror or str(exc)
            events.emit("flush_failed", error=report.flush_error)
        try:
            write_index(options.out, self.site, index)
        except OSError as exc:  # the articles are written: the report must still be
            report.index_error = exc.strerror or str(exc)
            events.emit("index_failed", error=report.index_error)
        report.halted = self.halted
        if self.journal is not None:  # a live run: its calls went through the rate gate
            report.rate_limit_pause_s = round(self.journal.rate_limit_pause_s(), 1)
        report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        report.duration_s = round(time.monotonic() - started, 3)
        if not report.counts:
            report.tally()
        final = options.out / "runs" / f"{report.run_id}.json"
        write_report(report, spool, final)
        copy_atomically(final, options.out / "run-report.json")
        events.emit("run_finished", counts=report.counts, usage=report.usage.model_dump(),
                    cost_usd=report.cost_usd, endpoint_errors=report.endpoint_errors,
                    rate_limit_pause_s=report.rate_limit_pause_s, duration_s=report.duration_s,
                    halted=report.halted)  # fmt: skip

    def _load(self, inputs: list[Path | InputFailure]) -> Iterator[Article | InputFailure]:
        for position, item in enumerate(inputs):
            self._opened = position + 1  # inputs[self._opened:] are not read yet
            if isinstance(item, InputFailure):
                yield item
                continue
            try:
                yield from load_file(item, self.limits)
            except Exception as exc:  # a reader bug fails this input, never the batch
                if debugging():
                    raise
                yield InputFailure(path_label(item), f"cannot be read (internal error: {type(exc).__name__})")

    def _record_unreached(
        self, items: Iterator[Article | InputFailure], options: RunOptions, record: _Record,
        inputs: list[Path | InputFailure],
    ) -> None:  # fmt: skip
        """An interrupted run's report still accounts for the inputs it never reached: settled as
        usual when they need no model call (skipped, duplicate, unreadable), else `not_started`.
        After UNREACHED_SECONDS (a scheduler waits only so long after SIGTERM) the files not yet
        read are listed unread, one entry each, and a second Ctrl-C stops the listing: the report
        is written either way."""
        deadline = time.monotonic() + UNREACHED_SECONDS
        try:
            for item in items:
                entry = self._settled(item, options, self._first_by_hash)
                if entry is None:
                    assert isinstance(item, Article)
                    entry = _interrupted(item)
                if entry.status != "out_of_shard":
                    record(entry)
                if time.monotonic() > deadline:
                    break
            if options.shard is not None:  # whether an unread file is this shard's is not known
                return
            for unread in inputs[self._opened :]:
                source = unread.input_path if isinstance(unread, InputFailure) else path_label(unread)
                record(ArticleEntry(id=None, source=source, status="not_started", error=_NOT_READ))
        except (KeyboardInterrupt, asyncio.CancelledError):
            return

    async def _process_all(self, items: Iterator[Article | InputFailure], options: RunOptions,
                           budget: Budget | None, record: _Record, events: EventLog) -> None:  # fmt: skip
        running: set[asyncio.Task[None]] = set()
        try:
            await self._start_all(items, options, budget, record, events, running)
            if running:
                await asyncio.gather(*running)
        except BaseException:
            # interrupted (Ctrl-C cancels this task) or failed: the articles in flight stop before
            # the spool, the index and the workers they report to are closed
            in_flight = list(running)
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise

    async def _start_all(self, items: Iterator[Article | InputFailure], options: RunOptions,
                         budget: Budget | None, record: _Record, events: EventLog,
                         running: set[asyncio.Task[None]]) -> None:  # fmt: skip
        """Start a task per article to process, as slots free up; record the others at once."""
        slots = asyncio.Semaphore(self.settings.concurrency)
        budget_noted = False
        for item in items:
            entry = self._settled(item, options, self._first_by_hash)
            if entry is not None:
                if entry.status != "out_of_shard":
                    record(entry)
                continue
            assert isinstance(item, Article)
            try:
                await slots.acquire()
            except asyncio.CancelledError:  # interrupted while it waited for a slot
                record(_interrupted(item))
                raise
            if self.halted is not None:
                slots.release()
                error = f"not started: {self.halted}"
                record(ArticleEntry(id=item.id, source=item.input_path, status="not_started", error=error))
                continue
            reserved = budget.estimate(self._prompt_tokens(item)) if budget else 0.0
            if budget is not None and not budget.try_reserve(reserved):
                slots.release()
                if not budget_noted:
                    budget_noted = True
                    events.emit("budget_reached", spent_usd=budget.spent, limit_usd=budget.limit_usd)
                    self.progress.note(
                        f"budget of ${budget.limit_usd:g} reached: no new articles are started"
                    )
                error = f"not started: the budget of ${budget.limit_usd:g} could be exceeded"
                record(ArticleEntry(id=item.id, source=item.input_path, status="not_started", error=error))
                continue
            task = asyncio.create_task(self._one(item, options.out, budget, reserved, record, slots))
            running.add(task)
            task.add_done_callback(running.discard)

    async def _one(self, article: Article, out: Path, budget: Budget | None, reserved: float,
                   record: _Record, slots: asyncio.Semaphore) -> None:  # fmt: skip
        try:
            try:
                entry = await self._process(article, out)
            except asyncio.CancelledError:  # interrupted in flight: its answers so far stay journaled
                record(_interrupted(article))
                raise
            if budget is not None:
                budget.settle(reserved, entry.cost_usd or 0.0, entry.usage.completion_tokens)
            if entry.fatal and self.halted is None:  # every later article would fail the same way
                self.halted = entry.error or "the endpoint failed"
                self.progress.note(f"stopping: {self.halted}")
            record(entry)
            if self.journal is not None and entry.attempts:
                self.journal.account(article.id)  # what the entry counts, no later run counts again
        finally:
            slots.release()
        await self._flush_if_due(out)  # the next article need not wait for it

    def _settled(
        self, item: Article | InputFailure, options: RunOptions, first_by_hash: dict[str, str]
    ) -> ArticleEntry | None:
        """The entry of an input that needs no model call, or None when it must be processed."""
        if isinstance(item, InputFailure):
            if not in_shard(item.input_path, options.shard):
                return ArticleEntry(id=None, source=item.input_path, status="out_of_shard")
            return ArticleEntry(id=None, source=item.input_path, status="failed", error=item.reason)
        if not in_shard(item.content_sha256, options.shard):
            return ArticleEntry(id=item.id, source=item.input_path, status="out_of_shard")
        if item.content_sha256 in first_by_hash:
            return ArticleEntry(id=item.id, source=item.input_path, status="duplicate",
                                duplicate_of=first_by_hash[item.content_sha256])  # fmt: skip
        first_by_hash[item.content_sha256] = item.input_path
        done_as = None if options.force else self.done_as(item, options.out)
        if done_as is None:
            return None
        left = self.journal if self.journal is not None and self.journal.holds(done_as) else None
        # Answers left in the journal: the run that wrote the files stopped before they were known
        # to be on disk, and a power cut may have torn them in a way no check sees. The article is
        # redone from the journal when it can answer (no model call), else kept as it is.
        if left is not None and done_as == item.id and self._journal_answers(left, item):
            return None
        note = "outputs exist for this content, prompt version and model"
        if done_as != item.id:  # the file was renamed, or lines were added above it in a .jsonl
            note += f", as {done_as}"
        entry = ArticleEntry(id=done_as, source=item.input_path, status="skipped", notes=[note])
        if left is not None:
            self._count_unreported(entry, left, done_as)
            left.account(done_as)
            folder = article_dir(options.out, done_as)  # its answers go once its files are on disk
            self._checkpoints.written(done_as, [str(folder / name) for name in ARTICLE_FILES])
        return entry

    def _journal_answers(self, journal: JournaledModel, article: Article) -> bool:
        """Whether the journal holds the answers to the article's first requests as made today."""
        limit = self.settings.max_output_tokens
        return all(journal.has(first_request(self.book, article, lang, limit)) for lang in LANGS)

    def _count_unreported(self, entry: ArticleEntry, journal: JournaledModel, article_id: str) -> None:
        """A skipped article's journaled answers that no report holds (its run stopped before its
        report) are counted in its entry, as this run would count them if it used them."""
        live, batch = journal.unreported(article_id)
        entry.usage = live + batch
        if entry.usage == Usage():
            return
        price = self.settings.price()
        if price is not None:
            entry.cost_usd = cost_usd(live, price) + cost_usd(batch, price, batch=True)
        entry.notes.append(
            "counts the cost of its answers: the run that paid for them stopped before its report"
        )

    def is_done(self, article: Article, out: Path) -> bool:
        return self.done_as(article, out) is not None

    def done_as(self, article: Article, out: Path) -> str | None:
        """The id under which the article's outputs exist for its content, this prompt version,
        model and schema, made from answers to today's requests (not from stale recordings); its
        own id, or that of the same content read from another file name earlier."""
        if self._current_output(article_dir(out, article.id), article.content_sha256):
            return article.id
        if self._outputs_by_content is None:
            self._outputs_by_content = self._catalogue_outputs(out)
        other = self._outputs_by_content.get(article.content_sha256)
        if other is None or not is_article_id(other):  # a folder put there by hand, say
            return None
        return other if self._current_output(article_dir(out, other)) else None

    def _current_output(self, folder: Path, content_sha256: str | None = None) -> bool:
        existing = read_analysis(folder / "analysis.json")
        if existing is None or not pages_whole(folder):  # a page torn by a power cut is redone
            return False
        return (
            content_sha256 in (None, existing.article.content_sha256)
            and existing.generation.prompt_version == self.book.version
            and existing.generation.model == self.settings.model
            and existing.schema_version == SCHEMA_VERSION
            and not any(warning.check == "stale" for warning in existing.generation.warnings)
        )

    @staticmethod
    def _catalogue_outputs(out: Path) -> dict[str, str]:
        """The content hash of every article folder in OUT (read once per run, when first needed)."""
        found: dict[str, str] = {}
        for path in sorted((out / "articles").glob("*/analysis.json")):
            try:
                article = json.loads(path.read_text(encoding="utf-8")).get("article", {})
                found.setdefault(str(article["content_sha256"]), path.parent.name)
            except (OSError, ValueError, AttributeError, KeyError, TypeError):
                continue
        return found

    def _budget(self) -> Budget | None:
        limit = self.settings.budget_usd
        price = self.settings.price()
        if limit is None or price is None:
            return None
        return Budget(limit, price.input / 1e6, price.output / 1e6, self.settings.max_output_tokens)

    def _prompt_tokens(self, article: Article) -> int:
        return 2 * (self._overhead_tokens + estimate_tokens(article.title) + estimate_tokens(article.text))

    async def _process(self, article: Article, out: Path) -> ArticleEntry:
        try:
            return await self._analyze_and_write(article, out)
        except (
            OSError
        ) as exc:  # the journal or the outputs cannot be written: later articles could not either
            error = f"cannot write to {out}: {exc.strerror or exc}"
            return ArticleEntry(
                id=article.id, source=article.input_path, status="failed", error=error, fatal=True
            )
        except Exception as exc:  # one article's bug never stops the batch
            if debugging():
                raise
            error = self.redactor(
                f"internal error ({type(exc).__name__}: {exc}); rerun with NEWSDESK_DEBUG=1 for the traceback"
            )
            return ArticleEntry(id=article.id, source=article.input_path, status="failed", error=error)

    async def _analyze_and_write(self, article: Article, out: Path) -> ArticleEntry:
        if self.journal is not None and self._force and self._forget_on_force:  # redone from scratch
            self.journal.forget(article.id)
        outcome = await self.analyzer.analyze(article)
        entry = self._entry(article, outcome)
        if outcome.analysis is None and self.journal is not None and outcome.spoiled_calls:
            self.journal.forget(article.id, outcome.spoiled_calls)  # the next run asks these again
        if outcome.analysis is not None:
            try:
                written = await self.analyzer.workers.publish(outcome.analysis, self.site, out)
                entry.outputs = written.outputs
                if self._index is not None:
                    entries = written.index_entry, written.feed_entry
                    self._index.add(Path(entry.outputs[-1]), outcome.analysis, entries)
                self._checkpoints.written(article.id, written.outputs)  # flushed once it is recorded
            except OSError as exc:
                entry.status, entry.error = "failed", f"cannot write to {out}: {exc.strerror or exc}"
                entry.fatal = True
                return entry
        return entry

    async def _flush_if_due(self, out: Path) -> None:
        """A checkpoint, when one is due: after the entry is recorded, so that an article whose
        answers are let go is in the report."""
        try:
            await self._checkpoints.flush_if_due()
        except OSError as exc:  # the disk refuses: the articles written next could not be kept either
            if self.halted is None:
                self.halted = f"cannot write to {out}: {exc.strerror or exc}"
                self.progress.note(f"stopping: {self.halted}")

    def _on_disk(self, article_id: str) -> None:
        """The article's files are flushed to disk: its journaled answers are no longer needed."""
        if self.journal is not None:
            self.journal.forget(article_id)

    def _entry(self, article: Article, outcome: ArticleOutcome) -> ArticleEntry:
        notes = list(article.notes)
        if outcome.stale:
            notes.append("stale: replayed from recordings of other requests (the prompts changed)")
        if outcome.usage_estimated:
            notes.append("tokens estimated: the endpoint reported no usage for some call")
        price = self.settings.price()
        cost = None
        if price is not None:
            cost = cost_usd(outcome.paid, price) + cost_usd(outcome.paid_batch, price, batch=True)
        return ArticleEntry(
            fatal=outcome.fatal,
            id=article.id,
            source=article.input_path,
            status="ok" if outcome.analysis is not None else "failed",
            error=outcome.error,
            attempts=outcome.calls,
            usage=outcome.paid + outcome.paid_batch,
            cost_usd=cost,
            stale=outcome.stale,
            endpoint_errors=outcome.endpoint_errors,
            notes=notes,
            findings=[FindingOut.model_validate(f.to_dict()) for f in outcome.findings],
        )


IN_MEMORY_ENTRIES = 500  # beyond this the returned report's entries are only on disk


def write_report(report: RunReport, spool: Path, path: Path) -> None:
    """The report as JSON, its `articles` streamed from the spool file (atomically)."""
    atomic_write_chunks(path, _report_pieces(report, spool))


def _report_pieces(report: RunReport, spool: Path) -> Iterator[str]:
    header = report.model_dump_json(indent=2, exclude={"articles"})
    yield header[: header.rstrip().rfind("}")].rstrip() + ',\n  "articles": ['
    with spool.open(encoding="utf-8") as entries:
        for i, line in enumerate(entries):
            yield ("\n    " if i == 0 else ",\n    ") + line.rstrip("\n")
    yield "\n  ]\n}\n"


def _open_run_files(out: Path, run_id: str, redactor: Redactor) -> EventLog:
    """The run's log, once its folders are known to be writable: a folder that cannot be (a file
    in its place, read-only) stops the run before anything is paid for, naming it."""
    here = out / "logs"
    try:
        for here in (out / "articles", out / "runs", out / "logs"):
            here.mkdir(exist_ok=True)
        return EventLog(out / "logs" / f"{run_id}.jsonl", redactor)
    except OSError as exc:
        raise ConfigError(
            f"cannot write to {here} in the output folder: {exc.strerror or exc}; make it a writable folder"
        ) from None


def copy_atomically(source: Path, target: Path) -> None:
    atomic_write_chunks(target, _text_pieces(source))


def _text_pieces(path: Path, size: int = 1 << 16) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        while piece := handle.read(size):
            yield piece


class _Record(Protocol):
    def __call__(self, entry: ArticleEntry) -> None: ...


UNREACHED_SECONDS = 5.0  # how long an interrupted run reads the inputs it never reached, for its report
_NOT_READ = "not started: the run was interrupted before it read this file; the next run does it"


def _interrupted(article: Article) -> ArticleEntry:
    error = "not finished: the run was interrupted (Ctrl-C or SIGTERM); the next run does it"
    return ArticleEntry(id=article.id, source=article.input_path, status="not_started", error=error)


def _count(inputs: list[Path | InputFailure]) -> int:
    total = 0
    for item in inputs:
        if isinstance(item, Path) and item.suffix.lower() == ".jsonl":
            total += _count_lines(item)
        else:
            total += 1
    return total


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return max(1, sum(1 for line in handle if line.strip()))
    except OSError:
        return 1


_PROBE = Article(id="probe", title="", text="", input_path="", content_sha256="0" * 64)
