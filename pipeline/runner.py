"""The batch runner: every input through ingest -> model -> validate -> emit, concurrently.

One bad input never stops the batch; an article whose outputs already exist for the same
content, prompt version, schema version and model is skipped without a model call.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from pipeline.analyze import Analyzer, ArticleOutcome
from pipeline.config import Settings
from pipeline.emit.output import article_dir, read_analysis, write_article, write_index
from pipeline.emit.render import SiteInfo
from pipeline.emit.write import atomic_write_text
from pipeline.ingest import InputFailure, Limits, load_articles
from pipeline.ingest.article import Article
from pipeline.model.base import ChatModel
from pipeline.prompts import PromptBook
from pipeline.report import ArticleEntry, RunReport
from pipeline.schema import SCHEMA_VERSION, FindingOut


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, entry: ArticleEntry) -> None: ...

    def finish(self, report: RunReport) -> None: ...


RunMode = Literal["live", "replay", "record"]


@dataclass
class RunOptions:
    out: Path
    mode: RunMode = "live"
    force: bool = False


@dataclass
class _Plan:
    todo: list[Article] = field(default_factory=list)
    done: list[ArticleEntry] = field(default_factory=list)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class Runner:
    def __init__(self, settings: Settings, model: ChatModel, book: PromptBook, progress: Progress) -> None:
        self.settings = settings
        self.model = model
        self.book = book
        self.progress = progress
        self.analyzer = Analyzer(model, book, settings)
        self.site = SiteInfo(settings.site_name, settings.site_name_zh)

    async def run(self, paths: Iterable[str | Path], options: RunOptions) -> RunReport:
        started = time.monotonic()
        report = RunReport(run_id=new_run_id(), mode=options.mode, model=self.settings.model,
                           prompt_version=self.book.version,
                           started_at=datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip
        limits = Limits(self.settings.max_input_bytes, self.settings.max_input_tokens)
        plan = self._plan(load_articles(paths, limits), options)
        self.progress.start(len(plan.todo) + len(plan.done))
        for entry in plan.done:
            self.progress.advance(entry)
        report.articles = list(plan.done)
        semaphore = asyncio.Semaphore(self.settings.concurrency)

        async def one(article: Article) -> None:
            async with semaphore:
                entry = await self._process(article, options.out)
            report.articles.append(entry)
            self.progress.advance(entry)

        await asyncio.gather(*(one(article) for article in plan.todo))
        write_index(options.out, self.site)
        report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        report.duration_s = round(time.monotonic() - started, 3)
        report.tally()
        atomic_write_text(options.out / "run-report.json", report.model_dump_json(indent=2) + "\n")
        self.progress.finish(report)
        return report

    def _plan(self, loaded: Iterable[Article | InputFailure], options: RunOptions) -> _Plan:
        plan = _Plan()
        first_by_hash: dict[str, Article] = {}
        for item in loaded:
            if isinstance(item, InputFailure):
                plan.done.append(
                    ArticleEntry(id=None, source=item.input_path, status="failed", error=item.reason)
                )
                continue
            if item.content_sha256 in first_by_hash:
                first = first_by_hash[item.content_sha256]
                plan.done.append(ArticleEntry(id=item.id, source=item.input_path, status="duplicate",
                                              duplicate_of=first.input_path))  # fmt: skip
                continue
            first_by_hash[item.content_sha256] = item
            if not options.force and self._is_done(item, options.out):
                note = "outputs exist for this content, prompt version and model"
                plan.done.append(
                    ArticleEntry(id=item.id, source=item.input_path, status="skipped", notes=[note])
                )
                continue
            plan.todo.append(item)
        return plan

    def _is_done(self, article: Article, out: Path) -> bool:
        folder = article_dir(out, article.id)
        existing = read_analysis(folder / "analysis.json")
        if existing is None or not all((folder / name).is_file() for name in ("article.html", "article.md")):
            return False
        return (
            existing.article.content_sha256 == article.content_sha256
            and existing.generation.prompt_version == self.book.version
            and existing.generation.model == self.settings.model
            and existing.schema_version == SCHEMA_VERSION
        )

    async def _process(self, article: Article, out: Path) -> ArticleEntry:
        try:
            return await self._analyze_and_write(article, out)
        except Exception as exc:  # one article's bug never stops the batch
            if os.environ.get("NEWSDESK_DEBUG"):
                raise
            error = (
                f"internal error ({type(exc).__name__}: {exc}); rerun with NEWSDESK_DEBUG=1 for the traceback"
            )
            return ArticleEntry(id=article.id, source=article.input_path, status="failed", error=error)

    async def _analyze_and_write(self, article: Article, out: Path) -> ArticleEntry:
        outcome = await self.analyzer.analyze(article)
        entry = _entry(article, outcome)
        if outcome.analysis is not None:
            try:
                entry.outputs = write_article(out, outcome.analysis, self.site)
            except OSError as exc:
                entry.status, entry.error = "failed", f"cannot write outputs: {exc.strerror or exc}"
        return entry


def _entry(article: Article, outcome: ArticleOutcome) -> ArticleEntry:
    notes = list(article.notes)
    if outcome.stale:
        notes.append("stale: replayed from recordings made with another prompt version")
    return ArticleEntry(
        id=article.id,
        source=article.input_path,
        status="ok" if outcome.analysis is not None else "failed",
        error=outcome.error,
        attempts=outcome.calls,
        usage=outcome.usage,
        stale=outcome.stale,
        notes=notes,
        findings=[FindingOut.model_validate(f.to_dict()) for f in outcome.findings],
    )
