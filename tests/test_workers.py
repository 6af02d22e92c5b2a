"""Big runs: answers checked in worker processes, and the index built from entries rendered as
articles were written. Both must give exactly what the plain path gives."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import re
import runpy
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from pipeline import runner as runner_module
from pipeline import workers as workers_module
from pipeline.config import Settings
from pipeline.console import PlainProgress
from pipeline.emit import index as index_module
from pipeline.emit.index import IndexSpool, render_index_html, write_index
from pipeline.emit.output import iter_analyses
from pipeline.emit.render import SiteInfo
from pipeline.ingest.article import Article
from pipeline.model.replay import ReplayModel
from pipeline.prompts import PromptBook
from pipeline.report import RunReport
from pipeline.runner import Runner, RunOptions
from pipeline.schema import Analysis, ModelPart
from pipeline.validate.findings import Finding
from pipeline.workers import (
    POOL_MIN_ARTICLES,
    CheckContext,
    PooledWorkers,
    check_processes,
    run_checks,
    usable_cpus,
)
from tests.conftest import ARTICLES, RECORDINGS


def replay(out: Path, settings: Settings, recordings: Path = RECORDINGS) -> RunReport:
    runner = Runner(settings, ReplayModel(recordings), PromptBook(settings), PlainProgress(io.StringIO()))
    return asyncio.run(runner.run([ARTICLES], RunOptions(out=out, mode="replay")))


def comparable(out: Path) -> dict[str, object]:
    """Every written file with the generation time masked, and the report's findings by article."""
    files = {}
    for analysis in iter_analyses(out):
        folder = out / "articles" / analysis.article.id
        for path in sorted(folder.iterdir()):
            text = path.read_text(encoding="utf-8")
            files[f"{folder.name}/{path.name}"] = text.replace(analysis.generation.created_at, "<created>")
    for page in ("index.html", "feed.xml"):
        text = (out / page).read_text(encoding="utf-8")
        files[page] = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^\s\"<]*", "<time>", text)
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    findings = {entry["id"]: entry["findings"] for entry in report["articles"]}
    return {"files": files, "findings": findings, "counts": report["counts"]}


def part_of(analysis: Analysis) -> ModelPart:
    return ModelPart(scores=analysis.scores, tags=analysis.tags, en=analysis.en, zh=analysis.zh)


def fixture_pairs(
    inline_run: Path, fixture_articles: list[Article], count: int
) -> list[tuple[ModelPart, Article]]:
    articles = {a.id: a for a in fixture_articles}
    pairs = [(part_of(analysis), articles[analysis.article.id]) for analysis in iter_analyses(inline_run)]
    return pairs[:count]


@pytest.fixture(scope="module")
def inline_run(tmp_path_factory: pytest.TempPathFactory, warned_recordings: Path) -> Path:
    out = tmp_path_factory.mktemp("inline")
    replay(out, Settings(check_processes=1), warned_recordings)
    return out


def test_workers_check_exactly_as_the_runner_does(
    inline_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warned_recordings: Path
) -> None:
    started: list[PooledWorkers] = []

    def started_workers(context: CheckContext, processes: int) -> PooledWorkers:
        workers = PooledWorkers(context, processes)
        workers.wait_until_started()  # else a short run checks everything while the workers start
        started.append(workers)
        return workers

    monkeypatch.setattr(runner_module, "new_workers", started_workers)
    report = replay(tmp_path, Settings(check_processes=2), warned_recordings)
    assert report.counts["ok"] == 13
    assert started[0].checked_in_workers == 13 and not started[0].broken
    assert comparable(tmp_path) == comparable(inline_run)
    assert any(comparable(inline_run)["findings"].values()), "the planted warning is among the findings"


def test_a_dead_worker_sends_the_remaining_checks_to_the_runner(
    inline_run: Path, fixture_articles: list[Article]
) -> None:
    book = PromptBook(Settings())
    context = CheckContext(book.glossary, book.system_prompt)
    pairs = fixture_pairs(inline_run, fixture_articles, 3)
    workers = PooledWorkers(context, 2)
    try:

        async def check_all() -> list[list[object]]:
            return [await workers.check(part, article) for part, article in pairs]

        workers.wait_until_started()
        first = asyncio.run(check_all())
        processes = list(workers._processes)
        assert processes, "the workers started"
        for process in processes:
            assert process.pid is not None
            os.kill(process.pid, signal.SIGKILL)
        for process in processes:
            process.join(timeout=10)
        again = asyncio.run(check_all())
    finally:
        workers.close()
    assert workers.broken, "the pool is known to be broken"
    assert workers.checked_in_workers == len(pairs), "the first round was checked by the workers"
    expected = [run_checks(part, article, context) for part, article in pairs]
    assert first == expected and again == expected


def started_pool(processes: int = 2) -> tuple[PooledWorkers, CheckContext]:
    book = PromptBook(Settings())
    context = CheckContext(book.glossary, book.system_prompt)
    workers = PooledWorkers(context, processes)
    workers.wait_until_started()
    return workers, context


def test_a_worker_that_dies_with_a_job_in_it_leaves_that_job_to_the_runner(
    inline_run: Path, fixture_articles: list[Article]
) -> None:
    pairs = fixture_pairs(inline_run, fixture_articles, 2)
    workers, context = started_pool()
    try:

        async def check_while_the_workers_die() -> list[list[object]]:
            for process in workers._processes:  # held, so the jobs sit in them unanswered
                assert process.pid is not None
                os.kill(process.pid, signal.SIGSTOP)
            jobs = [asyncio.create_task(workers.check(part, article)) for part, article in pairs]
            while len(workers._busy) < len(pairs):
                await asyncio.sleep(0.01)
            for process in workers._processes:
                assert process.pid is not None
                os.kill(process.pid, signal.SIGKILL)
            return await asyncio.gather(*jobs)

        findings = asyncio.run(check_while_the_workers_die())
    finally:
        workers.close()
    assert workers.broken and workers.checked_in_workers == 0
    assert findings == [run_checks(part, article, context) for part, article in pairs]


def test_an_error_in_a_worker_is_raised_in_the_runner_as_it_would_be_inline(
    inline_run: Path, tmp_path: Path
) -> None:
    (analysis, *_) = iter_analyses(inline_run)
    blocked = tmp_path / "out"
    blocked.write_text("a file where the output folder should be", encoding="utf-8")
    workers, _ = started_pool()
    try:
        with pytest.raises(NotADirectoryError) as raised:
            asyncio.run(workers.publish(analysis, SiteInfo(), blocked))
        written = asyncio.run(workers.publish(analysis, SiteInfo(), tmp_path / "fine"))
    finally:
        workers.close()
    assert raised.value.errno == errno.ENOTDIR and raised.value.strerror, "the runner reports its reason"
    assert not workers.broken, "the worker goes on after an error in one job"
    folder = inline_run / "articles" / analysis.article.id
    expected = [(folder / name).read_bytes() for name in ("article.html", "article.md", "analysis.json")]
    assert [Path(path).read_bytes() for path in written.outputs] == expected, "the same files as inline"


def test_a_job_cancelled_in_a_worker_does_not_answer_the_next_one(
    inline_run: Path, fixture_articles: list[Article]
) -> None:
    (first, (part, article)) = fixture_pairs(inline_run, fixture_articles, 2)
    planted = part.en.model_copy(update={"tldr": ["<b>planted</b> " + part.en.tldr[0], *part.en.tldr[1:]]})
    second = (part.model_copy(update={"en": planted}), article)  # its answer is told apart by a finding
    workers, context = started_pool(processes=1)
    try:

        async def cancel_then_check() -> list[Finding]:
            cancelled = asyncio.create_task(workers.check(*first))
            while not workers._busy:
                await asyncio.sleep(0.001)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            return await workers.check(*second)

        findings = asyncio.run(cancel_then_check())
    finally:
        workers.close()
    assert findings == run_checks(*second, context) != run_checks(*first, context)
    assert any(f.check == "markup" for f in findings)
    assert workers.checked_in_workers == 1 and not workers.broken


def test_the_runner_checks_while_the_workers_start(
    inline_run: Path, fixture_articles: list[Article], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting the workers waits for the forkserver's imports; the runner must not."""
    release = threading.Event()
    real_spawn = PooledWorkers._spawn

    def held_spawn(self: PooledWorkers) -> None:  # the processes start once `release` is set
        release.wait(30)
        real_spawn(self)

    monkeypatch.setattr(PooledWorkers, "_spawn", held_spawn)
    book = PromptBook(Settings())
    context = CheckContext(book.glossary, book.system_prompt)
    ((part, article),) = fixture_pairs(inline_run, fixture_articles, 1)
    workers = PooledWorkers(context, 2)  # returns while the start is held
    try:
        before = asyncio.run(workers.check(part, article))
        assert workers.checked_in_workers == 0 and not workers.broken, "checked in the runner's process"
        release.set()
        workers.wait_until_started()
        after = asyncio.run(workers.check(part, article))
        assert workers.checked_in_workers == 1, "checked by a worker once they are up"
    finally:
        release.set()
        workers.close()
    assert before == after == run_checks(part, article, context)


class Unsendable(str):
    def __reduce__(self) -> str:
        raise TypeError("this text cannot be sent to another process")


def test_workers_that_cannot_start_leave_the_work_to_the_runner(
    inline_run: Path, fixture_articles: list[Article]
) -> None:
    book = PromptBook(Settings())
    context = CheckContext(book.glossary, book.system_prompt)
    unsendable = CheckContext(book.glossary, Unsendable(book.system_prompt))
    ((part, article),) = fixture_pairs(inline_run, fixture_articles, 1)
    workers = PooledWorkers(unsendable, 2)  # a worker's start arguments cannot be pickled
    try:
        with pytest.raises(TypeError):
            workers.wait_until_started()
        findings = asyncio.run(workers.check(part, article))
    finally:
        workers.close()
    assert workers.broken and workers.checked_in_workers == 0
    assert findings == run_checks(part, article, context)


def test_workers_start_for_big_runs_only() -> None:
    assert check_processes(None, POOL_MIN_ARTICLES - 1) == 1
    assert check_processes(None, POOL_MIN_ARTICLES) == usable_cpus() + 1
    assert check_processes(3, 1) == 3, "an explicit setting always wins"


# --- the index from spooled entries ---------------------------------------------------------------


def counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    reads: list[Path] = []
    real = index_module.read_analysis

    def read(path: Path) -> Analysis | None:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(index_module, "read_analysis", read)
    return reads


def test_the_index_of_a_run_reuses_the_entries_rendered_when_articles_were_written(
    inline_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = counting_reads(monkeypatch)
    replay(tmp_path, Settings(check_processes=1))
    assert reads == [], "no analysis written by the run is read again for the index"
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert page == render_index_html(list(iter_analyses(tmp_path)), SiteInfo())


def test_an_analysis_changed_after_its_entries_were_rendered_is_read_again(
    inline_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyses = list(iter_analyses(inline_run))
    site = SiteInfo()
    with IndexSpool(site) as spool:
        for analysis in analyses:
            path = tmp_path / "articles" / analysis.article.id / "analysis.json"
            path.parent.mkdir(parents=True)
            path.write_text(analysis.model_dump_json(), encoding="utf-8")
            spool.add(path, analysis)
        edited = analyses[0].model_copy(
            update={"en": analyses[0].en.model_copy(update={"title": "A new title"})}
        )
        changed = tmp_path / "articles" / edited.article.id / "analysis.json"
        changed.write_text(edited.model_dump_json() + "\n", encoding="utf-8")
        reads = counting_reads(monkeypatch)
        write_index(tmp_path, site, spool)
    assert reads == [changed]
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "A new title" in page and analyses[0].en.title not in page


def test_worker_processes_importing_the_entry_point_do_not_run_the_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The forkserver imports the main module (``python -m pipeline``) as __mp_main__: it must not run."""
    runpy.run_module("pipeline.__main__", run_name="__mp_main__")
    assert capsys.readouterr() == ("", "")


def test_without_process_support_the_work_stays_in_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(context: CheckContext, processes: int) -> None:
        raise OSError(38, "Function not implemented")  # what sem_open gives where there is none

    monkeypatch.setattr(workers_module, "PooledWorkers", unsupported)
    book = PromptBook(Settings())
    chosen = workers_module.new_workers(CheckContext(book.glossary, book.system_prompt), 2)
    assert isinstance(chosen, workers_module.InlineWorkers)


class FullDisk:
    """A database connection whose every statement fails as SQLite does on a full disk."""

    def execute(self, *args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    def close(self) -> None:
        pass


def fill_the_disk(spool: IndexSpool) -> None:
    """From now on every statement of `spool` fails as on a full disk (its real database closed)."""
    spool._db.close()
    spool._db = FullDisk()  # type: ignore[assignment]


def test_an_index_database_that_cannot_be_set_up_is_closed_and_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        opened.append(real_connect(*args, **kwargs))  # type: ignore[arg-type]
        return opened[-1]

    monkeypatch.setattr(index_module.sqlite3, "connect", connect)
    monkeypatch.setattr(index_module, "_SCHEMA", "CREATE TABLE broken (")
    with pytest.raises(OSError, match="the index's temporary database failed"):
        IndexSpool(SiteInfo())
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("SELECT 1")


def test_a_failing_index_database_is_a_write_error_naming_where_it_lives(
    inline_run: Path, tmp_path: Path
) -> None:
    (analysis, *_) = iter_analyses(inline_run)
    with IndexSpool(SiteInfo()) as spool:
        fill_the_disk(spool)
        with pytest.raises(OSError, match=r"database or disk is full \(SQLite keeps it in \$SQLITE_TMPDIR"):
            spool.add(tmp_path / "analysis.json", analysis)


def test_a_run_whose_index_database_fails_stops_with_the_reason_and_still_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_init = IndexSpool.__init__

    def failing(self: IndexSpool, site: SiteInfo) -> None:
        real_init(self, site)
        fill_the_disk(self)

    monkeypatch.setattr(IndexSpool, "__init__", failing)
    report = replay(tmp_path, Settings(check_processes=1))
    assert report.counts["ok"] == 0 and report.halted and report.exit_code == 1
    failed = [entry for entry in report.articles if entry.status == "failed"]
    assert failed and all("database or disk is full" in (entry.error or "") for entry in failed)
    written = json.loads((tmp_path / "run-report.json").read_text(encoding="utf-8"))
    assert "database or disk is full" in written["index_error"]


def test_an_index_that_cannot_be_rebuilt_is_reported_and_the_run_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner_module, "write_index", no_space)
    report = replay(tmp_path, Settings(check_processes=1))
    assert report.counts["ok"] == 13, "the articles themselves are written"
    assert report.index_error == "No space left on device" and report.exit_code == 1
    written = json.loads((tmp_path / "run-report.json").read_text(encoding="utf-8"))
    assert written["index_error"] == "No space left on device"
    events = (tmp_path / "logs").glob("*.jsonl")
    assert any('"index_failed"' in path.read_text(encoding="utf-8") for path in events)
