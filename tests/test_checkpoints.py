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
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

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


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files and folders fsynced from now on (their names when fsynced)."""
    real_fsync, fsynced = os.fsync, []

    def fsync(fd: int) -> None:
        fsynced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return fsynced


def test_without_syncfs_each_file_and_each_folder_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_module, "_syncfs", lambda: None)
    fsynced = record_fsyncs(monkeypatch)
    paths = written_files(tmp_path)
    flush_to_disk(paths)
    folders = [str(tmp_path / "one"), str(tmp_path / "two"), str(tmp_path)]  # and their parent
    assert sorted(fsynced) == sorted([*map(str, paths), *folders])


@pytest.mark.parametrize(("system", "release", "usable"), [("linux", "5.4.0-150-generic", False),
    ("linux", "5.8.0", True), ("linux", "6.18.44-fc", True), ("darwin", "23.1.0", False)])  # fmt: skip
def test_syncfs_is_used_only_where_it_reports_failed_writes(
    monkeypatch: pytest.MonkeyPatch, system: str, release: str, usable: bool
) -> None:
    """Linux reports a failed write back through syncfs only since 5.8: before, per-file fsync."""
    real_uname = os.uname()
    monkeypatch.setattr(sys, "platform", system)
    monkeypatch.setattr(os, "uname", lambda: SimpleNamespace(release=release))
    write_module._syncfs.cache_clear()
    try:
        assert (write_module._syncfs() is not None) == (usable and real_uname.sysname == "Linux")
    finally:
        write_module._syncfs.cache_clear()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="syncfs is Linux's")
def test_this_system_has_syncfs_and_it_flushes_written_files(tmp_path: Path) -> None:
    assert write_module._syncfs() is not None
    flush_to_disk(written_files(tmp_path))  # the real call: an error would raise


def test_a_durable_write_puts_the_file_and_its_name_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsynced = record_fsyncs(monkeypatch)
    write_module.atomic_write_text(tmp_path / "note.json", "{}\n")
    assert fsynced[0].startswith(str(tmp_path / ".note.json.")) and fsynced[1:] == [str(tmp_path)]
    fsynced.clear()
    write_module.atomic_write_chunks(tmp_path / "report.json", ["{", "}\n"])
    assert fsynced[0].startswith(str(tmp_path / ".report.json.")) and fsynced[1:] == [str(tmp_path)]
    fsynced.clear()
    write_module.atomic_write_text(tmp_path / "page.html", "<html></html>", durable=False)
    assert fsynced == [], "an article's page waits for its checkpoint"


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


class FlushWatch:
    """The real flush and journal, watched: which files were flushed, whether the run's report
    existed at each flush, and for each article let go whether its files were flushed by then."""

    def __init__(self, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.flushed: set[str] = set()
        self.flushes: list[bool] = []
        self.let_go: dict[str, bool] = {}
        real_forget = JournaledModel.forget

        def flush(paths: Iterable[str | Path]) -> None:
            paths = [str(path) for path in paths]
            flush_to_disk(paths)
            self.flushed.update(paths)
            self.flushes.append((out / "run-report.json").exists())

        def forget(journal: JournaledModel, article_id: str, calls: list[str] | None = None) -> None:
            folder = out / "articles" / article_id
            flushed = all(str(folder / name) in self.flushed for name in ARTICLE_FILES)
            self.let_go.setdefault(article_id, flushed)
            real_forget(journal, article_id, calls)

        monkeypatch.setattr(checkpoints_module, "flush_to_disk", flush)
        monkeypatch.setattr(JournaledModel, "forget", forget)


def journal_files(out: Path) -> list[Path]:
    return sorted((out / JOURNAL_DIR).rglob("*.json")) if (out / JOURNAL_DIR).exists() else []


def test_answers_are_let_go_only_once_their_articles_files_are_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    watch = FlushWatch(out, monkeypatch)
    monkeypatch.setattr(checkpoints_module, "CHECKPOINT_ARTICLES", 4)
    report = run_replay([ARTICLES], out, CountingModel())
    assert report.counts["ok"] == 13
    assert len(watch.flushes) >= 4, "checkpoints every four articles, and one at the end"
    assert watch.flushes == [False] * len(watch.flushes), "every flush comes before the report"
    assert len(watch.let_go) == 13 and all(watch.let_go.values()), watch.let_go
    assert journal_files(out) == []


def no_forget(self: JournaledModel, article_id: str, calls: list[str] | None = None) -> None:
    """The checkpoint that lets an article's answers go never came (kill -9, a power cut)."""


def tear(out: Path) -> dict[str, str]:
    """Three articles' files as a power cut can leave them: a page cut short, a Markdown file cut
    after one of its lines (no check of the file alone sees it), an analysis.json cut in half."""
    folders = sorted((out / "articles").iterdir())
    torn = {folders[0].name: "article.html", folders[1].name: "article.md", folders[2].name: "analysis.json"}
    for article_id, name in torn.items():
        path = out / "articles" / article_id / name
        whole = path.read_bytes()
        cut = whole.rstrip(b"\n").rfind(b"\n") + 1 if name == "article.md" else len(whole) // 2
        path.write_bytes(whole[:cut])
    assert pages_whole(folders[1]), "the cut Markdown file looks whole"
    return torn


def files_with_their_time_masked(out: Path) -> dict[Path, str]:
    """Every article file, its analysis' generation time masked (a redone article gets its own)."""
    files = {}
    for folder in sorted((out / "articles").iterdir()):
        created = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))["generation"][
            "created_at"
        ]
        for path in sorted(folder.iterdir()):
            files[path] = path.read_text(encoding="utf-8").replace(created, "<created_at>")
    return files


def test_articles_whose_answers_are_still_journaled_are_redone_from_them_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The power goes after the articles were written but before their checkpoint: their answers
    are still journaled, and some of their files are torn, one in a way no check sees. The next
    run redoes every such article from the journal, without a model call."""
    out = tmp_path / "out"
    with monkeypatch.context() as power_cut:
        power_cut.setattr(JournaledModel, "forget", no_forget)
        assert run_replay([ARTICLES], out, CountingModel()).counts["ok"] == 13
    assert len(journal_files(out)) == 26
    whole = files_with_their_time_masked(out)
    tear(out)

    model = CountingModel()
    report = run_replay([ARTICLES], out, model)
    assert model.calls == [], "every answer comes from the journal"
    assert report.counts["ok"] == 13
    assert report.usage.prompt_tokens == 0, "reported by the run that made the calls, not again"
    assert files_with_their_time_masked(out) == whole, "every file whole again"
    assert journal_files(out) == []


def test_when_the_journal_cannot_answer_whole_articles_are_kept_and_their_answers_go_once_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers left by a run killed before it recorded its articles, which no longer answer
    today's requests: the articles that look whole are skipped, counting the cost no report
    holds, and their answers go only once their files are flushed; the torn ones are asked again."""
    out = tmp_path / "out"
    prices = {"gpt-4.1-mini": {"input": 0.4, "output": 1.6}}
    with monkeypatch.context() as killed:
        killed.setattr(JournaledModel, "forget", no_forget)
        killed.setattr(JournaledModel, "account", lambda self, article_id: None)
        first = run_replay([ARTICLES], out, CountingModel(), Settings(check_processes=1, prices=prices))
    torn = tear(out)
    for path in journal_files(out):  # answers to requests other than today's
        document = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**document, "request_sha256": "0" * 64}), encoding="utf-8")
    watch = FlushWatch(out, monkeypatch)
    settings = Settings(check_processes=1, prices=prices)
    model = CountingModel()
    second = run_replay([ARTICLES], out, model, settings)
    asked = {call.split("/")[0] for call in model.calls}
    md_torn = next(article_id for article_id, name in torn.items() if name == "article.md")
    assert asked == set(torn) - {md_torn}, "only the articles seen torn are asked again"
    skipped = [entry for entry in second.articles if entry.status == "skipped"]
    assert len(skipped) == 11 and all(entry.usage.prompt_tokens > 0 for entry in skipped)
    assert all("stopped before its report" in entry.notes[-1] for entry in skipped)
    assert all(watch.let_go.values()) and len(watch.let_go) == 13, watch.let_go
    assert journal_files(out) == []
    first_cost = {entry.id: entry.cost_usd for entry in first.articles}
    assert all(entry.cost_usd == first_cost[entry.id] for entry in skipped), "counted once, in full"

    third = run_replay([ARTICLES], out, CountingModel(), settings)
    assert third.counts["skipped"] == 13 and third.usage.prompt_tokens == 0


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


def test_answers_a_stopped_run_never_reported_are_counted_by_the_run_that_uses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after it wrote its articles and before it recorded them leaves their answers
    journaled, paid by it and in no report or log. The run that redoes them counts them, once."""
    out = tmp_path / "out"
    settings = Settings(check_processes=1, prices={"gpt-4.1-mini": {"input": 0.4, "output": 1.6}})
    with monkeypatch.context() as killed:
        killed.setattr(JournaledModel, "forget", no_forget)
        killed.setattr(JournaledModel, "account", lambda self, article_id: None)
        first = run_replay([ARTICLES], out, CountingModel(), settings)
    assert first.usage.prompt_tokens > 0 and len(journal_files(out)) == 26

    model = CountingModel()
    second = run_replay([ARTICLES], out, model, settings)
    assert model.calls == [] and second.counts["ok"] == 13
    assert second.usage == first.usage and second.cost_usd == first.cost_usd, "every answer counted, once"
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


def test_a_final_flush_the_disk_refuses_is_reported_and_the_next_run_checks_the_articles_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"

    def refused(paths: Iterable[str | Path]) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as failing_disk:
        failing_disk.setattr(checkpoints_module, "flush_to_disk", refused)
        failing_disk.setattr(checkpoints_module, "CHECKPOINT_SECONDS", 3600.0)  # only the final flush
        report = run_replay([ARTICLES], out, CountingModel())
    assert report.counts["ok"] == 13 and report.flush_error == os.strerror(errno.EIO)
    assert report.exit_code == 1
    written = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    assert written["flush_error"] == os.strerror(errno.EIO), "the report is still written"
    kept = journal_files(out)
    assert len(kept) == 26, "the answers stay: the files are not known to be on disk"
    assert all(json.loads(path.read_text(encoding="utf-8"))["accounted"] for path in kept)

    model = CountingModel()
    again = run_replay([ARTICLES], out, model)
    assert model.calls == [] and again.counts["ok"] == 13, "redone from the journal"
    assert again.usage.prompt_tokens == 0 and again.flush_error is None, "counted by the first run only"
    assert journal_files(out) == []
