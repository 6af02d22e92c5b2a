"""A run's article files reach the disk in groups; their journaled answers are let go only after.

The checkpoints themselves (when one is due, what happens when a flush fails), the flush (one
syncfs per file system, or an fsync per file and folder), the check that finds a page a power cut
tore, and the runner: answers dropped only once their article's files are flushed, and an article
torn by a power cut before its checkpoint redone from its journal without a model call.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import io
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from pipeline import checkpoints as checkpoints_module
from pipeline.checkpoints import Checkpoints
from pipeline.config import Settings
from pipeline.console import PlainProgress
from pipeline.emit import write as write_module
from pipeline.emit.output import ARTICLE_FILES, pages_whole, publish_article
from pipeline.emit.render import SiteInfo
from pipeline.emit.write import flush_to_disk
from pipeline.model.base import ChatModel
from pipeline.model.cache import JOURNAL_DIR, JournaledModel
from pipeline.prompts import PromptBook
from pipeline.report import RunReport
from pipeline.runner import Runner, RunOptions
from pipeline.schema import Analysis
from tests.conftest import ARTICLES
from tests.test_emit import (
    HOSTILE,
    PAYLOADS,
    CountingModel,
    analysis_document,
    hostile_section,
    make_analysis,
)

# ----------------------------------------------------------------------------- the checkpoints


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Disk:
    """A flush that records what it was given, and the order of flushes and let-gos."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.failing = False

    def flush(self, paths: Iterable[str | Path]) -> None:
        if self.failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self.events.append(("flush", sorted(str(p) for p in paths)))

    def on_disk(self, article_id: str) -> None:
        self.events.append(("on disk", article_id))


def files(article_id: str) -> list[str]:
    return [f"{article_id}/{name}" for name in ARTICLE_FILES]


def test_a_checkpoint_is_due_after_so_many_articles() -> None:
    disk, clock = Disk(), Clock()
    points = Checkpoints(disk.on_disk, articles=3, seconds=60, clock=clock, flush=disk.flush)
    for article_id in ("a", "b"):
        points.written(article_id, files(article_id))
        asyncio.run(points.flush_if_due())
    assert disk.events == [], "two articles wait, nothing is flushed or let go"
    points.written("c", files("c"))
    asyncio.run(points.flush_if_due())
    everything = sorted(files("a") + files("b") + files("c"))
    assert disk.events == [("flush", everything), ("on disk", "a"), ("on disk", "b"), ("on disk", "c")]
    assert not points.due()


def test_a_checkpoint_is_due_once_the_oldest_article_has_waited_long_enough() -> None:
    disk, clock = Disk(), Clock()
    points = Checkpoints(disk.on_disk, articles=100, seconds=2.0, clock=clock, flush=disk.flush)
    points.written("a", files("a"))
    clock.now += 1.5
    points.written("b", files("b"))  # a newer article does not restart the wait
    assert not points.due()
    clock.now += 0.5
    assert points.due()
    asyncio.run(points.flush_if_due())
    assert [event for event in disk.events if event[0] == "on disk"] == [("on disk", "a"), ("on disk", "b")]
    points.written("c", files("c"))  # the wait starts again with the next article written
    clock.now += 1.9
    assert not points.due()


def test_a_failed_flush_lets_nothing_go_and_its_articles_wait_for_the_next() -> None:
    disk, clock = Disk(), Clock()
    points = Checkpoints(disk.on_disk, articles=1, seconds=60, clock=clock, flush=disk.flush)
    points.written("a", files("a"))
    disk.failing = True
    with pytest.raises(OSError, match=os.strerror(errno.EIO)):
        asyncio.run(points.flush_if_due())
    assert disk.events == [], "answers are kept while the files are not known to be on disk"
    disk.failing = False
    points.written("b", files("b"))
    asyncio.run(points.flush_if_due())
    assert disk.events == [("flush", sorted(files("a") + files("b"))), ("on disk", "a"), ("on disk", "b")]


def test_the_end_of_a_run_flushes_whatever_waits_and_a_failure_keeps_it() -> None:
    disk, clock = Disk(), Clock()
    points = Checkpoints(disk.on_disk, articles=100, seconds=60, clock=clock, flush=disk.flush)
    points.flush()
    assert disk.events == [], "nothing waits: no flush"
    points.written("a", files("a"))
    disk.failing = True
    with pytest.raises(OSError):
        points.flush()
    assert disk.events == []
    disk.failing = False
    points.flush()
    assert disk.events == [("flush", sorted(files("a"))), ("on disk", "a")]


def test_checkpoints_never_pile_up_while_a_flush_is_under_way() -> None:
    clock, started, release = Clock(), threading.Event(), threading.Event()
    flushed: list[list[str]] = []
    calls = 0

    def slow_flush(paths: Iterable[str | Path]) -> None:
        nonlocal calls
        calls += 1
        started.set()
        release.wait(timeout=5)
        flushed.append(sorted(str(p) for p in paths))

    points = Checkpoints(lambda article_id: None, articles=1, seconds=60, clock=clock, flush=slow_flush)

    async def two_articles_during_one_flush() -> None:
        points.written("a", files("a"))
        first = asyncio.create_task(points.flush_if_due())
        while not started.is_set():
            await asyncio.sleep(0.01)
        points.written("b", files("b"))
        await points.flush_if_due()  # due, but the flush of "a" is under way: returns at once
        assert calls == 1 and points.due()
        release.set()
        await first
        await points.flush_if_due()

    asyncio.run(two_articles_during_one_flush())
    assert flushed == [sorted(files("a")), sorted(files("b"))]


# ----------------------------------------------------------------------------- the flush


def written_files(tmp_path: Path) -> list[Path]:
    paths = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        for name in ("a.html", "a.md"):
            write_module.atomic_write_text(tmp_path / folder / name, f"{folder} {name}\n", durable=False)
            paths.append(tmp_path / folder / name)
    return paths


def test_syncfs_is_called_once_per_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []

    def syncfs(fd: int) -> int:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return 0

    monkeypatch.setattr(write_module, "_syncfs", lambda: syncfs)
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("no fsync where syncfs does it"))
    flush_to_disk(written_files(tmp_path))
    assert synced == [str(tmp_path / "one")], "both folders are on one file system: one call"


def test_a_failing_syncfs_is_an_error_naming_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def syncfs(fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(write_module, "_syncfs", lambda: syncfs)
    with pytest.raises(OSError) as raised:
        flush_to_disk(written_files(tmp_path))
    assert raised.value.errno == errno.EIO and raised.value.filename == str(tmp_path / "one")


def test_without_syncfs_each_file_and_each_folder_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync, fsynced = os.fsync, []

    def fsync(fd: int) -> None:
        fsynced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(write_module, "_syncfs", lambda: None)
    monkeypatch.setattr(os, "fsync", fsync)
    paths = written_files(tmp_path)
    flush_to_disk(paths)
    assert sorted(fsynced) == sorted([*map(str, paths), str(tmp_path / "one"), str(tmp_path / "two")])


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="syncfs is Linux's")
def test_this_system_has_syncfs_and_it_flushes_written_files(tmp_path: Path) -> None:
    assert write_module._syncfs() is not None
    flush_to_disk(written_files(tmp_path))  # the real call: an error would raise


# ----------------------------------------------------------------------------- torn pages


def test_pages_cut_short_emptied_or_zero_filled_are_not_whole(tmp_path: Path) -> None:
    site = SiteInfo()
    written = publish_article(tmp_path, make_analysis(), site, durable=False)
    folder = Path(written.outputs[0]).parent
    assert pages_whole(folder)
    for name in ("article.html", "article.md"):
        path = folder / name
        whole = path.read_bytes()
        cuts = sorted({0, 1, 4096, len(whole) // 2, len(whole) - 2, len(whole) - 1} - {len(whole)})
        for cut in cuts:
            path.write_bytes(whole[:cut])
            assert not pages_whole(folder), (name, cut)
        path.write_bytes(b"\0" * len(whole))
        assert not pages_whole(folder), (name, "zeros")
        path.unlink()
        assert not pages_whole(folder), (name, "missing")
        path.write_bytes(whole)
        assert pages_whole(folder)


def test_every_fixture_article_and_hostile_text_is_written_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = run_replay([ARTICLES], out, CountingModel())
    assert report.counts["ok"] == 13
    folders = sorted((out / "articles").iterdir())
    assert len(folders) == 13 and all(pages_whole(folder) for folder in folders)
    document = analysis_document(title=HOSTILE, source=HOSTILE)
    document["en"] = document["zh"] = hostile_section(PAYLOADS)
    document["tags"] = [{"en": payload, "zh": payload} for payload in PAYLOADS]
    written = publish_article(tmp_path / "hostile", Analysis.model_validate(document), SiteInfo())
    assert pages_whole(Path(written.outputs[0]).parent)


# ----------------------------------------------------------------------------- the runner


def run_replay(paths: list[Path], out: Path, model: ChatModel, settings: Settings | None = None) -> RunReport:
    settings = settings or Settings(check_processes=1)
    journal = JournaledModel(model, out / JOURNAL_DIR)
    runner = Runner(settings, journal, PromptBook(settings), PlainProgress(io.StringIO()), journal)
    return asyncio.run(runner.run(paths, RunOptions(out=out, mode="replay")))


def journal_files(out: Path) -> list[Path]:
    return sorted((out / JOURNAL_DIR).rglob("*.json")) if (out / JOURNAL_DIR).exists() else []


def test_answers_are_let_go_only_once_their_articles_files_are_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    flushed: set[str] = set()
    flushes: list[bool] = []  # for each flush: whether the run's report was written before it
    let_go: dict[str, bool] = {}  # article id -> its three files were flushed when it was first let go

    def flush(paths: Iterable[str | Path]) -> None:
        paths = [str(path) for path in paths]
        flush_to_disk(paths)
        flushed.update(paths)
        flushes.append((out / "run-report.json").exists())

    real_forget = JournaledModel.forget

    def forget(self: JournaledModel, article_id: str, calls: list[str] | None = None) -> None:
        folder = out / "articles" / article_id
        let_go.setdefault(article_id, all(str(folder / name) in flushed for name in ARTICLE_FILES))
        real_forget(self, article_id, calls)

    monkeypatch.setattr(checkpoints_module, "flush_to_disk", flush)
    monkeypatch.setattr(checkpoints_module, "CHECKPOINT_ARTICLES", 4)
    monkeypatch.setattr(JournaledModel, "forget", forget)
    report = run_replay([ARTICLES], out, CountingModel())
    assert report.counts["ok"] == 13
    assert len(flushes) >= 4, "checkpoints every four articles, and one at the end"
    assert flushes == [False] * len(flushes), "every flush comes before the report"
    assert len(let_go) == 13 and all(let_go.values()), let_go
    assert journal_files(out) == []


def test_an_article_torn_by_a_power_cut_before_its_checkpoint_is_redone_from_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The power goes after the articles were written but before their checkpoint: their answers
    are still journaled, and some of their files are torn. The next run redoes those articles
    from the journal without a model call, and skips the whole ones."""
    out = tmp_path / "out"
    with monkeypatch.context() as power_cut:  # the checkpoint never let the answers go
        power_cut.setattr(JournaledModel, "forget", lambda self, article_id, calls=None: None)
        assert run_replay([ARTICLES], out, CountingModel()).counts["ok"] == 13
    assert len(journal_files(out)) == 26
    folders = sorted((out / "articles").iterdir())
    torn = {folders[0].name: "article.html", folders[1].name: "article.md", folders[2].name: "analysis.json"}
    for article_id, name in torn.items():
        path = out / "articles" / article_id / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if name != "article.md" else b"")

    model = CountingModel()
    report = run_replay([ARTICLES], out, model)
    assert model.calls == [], "the torn articles' answers come from the journal"
    statuses = {entry.id: entry.status for entry in report.articles}
    assert {i for i, status in statuses.items() if status == "ok"} == set(torn)
    assert list(statuses.values()).count("skipped") == 10
    assert all(pages_whole(folder) for folder in folders)
    assert journal_files(out) == []


def test_a_flush_the_disk_refuses_stops_the_run_from_starting_articles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    flushes: list[int] = []

    def flush(paths: Iterable[str | Path]) -> None:
        flushes.append(len(list(paths)))
        if len(flushes) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        flush_to_disk(paths)

    monkeypatch.setattr(checkpoints_module, "flush_to_disk", flush)
    monkeypatch.setattr(checkpoints_module, "CHECKPOINT_ARTICLES", 2)
    report = run_replay([ARTICLES], out, CountingModel(), Settings(check_processes=1, concurrency=1))
    ok = report.counts["ok"]  # the two, and one started while the flush failed
    assert ok in (2, 3) and report.counts["not_started"] == 13 - ok, report.counts
    assert report.halted == f"cannot write to {out}: {os.strerror(errno.EIO)}"
    assert report.exit_code == 1
    assert flushes[0] == 6 and sum(flushes[1:]) == 3 * ok, "every article written is flushed again, and kept"
    assert journal_files(out) == [], "then their answers are let go"


def test_answers_a_stopped_run_never_reported_are_counted_by_the_run_that_skips_their_article(
    tmp_path: Path,
) -> None:
    """A run killed after it wrote its articles and before their checkpoint leaves their answers
    journaled, paid by it and in no report. The run that skips those articles counts them, once."""
    out = tmp_path / "out"
    settings = Settings(check_processes=1, prices={"gpt-4.1-mini": {"input": 0.4, "output": 1.6}})
    with pytest.MonkeyPatch.context() as killed:  # its checkpoint never came, nor (here) its report
        killed.setattr(JournaledModel, "forget", lambda self, article_id, calls=None: None)
        first = run_replay([ARTICLES], out, CountingModel(), settings)
    paid = first.usage
    assert paid.prompt_tokens > 0 and len(journal_files(out)) == 26

    second = run_replay([ARTICLES], out, CountingModel(), settings)
    assert second.counts["skipped"] == 13
    assert second.usage == paid and second.cost_usd == first.cost_usd, "every answer counted, once"
    for entry in second.articles:
        assert (
            entry.usage.prompt_tokens > 0
            and entry.cost_usd
            and "stopped before its report" in entry.notes[-1]
        )
    third = run_replay([ARTICLES], out, CountingModel(), settings)
    assert third.counts["skipped"] == 13 and third.usage.prompt_tokens == 0 and third.cost_usd is None


def test_a_run_stopped_during_a_checkpoint_reports_every_article_whose_answers_it_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a checkpoint flushes: the article that brought the checkpoint about is in the
    report, since its answers are let go by the flush at the end of the run."""
    out = tmp_path / "out"
    flushing, release = threading.Event(), threading.Event()
    let_go: list[str] = []

    def flush(paths: Iterable[str | Path]) -> None:
        flushing.set()
        release.wait(timeout=30)
        flush_to_disk(paths)

    real_forget = JournaledModel.forget

    def forget(self: JournaledModel, article_id: str, calls: list[str] | None = None) -> None:
        let_go.append(article_id)
        real_forget(self, article_id, calls)

    monkeypatch.setattr(checkpoints_module, "flush_to_disk", flush)
    monkeypatch.setattr(checkpoints_module, "CHECKPOINT_ARTICLES", 3)
    monkeypatch.setattr(JournaledModel, "forget", forget)
    settings = Settings(check_processes=1, concurrency=1)
    journal = JournaledModel(CountingModel(), out / JOURNAL_DIR)
    runner = Runner(settings, journal, PromptBook(settings), PlainProgress(io.StringIO()), journal)

    async def stop_during_the_first_checkpoint() -> None:
        run = asyncio.create_task(runner.run([ARTICLES], RunOptions(out=out, mode="replay")))
        while not flushing.is_set():
            await asyncio.sleep(0.01)
        run.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await run

    asyncio.run(stop_during_the_first_checkpoint())
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    reported = {entry["id"] for entry in report["articles"] if entry["status"] == "ok"}
    assert len(let_go) >= 3 and set(let_go) <= reported, (let_go, reported)
    kept = {path.parent.name for path in journal_files(out)}  # of an article stopped in flight
    assert not kept & reported and not kept & set(let_go)
