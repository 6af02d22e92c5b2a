"""Production runs (issue 4): the lock, kill -9 and resume, the call journal, the budget, shards,
logs and reports, rate limits, faults at concurrency and the Batch API.

Most tests run the real `newsdesk` CLI in a subprocess against the loopback OpenAI-compatible
server serving the fixture recordings, as in tests/test_live.py.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from rich.console import Console
from typer.testing import CliRunner

from pipeline import runner as runner_module
from pipeline import workers as workers_module
from pipeline.batch import (
    ENDPOINT,
    STATE,
    _chunks,
    _pending_requests,
    _read_state,
    _save_state,
    batch_line,
    custom_id,
)
from pipeline.cli import app
from pipeline.config import Settings, resolve_settings
from pipeline.console import PlainProgress, RichProgress
from pipeline.errors import ModelUnavailable
from pipeline.ingest import load_articles
from pipeline.ingest.article import Article
from pipeline.lock import NOTE_NAME, RunLock
from pipeline.model import live as live_module
from pipeline.model import ratelimit
from pipeline.model.base import CallKey, ModelReply, ModelRequest
from pipeline.model.cache import JOURNAL_DIR, JournaledModel
from pipeline.model.live import LiveModel
from pipeline.model.ratelimit import RateGate
from pipeline.model.replay import ReplayModel, request_sha256
from pipeline.prompts import PromptBook
from pipeline.runner import Runner, RunOptions
from pipeline.schema import Analysis, ModelPart
from pipeline.testing import server as server_module
from pipeline.testing.server import (
    FakeOpenAIServer,
    FaultPlan,
    RecordedRequest,
    Reply,
    find_recording,
    load_recordings,
)
from pipeline.validate.findings import Finding
from pipeline.workers import InlineWorkers
from tests.conftest import ARTICLES, RECORDINGS, ROOT, cli_env, run_newsdesk

API_KEY = "ndk-prod-9876543210ZYXWVUTSRQPONMLKJIHGFEDCBA"  # not sk-shaped: only real redaction hides it
CHAT = "/v1/chat/completions"
PRICES = '[prices."gpt-4.1-mini"]\ninput = 0.4\noutput = 1.6\n'
ALL_STATUSES = {"ok", "failed", "skipped", "duplicate", "not_started"}


# ----------------------------------------------------------------------------- helpers


def newsdesk(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_newsdesk(*args, api_key=API_KEY, timeout=timeout)


def report_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    return data


def chats(server: FakeOpenAIServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.method == "POST" and r.path == CHAT]


def posts(server: FakeOpenAIServer, path: str) -> list[RecordedRequest]:
    return [r for r in server.requests if r.method == "POST" and r.path == path]


def write_config(folder: Path, text: str) -> Path:
    path = folder / "newsdesk.toml"
    path.write_text(text, encoding="utf-8")
    return path


def fixture_index() -> dict[str, Article]:
    """The 13 fixture articles by fence code (content_sha256[:12], as the prompt fences them)."""
    articles = [a for a in load_articles([ARTICLES]) if isinstance(a, Article)]
    assert len(articles) == 13
    return {a.content_sha256[:12]: a for a in articles}


def fence_of(body: Any, fences: dict[str, Article]) -> str:
    text = json.dumps(body.get("messages") if isinstance(body, dict) else body, ensure_ascii=False)
    found = [fence for fence in fences if f"BEGIN ARTICLE {fence}" in text]
    assert len(found) == 1, "every request fences exactly one fixture article"
    return found[0]


def call_of(body: dict[str, Any]) -> str:
    name = body["response_format"]["json_schema"]["name"]
    return {"english_answer": "en", "chinese_answer": "zh"}[name]


def answer_from_recordings() -> Callable[[dict[str, Any]], Reply]:
    recordings = load_recordings(RECORDINGS)

    def answer(body: dict[str, Any]) -> Reply:
        recording = find_recording(recordings, body["messages"])
        assert recording is not None
        response = copy.deepcopy(recording.response)
        response["model"] = body["model"]
        return Reply(body=response)

    return answer


def files_under(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY) as running:
        yield running


# ----------------------------------------------------------------------------- 1. the lock


def test_a_second_run_on_a_locked_folder_exits_3_at_once_naming_the_holder(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with RunLock(out, "test-run"):
        note = json.loads((out / NOTE_NAME).read_text(encoding="utf-8"))
        started = time.monotonic()
        result = newsdesk("run", str(ARTICLES), "--out", str(out), "--base-url", server.base_url)
        elapsed = time.monotonic() - started
        note_after = json.loads((out / NOTE_NAME).read_text(encoding="utf-8"))
    assert result.returncode == 3, result.stderr
    assert elapsed < 10
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert f"pid {os.getpid()}" in lines[0]
    assert socket.gethostname() in lines[0]
    assert str(note["started_at"]) in lines[0]
    assert note_after == note, "the refused run left the holder's note alone"
    assert chats(server) == [], "a refused run calls no model"
    assert not (out / "logs").exists() and not (out / "run-report.json").exists()


def test_a_stale_lock_note_of_a_dead_run_is_taken_over_with_a_warning(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    previous = {
        "pid": dead.pid,
        "host": "crashed-host",
        "run_id": "old-run",
        "started_at": "2020-01-02T03:04:05+00:00",
    }
    (out / NOTE_NAME).write_text(json.dumps(previous) + "\n", encoding="utf-8")
    article = ARTICLES / "zh-rrr-cut.txt"
    result = newsdesk("run", str(article), "--out", str(out), "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "took over" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning"), result.stderr
    assert str(dead.pid) in warnings[0]
    run_id = report_of(out)["run_id"]
    events = [json.loads(line) for line in (out / "logs" / f"{run_id}.jsonl").read_text("utf-8").splitlines()]
    taken = [e for e in events if e["event"] == "lock_taken_over"]
    assert len(taken) == 1 and taken[0]["previous"] == previous
    assert not (out / NOTE_NAME).exists(), "the finished run removed its own note"


# ----------------------------------------------------------------------------- 2. kill -9 and resume


class GatedScript:
    """Answers the first three articles fully and the fourth's `en` call; blocks everything else.

    That stops a concurrency-2 run in a known state: three articles written, one with its `en`
    answer in the journal, and every in-flight request waiting on the server (no write under way).
    """

    def __init__(self, fences: dict[str, Article]) -> None:
        self.fences = fences
        self.answer = answer_from_recordings()
        self.release = threading.Event()
        self.order: list[str] = []
        self.waiting = 0
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        fence = fence_of(body, self.fences)
        with self._lock:
            if fence not in self.order:
                self.order.append(fence)
            rank = self.order.index(fence)
            allowed = rank < 3 or (rank == 3 and call_of(body) == "en")
            if not allowed:
                self.waiting += 1
        if not allowed:
            self.release.wait(timeout=30)
            return Reply.error(503, "the server is going away", error_type="server_error")
        return self.answer(body)


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the run to reach its state"
        time.sleep(0.02)


def test_kill_9_leaves_no_torn_file_and_the_rerun_pays_only_for_what_is_missing(tmp_path: Path) -> None:
    fences = fixture_index()
    out = tmp_path / "out"
    args = ("run", str(ARTICLES), "--out", str(out), "--concurrency", "2")
    script = GatedScript(fences)

    def finished() -> list[Path]:
        return sorted((out / "articles").glob("*/analysis.json"))

    def journaled() -> list[Path]:
        if not (out / JOURNAL_DIR).exists():
            return []
        return sorted(p for p in (out / JOURNAL_DIR).rglob("*.json") if not p.name.startswith("."))

    def journaled_unfinished() -> list[Path]:  # a finished article's answers stay until its files are on disk
        done = {path.parent.name for path in finished()}
        return [path for path in journaled() if path.parent.name not in done]

    with FakeOpenAIServer(script=script, api_key=API_KEY) as gated:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args, "--base-url", gated.base_url],
            cwd=ROOT, env=cli_env(API_KEY), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(
                lambda: len(finished()) == 3 and script.waiting == 3 and len(journaled_unfinished()) == 1
            )
            time.sleep(0.05)
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(timeout=10) == -signal.SIGKILL
            assert len(chats(gated)) == 10, "three articles, one en answer, three requests held"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            script.release.set()

    assert [p for p in out.rglob("*.tmp")] == [], "no temporary file survives"
    done_ids = set()
    for path in finished():
        analysis = Analysis.model_validate_json(path.read_text(encoding="utf-8"))
        assert (path.parent / "article.html").is_file() and (path.parent / "article.md").is_file()
        done_ids.add(analysis.article.id)
    for folder in (out / "articles").iterdir():
        assert (folder / "analysis.json").is_file() or not any(folder.iterdir()), folder
    order_ids = [fences[f].id for f in script.order]
    assert done_ids == set(order_ids[:3])
    half = fences[script.order[3]]
    (left,) = journaled_unfinished()
    assert left.relative_to(out / JOURNAL_DIR).as_posix() == f"{half.id}/en-0.json"
    assert {path.parent.name for path in journaled()} <= done_ids | {half.id}
    paid_by_the_killed_run = json.loads(left.read_text(encoding="utf-8"))["response"]["usage"]
    # a finished article's answers stay until its checkpoint, marked as reported (in the killed
    # run's log): the rerun redoes such an article from them, free, and counts nothing again
    kept = {path.parent.name for path in journaled()} - {half.id}
    for path in journaled():
        if path.parent.name in kept:
            assert json.loads(path.read_text(encoding="utf-8"))["accounted"] is True

    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY) as healthy:
        rerun = newsdesk(*args, "--base-url", healthy.base_url)
        requests = chats(healthy)
    assert rerun.returncode == 0, rerun.stderr
    assert "took over" in rerun.stderr, "the dead run's lock note was taken over"
    counts = report_of(out)["counts"]
    assert counts["ok"] + counts["skipped"] == 13
    assert counts["skipped"] == 3 - len(kept)
    missing = 13 - len(done_ids)
    assert len(requests) == 2 * missing - 1, "one call of the half-done article came from the journal"
    done_fences = {f for f, a in fences.items() if a.id in done_ids}
    asked = [(fence_of(r.body, fences), call_of(r.body)) for r in requests]
    assert not [pair for pair in asked if pair[0] in done_fences], "finished articles cost nothing"
    assert (half.content_sha256[:12], "en") not in asked
    assert (half.content_sha256[:12], "zh") in asked
    assert len(finished()) == 13
    assert [p for p in out.rglob("*.tmp")] == []
    assert journaled() == [], "the journal is cleared once every article is written"
    assert list((out / "runs").glob(".*")) == [], "the killed run's spool file is gone too"
    # the killed run paid for the en call and never reported it: the run that used it reports it
    zh = json.loads((RECORDINGS / half.id / "zh-0.json").read_text(encoding="utf-8"))["response"]["usage"]
    (entry,) = [e for e in report_of(out)["articles"] if e["id"] == half.id]
    assert entry["usage"]["prompt_tokens"] == paid_by_the_killed_run["prompt_tokens"] + zh["prompt_tokens"]
    for e in report_of(out)["articles"]:
        if e["id"] in done_ids:
            assert e["usage"]["prompt_tokens"] == 0, "what the killed run finished is counted in its log only"
            assert e["status"] == ("ok" if e["id"] in kept else "skipped")


def test_temporary_files_a_killed_run_left_are_removed_by_the_next(tmp_path: Path) -> None:
    """kill -9 mid-write leaves a hidden temporary file; the rerun that redoes the work removes it."""
    out = tmp_path / "out"
    replayed = ["run", str(ARTICLES / "zh-rrr-cut.txt"), "--out", str(out), "--replay", str(RECORDINGS)]
    assert CliRunner().invoke(app, replayed).exit_code == 0
    [folder] = (out / "articles").iterdir()
    (folder / "analysis.json").unlink()  # killed before its analysis.json: the article is redone
    left = [folder / ".article.html.li5e57wm.tmp", out / ".index.html.x1y2z3a4.tmp",
            out / "runs" / ".20261129T000000Z-abcdef.json.q9w8e7r6.tmp"]  # fmt: skip
    for path in left:
        path.write_text("half a page", encoding="utf-8")
    kept = out / ".someone-elses.tmp"
    kept.write_text("not ours", encoding="utf-8")
    assert CliRunner().invoke(app, replayed).exit_code == 0
    assert [p for p in left if p.exists()] == [] and kept.exists()
    assert (folder / "analysis.json").is_file()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_run_with_one_line_and_the_rerun_finishes_it(tmp_path: Path, stop: int) -> None:
    """Ctrl-C, or SIGTERM from `systemctl stop` or a scheduler's timeout."""
    fences = fixture_index()
    out = tmp_path / "out"
    args = ("run", str(ARTICLES), "--out", str(out), "--concurrency", "2")
    script = GatedScript(fences)
    with FakeOpenAIServer(script=script, api_key=API_KEY) as gated:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args, "--base-url", gated.base_url],
            cwd=ROOT, env=cli_env(API_KEY), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_until(lambda: len(list(out.glob("articles/*/analysis.json"))) == 3 and script.waiting == 3)
            process.send_signal(stop)
            _, stderr = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            script.release.set()
    assert process.returncode == 130
    assert stderr.splitlines()[-1] == (
        "Interrupted: the finished articles are written; run again to do the rest"
    ), stderr
    assert "Traceback" not in stderr and "exception" not in stderr
    assert list(out.rglob("*.tmp")) == [] and not (out / NOTE_NAME).exists(), "no temporary file, no lock"
    [log] = (out / "logs").glob("*.jsonl")
    assert json.loads(log.read_text(encoding="utf-8").splitlines()[-1])["event"] == "run_interrupted"
    assert list((out / "runs").glob(".*")) == [], "no spool file is left behind"
    report = report_of(out)  # what it did is reported, and the index lists what it finished
    assert report["counts"]["ok"] == 3 and report["halted"].startswith("interrupted")
    assert report["counts"]["not_started"] == 10, "the articles in flight and those never reached"
    assert sum(report["counts"].values()) == 13
    for entry in report["articles"]:
        assert entry["status"] == "ok" or "the run was interrupted" in entry["error"], entry
    assert (out / "index.html").read_text(encoding="utf-8").count('class="entry"') == 3

    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY) as healthy:
        rerun = newsdesk(*args, "--base-url", healthy.base_url)
    assert rerun.returncode == 0, rerun.stderr
    counts = report_of(out)["counts"]
    assert (counts["ok"], counts["skipped"]) == (10, 3)


def test_an_interrupted_run_stops_its_articles_before_closing_what_they_write_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C cancels the run while articles are in flight: they must be stopped before the
    report spool, the index and the workers are closed, or they finish into closed files."""
    out = tmp_path / "out"
    in_checks: list[str] = []
    pending_at_close: list[asyncio.Task[Any]] = []

    class HeldWorkers(InlineWorkers):
        async def check(self, part: ModelPart, article: Article) -> list[Finding]:
            in_checks.append(article.id)
            await asyncio.Event().wait()  # held until cancelled
            raise AssertionError("unreachable")

        def close(self) -> None:
            articles = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "Runner._one"]
            pending_at_close.extend(t for t in articles if not t.done())

    settings = Settings(concurrency=2, check_processes=1)
    book = PromptBook(settings)
    monkeypatch.setattr(runner_module, "new_workers", lambda context, processes: HeldWorkers(context))
    terminal = Console(file=io.StringIO(), force_terminal=True, width=100)
    runner = Runner(settings, ReplayModel(RECORDINGS), book, RichProgress(terminal))

    async def interrupt() -> None:
        run = asyncio.create_task(runner.run([ARTICLES], RunOptions(out=out, mode="replay")))
        while len(in_checks) < 2:  # both slots busy: the runner waits for a free one
            await asyncio.sleep(0.01)
        run.cancel()  # what Ctrl-C does to the run
        with pytest.raises(asyncio.CancelledError):
            await run

    asyncio.run(interrupt())
    assert len(in_checks) == 2
    assert pending_at_close == [], "no article was still running when the run closed its files"
    assert list(out.rglob("*.tmp")) == [] and list((out / "runs").glob(".*")) == []
    screen = terminal.file.getvalue()  # type: ignore[attr-defined]
    assert screen.count("\x1b[?25l") == 1 and screen.count("\x1b[?25h") == 1, "the cursor is shown again"


@pytest.mark.parametrize("reading_time", [5.0, 0.0], ids=["inputs-read", "no-time-to-read-them"])
def test_an_interrupted_runs_report_accounts_for_every_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reading_time: float
) -> None:
    """Interrupted with two articles in flight: those two and the articles it never reached are
    not_started, an unreadable input it never reached failed, a copy of an article a duplicate.
    Without time to read the inputs it never reached, each file not read is one not_started."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(ARTICLES, inputs)
    (inputs / "zz-broken.txt").write_bytes(b"\x00\x01\x02binary")
    shutil.copyfile(inputs / "energy-iron-air-storage.txt", inputs / "zz-copy.txt")
    in_checks: list[str] = []

    class HeldWorkers(InlineWorkers):
        async def check(self, part: ModelPart, article: Article) -> list[Finding]:
            in_checks.append(article.id)
            await asyncio.Event().wait()  # held until cancelled
            raise AssertionError("unreachable")

    settings = Settings(concurrency=2, check_processes=1)
    monkeypatch.setattr(runner_module, "new_workers", lambda context, processes: HeldWorkers(context))
    monkeypatch.setattr(runner_module, "UNREACHED_SECONDS", reading_time)
    runner = Runner(settings, ReplayModel(RECORDINGS), PromptBook(settings), PlainProgress(io.StringIO()))

    async def interrupt() -> None:
        run = asyncio.create_task(runner.run([inputs], RunOptions(out=out, mode="replay")))
        while len(in_checks) < 2:
            await asyncio.sleep(0.01)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run

    asyncio.run(interrupt())
    report = report_of(out)
    statuses = {Path(entry["source"]).name: entry["status"] for entry in report["articles"]}
    entries = 15 if reading_time else 14  # unread, wire-briefs.jsonl's two articles are one file
    assert len(statuses) == entries and sum(report["counts"].values()) == entries
    if reading_time:
        assert statuses["zz-broken.txt"] == "failed" and statuses["zz-copy.txt"] == "duplicate"
        assert report["counts"]["not_started"] == 13
    else:  # one input read after the interruption, the others listed unread
        unread = [
            e for e in report["articles"] if e["id"] is None and "before it read this file" in e["error"]
        ]
        assert len(unread) >= 10 and {"zz-broken.txt", "zz-copy.txt"} <= {
            Path(e["source"]).name for e in unread
        }
    in_flight = {e["id"] for e in report["articles"] if e["id"] in in_checks}
    assert in_flight == set(in_checks), "the articles stopped in flight are in the report"


def test_a_dry_run_estimates_every_request_and_names_each_unreadable_input(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(ARTICLES, inputs)
    (inputs / "broken.txt").write_bytes(b"\x00\x01\x02binary")
    result = run_newsdesk("run", inputs, "--dry-run", "--out", out)
    assert result.returncode == 1, "an unreadable input fails a dry run as it fails a run"
    failed = [line for line in result.stdout.splitlines() if line.startswith("failed")]
    assert failed == [f"failed    {inputs / 'broken.txt'}: binary file, not text"]
    assert "dry run: 13 article(s), 1 unreadable input(s), 26 request(s)" in result.stdout
    assert not out.exists(), "a dry run writes nothing and calls no model"
    clean = run_newsdesk("run", ARTICLES, "--dry-run", "--out", out)
    assert clean.returncode == 0, clean.stderr
    assert "dry run: 13 article(s), 0 unreadable input(s), 26 request(s)" in clean.stdout


@pytest.mark.parametrize("where", ["same", "input-inside"])
def test_an_output_folder_that_is_or_holds_an_input_is_refused_before_anything_is_written(
    tmp_path: Path, where: str
) -> None:
    """Else the run reads its own log lines as articles and logs each failure: a growing loop."""
    inputs = tmp_path / "in"
    shutil.copytree(ARTICLES, inputs)
    out, given = (inputs, inputs) if where == "same" else (tmp_path, inputs)
    before = sorted(tmp_path.rglob("*"))
    for extra in ([], ["--dry-run"]):
        result = run_newsdesk("run", given, "--replay", RECORDINGS, "--out", out, *extra, timeout=30)
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"Error: --out {out} ") and "write the outputs to another folder" in line
    assert sorted(tmp_path.rglob("*")) == before, "no lock, log or report was written"


@pytest.mark.parametrize("folder", ["logs", "runs", "articles"])
def test_an_output_subfolder_that_cannot_be_written_stops_the_run_at_once_naming_it(
    tmp_path: Path, folder: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / folder).write_text("a file where a folder should be", encoding="utf-8")
    result = run_newsdesk("run", ARTICLES, "--replay", RECORDINGS, "--out", out)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"Error: cannot write to {out / folder} in the output folder: File exists; make it a writable folder"
    ]
    assert not (out / "run-report.json").exists() and not (out / NOTE_NAME).exists(), "nothing ran"


def test_an_output_folder_inside_the_inputs_is_never_read_as_input(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(ARTICLES, inputs)
    out = inputs / "site"
    first = run_newsdesk("run", inputs, "--replay", RECORDINGS, "--out", out)
    assert first.returncode == 0, first.stderr
    again = run_newsdesk("run", inputs, "--replay", RECORDINGS, "--out", out)
    assert again.returncode == 0, again.stderr
    counts = report_of(out)["counts"]
    assert counts["skipped"] == 13 and sum(counts.values()) == 13
    dry = run_newsdesk("run", inputs, "--dry-run", "--out", out)
    assert dry.returncode == 0, dry.stdout
    assert "dry run: 13 article(s), 0 unreadable input(s), 26 request(s)" in dry.stdout
    settings = Settings()
    journal = JournaledModel(ReplayModel(RECORDINGS), out / JOURNAL_DIR)
    runner = Runner(settings, journal, PromptBook(settings), PlainProgress(io.StringIO()), journal)
    pending = _pending_requests(runner, runner.book, journal, [inputs], RunOptions(out=out))
    assert pending == [], "the Batch API would send nothing: every article is done, no page is an input"


# ----------------------------------------------------------------------------- 3. the call journal


def zh_refused_with_400() -> Callable[[dict[str, Any]], Reply]:
    """A server script: English answers from the recordings, a 400 for every Chinese call."""
    answer = answer_from_recordings()

    def zh_fails(body: dict[str, Any]) -> Reply:
        if call_of(body) == "zh":
            return Reply.error(400, "This model cannot answer in Chinese today.", code="invalid_value")
        return answer(body)

    return zh_fails


@pytest.mark.parametrize("spoil", ["rejected", "refused"])
def test_a_failed_article_is_retried_by_the_next_run_not_replayed_from_the_journal(
    tmp_path: Path, spoil: str
) -> None:
    """The Chinese answers fail every check (or the model refuses): the article fails. The next
    run must ask for them again rather than replay the same answers from the journal and fail
    the same way every night; the accepted English answer is not paid for again."""
    article = ARTICLES / "energy-iron-air-storage.txt"
    out = tmp_path / "out"
    answer = answer_from_recordings()

    def zh_spoiled(body: dict[str, Any]) -> Reply:
        if call_of(body) != "zh":
            return answer(body)
        reply = copy.deepcopy(answer(body).body)
        message = reply["choices"][0]["message"]
        if spoil == "rejected":
            message["content"] = "Sorry, no JSON today."
        else:
            message["content"], message["refusal"] = None, "I cannot help with that."
        return Reply(body=reply)

    with FakeOpenAIServer(script=zh_spoiled, api_key=API_KEY) as broken:
        first = newsdesk("run", str(article), "--out", str(out), "--base-url", broken.base_url)
        failed_calls = sorted(call_of(r.body) for r in chats(broken))
    assert first.returncode == 1, first.stderr
    assert failed_calls == ["en", *["zh"] * (failed_calls.count("zh"))] and failed_calls.count("zh") >= 1
    entry = report_of(out)["articles"][0]
    assert entry["status"] == "failed"
    journal = out / JOURNAL_DIR / entry["id"]
    assert sorted(p.name for p in journal.iterdir()) == ["en-0.json"], "the spoiled answers are dropped"

    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY) as healthy:
        second = newsdesk("run", str(article), "--out", str(out), "--base-url", healthy.base_url)
        requests = chats(healthy)
    assert second.returncode == 0, second.stderr
    assert [call_of(r.body) for r in requests] == ["zh"], (
        "the Chinese call is asked again, the English is not"
    )
    assert report_of(out)["articles"][0]["status"] == "ok"


def test_force_redoes_an_article_from_scratch_not_from_its_journal(tmp_path: Path) -> None:
    article = ARTICLES / "energy-iron-air-storage.txt"
    out = tmp_path / "out"
    zh_fails = zh_refused_with_400()

    with FakeOpenAIServer(script=zh_fails, api_key=API_KEY) as broken:
        newsdesk("run", str(article), "--out", str(out), "--base-url", broken.base_url)
    assert [p.name for p in (out / JOURNAL_DIR).glob("*/*.json")] == ["en-0.json"]
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY) as healthy:
        forced = newsdesk("run", str(article), "--out", str(out), "--base-url", healthy.base_url, "--force")
        requests = chats(healthy)
    assert forced.returncode == 0, forced.stderr
    assert sorted(call_of(r.body) for r in requests) == ["en", "zh"], "--force asks both calls afresh"


def test_an_answered_call_of_a_failed_article_is_not_paid_for_again(tmp_path: Path) -> None:
    article = ARTICLES / "energy-iron-air-storage.txt"
    out = tmp_path / "out"
    zh_fails = zh_refused_with_400()

    with FakeOpenAIServer(script=zh_fails, api_key=API_KEY) as broken:
        first = newsdesk("run", str(article), "--out", str(out), "--base-url", broken.base_url)
        assert sorted(call_of(r.body) for r in chats(broken)) == ["en", "zh"]
    assert first.returncode == 1, first.stderr
    entry = report_of(out)["articles"][0]
    assert entry["status"] == "failed" and "400" in entry["error"]
    journal = out / JOURNAL_DIR / entry["id"]
    assert sorted(p.name for p in journal.iterdir()) == ["en-0.json"]

    config = write_config(tmp_path, PRICES)
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY) as healthy:
        second = newsdesk("run", str(article), "--out", str(out), "--base-url", healthy.base_url,
                          "--config", str(config))  # fmt: skip
        requests = chats(healthy)
    assert second.returncode == 0, second.stderr
    assert [call_of(r.body) for r in requests] == ["zh"], "only the failed call is asked again"
    assert not journal.exists(), "the article's journal is cleared after success"
    zh_recording = json.loads((RECORDINGS / entry["id"] / "zh-0.json").read_text(encoding="utf-8"))[
        "response"
    ]["usage"]
    report = report_of(out)
    assert report["usage"]["prompt_tokens"] == zh_recording["prompt_tokens"], (
        "the journaled call is not billed"
    )
    assert report["usage"]["completion_tokens"] == zh_recording["completion_tokens"]


# ----------------------------------------------------------------------------- 4. the budget


class CountingModel:
    """Answers every request with an empty reply and counts them."""

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        return ModelReply(content="{}", finish_reason="stop")

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("response", [[1, 2], "text", None])
def test_a_journal_file_edited_out_of_shape_means_the_call_is_made_again(
    tmp_path: Path, response: object
) -> None:
    inner = CountingModel()
    journal = JournaledModel(inner, tmp_path / JOURNAL_DIR)
    request = ModelRequest(CallKey("an-article-0123456789", "en", 0), {"model": "m", "messages": []}, "v1")
    journal.save(request, {"choices": [{"message": {"content": "{}"}}]})
    assert journal.has(request)
    path = tmp_path / JOURNAL_DIR / "an-article-0123456789" / "en-0.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**document, "response": response}), encoding="utf-8")
    assert not journal.has(request)
    asyncio.run(journal.complete(request))
    assert inner.calls == 1


def test_a_budget_starts_only_the_articles_it_can_pay_for(server: FakeOpenAIServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = write_config(tmp_path, PRICES)
    budget = 0.02
    result = newsdesk("run", str(ARTICLES), "--out", str(out), "--base-url", server.base_url,
                      "--config", str(config), "--budget-usd", str(budget))  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = report_of(out)
    counts = report["counts"]
    assert 0 < counts["ok"] < 13, counts
    assert counts["not_started"] > 0
    assert sum(counts.values()) == 13 and counts["failed"] == 0
    not_started = [a for a in report["articles"] if a["status"] == "not_started"]
    assert all("budget" in a["error"] for a in not_started)
    assert report["budget_usd"] == budget
    assert report["cost_usd"] is not None and 0 < report["cost_usd"] <= budget
    assert len(chats(server)) == 2 * counts["ok"], "articles not started made no call"
    assert "budget" in result.stderr


def test_a_budget_without_a_price_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", str(ARTICLES), "--out", str(out), "--replay", str(RECORDINGS), "--budget-usd", "1"]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "prices" in lines[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- 5. shards


def ok_ids(out: Path) -> set[str]:
    return {a["id"] for a in report_of(out)["articles"] if a["status"] == "ok"}


def replay_in_process(out: Path, *extra: str) -> int:
    result = CliRunner().invoke(
        app, ["run", str(ARTICLES), "--out", str(out), "--replay", str(RECORDINGS), *extra]
    )
    return result.exit_code


def test_shards_split_the_articles_into_disjoint_repeatable_shares(tmp_path: Path) -> None:
    shares: list[set[str]] = []
    for k in (1, 2, 3):
        out = tmp_path / f"shard{k}"
        assert replay_in_process(out, "--shard", f"{k}/3") == 0
        report = report_of(out)
        assert {a["status"] for a in report["articles"]} == {"ok"}, "out-of-shard inputs are not reported"
        shares.append(ok_ids(out))
        assert {p.name for p in (out / "articles").iterdir()} == shares[-1], "nothing written out of shard"
    all_ids = {a.id for a in fixture_index().values()}
    assert set().union(*shares) == all_ids
    assert sum(len(s) for s in shares) == 13, "no article is in two shards"
    assert all(shares), "each shard takes some of the 13 articles"

    again = tmp_path / "shard2-again"
    assert replay_in_process(again, "--shard", "2/3") == 0
    assert ok_ids(again) == shares[1]


@pytest.mark.parametrize("shard", ["0/3", "4/3", "x", "1/0", "2", "-1/3", "1/3/3", "\u00b2/3"])
def test_a_bad_shard_is_a_usage_error_naming_the_option(shard: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", str(ARTICLES), "--out", str(out), "--replay", str(RECORDINGS), "--shard", shard]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--shard" in lines[0], result.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- 6. logs and reports


def test_logs_reports_and_exit_codes_of_a_run_and_its_skipped_rerun(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(ARTICLES, inputs)
    (inputs / "zz-binary.txt").write_bytes(bytes(range(256)) * 8)
    out = tmp_path / "out"
    config = write_config(tmp_path, PRICES)
    result = newsdesk("run", str(inputs), "--out", str(out), "--base-url", server.base_url,
                      "--config", str(config))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "\x1b[" not in result.stderr, "plain lines off a terminal"

    report = report_of(out)
    run_id = report["run_id"]
    assert (out / "runs" / f"{run_id}.json").read_bytes() == (out / "run-report.json").read_bytes()
    assert report["counts"] == {"ok": 13, "failed": 1, "skipped": 0, "duplicate": 0, "not_started": 0}
    bad = [a for a in report["articles"] if a["status"] == "failed"]
    assert len(bad) == 1 and "zz-binary.txt" in bad[0]["source"] and bad[0]["error"]
    assert report["usage"]["prompt_tokens"] > 0 and report["usage"]["completion_tokens"] > 0
    assert isinstance(report["cost_usd"], float) and report["cost_usd"] > 0
    assert report["cost_usd"] == pytest.approx(sum(a["cost_usd"] or 0 for a in report["articles"]), abs=1e-5)
    assert isinstance(report["duration_s"], float) and report["duration_s"] >= 0
    plain = [line for line in result.stderr.splitlines() if line.split(" ", 1)[0] in ALL_STATUSES]
    assert len(plain) == 14, "one plain line per input"

    lines = (out / "logs" / f"{run_id}.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) and "ts" in e for e in events)
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_finished"
    assert names.count("article") == 14 and names.count("run_started") == 1
    assert (events[0]["inputs"], events[0]["files"]) == (14, 13), "as the console counts: .jsonl lines"
    assert f"newsdesk: {events[0]['inputs']} input(s)" in result.stderr
    assert events[-1]["counts"] == report["counts"]
    assert sorted(e["source"] for e in events if e["event"] == "article") == sorted(
        a["source"] for a in report["articles"]
    )

    (inputs / "zz-binary.txt").unlink()
    before = len(chats(server))
    rerun = newsdesk("run", str(inputs), "--out", str(out), "--base-url", server.base_url,
                     "--config", str(config))  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    again = report_of(out)
    assert again["run_id"] != run_id
    assert {a["status"] for a in again["articles"]} == {"skipped"} and len(again["articles"]) == 13
    assert len(chats(server)) == before, "a skipped article makes no call"
    assert (out / "runs" / f"{run_id}.json").is_file(), "earlier run reports are kept"
    assert (out / "logs" / f"{again['run_id']}.jsonl").is_file()


# ----------------------------------------------------------------------------- 7. rate limits


def timed(coro_factory: Callable[[], Any]) -> float:
    async def run() -> float:
        started = time.monotonic()
        await coro_factory()
        return time.monotonic() - started

    return asyncio.run(run())


def test_rpm_spaces_requests_evenly() -> None:
    gate = RateGate(rpm=600)

    async def six() -> None:
        for _ in range(6):
            await gate.acquire()

    assert timed(six) >= 0.45


def test_concurrent_acquires_share_one_pace() -> None:
    gate = RateGate(rpm=600)

    async def together() -> None:
        await asyncio.gather(*(gate.acquire() for _ in range(6)))

    assert timed(together) >= 0.45


def test_a_429_pauses_the_next_request_and_slows_the_pace() -> None:
    gate = RateGate()
    gate.throttle(0.3)
    assert gate.factor == pytest.approx(0.7)
    assert gate.throttled == 1
    assert timed(gate.acquire) >= 0.28
    assert timed(gate.acquire) < 0.2, "the pause is for the server's hint, not longer"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_the_time_paused_for_429s_counts_overlapping_pauses_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(ratelimit, "time", clock)
    gate = RateGate()
    assert gate.paused_s() == 0.0
    gate.throttle(10.0)  # paused 100 -> 110
    clock.now = 104.0
    assert gate.paused_s() == pytest.approx(4.0), "a pause under way counts up to now"
    gate.throttle(10.0)  # 429s of requests sent before the pause: extended to 114, not added
    clock.now = 120.0
    assert gate.paused_s() == pytest.approx(14.0)
    gate.throttle(2.0)  # a new pause, 120 -> 122
    clock.now = 130.0
    assert gate.paused_s() == pytest.approx(16.0)


def test_a_throttled_pace_spreads_requests_further() -> None:
    gate = RateGate(rpm=600)
    gate.throttle(0.0)  # factor 0.7: 60 / (600 * 0.7) = 0.143 s apart

    async def four() -> None:
        for _ in range(4):
            await gate.acquire()

    assert timed(four) >= 3 * 0.135


def test_successes_restore_the_pace_but_never_beyond_the_configured_one() -> None:
    gate = RateGate(rpm=600)
    gate.throttle(0.0)
    gate.throttle(0.0)
    lowered = gate.factor
    assert lowered == pytest.approx(0.49)
    gate.succeeded()
    assert lowered < gate.factor < 1.0
    for _ in range(100):
        gate.succeeded()
        assert gate.factor <= 1.0
    assert gate.factor == 1.0


def test_a_429_without_a_hint_paces_a_run_that_had_no_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    """No --rpm and no Retry-After: the run slows to 70% of the rate the server refused, and the
    pause doubles with each 429 in a row, so a limit never turns into a retry storm."""
    monkeypatch.setattr(ratelimit, "UNHINTED_PAUSE_S", 0.05)
    gate = RateGate()

    async def burst() -> None:
        for _ in range(30):
            await gate.acquire()

    asyncio.run(burst())  # 30 requests at once: taken over ten seconds, 180 a minute
    gate.throttle(None)
    assert gate.rpm == 180 and gate.factor == pytest.approx(0.7)
    assert 0.045 <= timed(gate.acquire) < 0.2, "paused for the first unhinted pause"
    gate.throttle(None)
    assert timed(gate.acquire) >= 0.095, "the second 429 in a row pauses twice as long"
    assert timed(gate.acquire) >= 60 / (180 * 0.49) - 0.005, "and the requests are spaced"
    gate.succeeded()
    gate.throttle(None)
    assert gate._in_a_row == 1, "a success in between starts the doubling again"


def test_a_429_with_a_retry_after_leaves_a_run_without_rpm_unpaced() -> None:
    """The server said how long to wait: a passing 429 must not slow the rest of the run."""
    gate = RateGate()

    async def burst() -> None:
        for _ in range(30):
            await gate.acquire()

    asyncio.run(burst())
    gate.throttle(0.01)
    assert gate.rpm is None
    assert timed(burst) < 0.2, "after the hinted pause, requests go at once"


def one_call(script: Callable[[dict[str, Any]], Reply], max_retries: int) -> ModelReply:
    """One call of a LiveModel, over HTTP, to a server answering by `script`."""
    body = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hello"}]}

    async def call(base_url: str) -> ModelReply:
        model = LiveModel(Settings(base_url=base_url, max_retries=max_retries), API_KEY)
        try:
            return await model.complete(ModelRequest(CallKey("a-1", "en", 0), body, "v1"))
        finally:
            await model.aclose()

    with FakeOpenAIServer(script=script, api_key=API_KEY) as server:
        return asyncio.run(call(server.base_url))


@pytest.fixture
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_module, "_backoff", lambda state: 0.01)
    monkeypatch.setattr(RateGate, "throttle", lambda self, retry_after: None)


def test_429s_are_waited_out_beyond_the_retry_count_other_failures_are_not(no_waits: None) -> None:
    asked: list[int] = []

    def limited_five_times(request: dict[str, Any]) -> Reply:
        asked.append(1)
        if len(asked) <= 5:
            return Reply.error(429, "Rate limit reached", error_type="requests", code="rate_limit_exceeded")
        return Reply.chat(request, '{"ok": true}')

    reply = one_call(limited_five_times, max_retries=1)
    assert reply.content == '{"ok": true}'
    assert len(asked) == 6, "five 429s, then the answer: a 429 is not a failed attempt"
    assert reply.endpoint_errors == {"429": 5}, "the reply says what its retries absorbed"

    def failing(request: dict[str, Any]) -> Reply:
        asked.append(1)
        return Reply.error(500, "boom", error_type="server_error")

    asked.clear()
    with pytest.raises(ModelUnavailable, match="HTTP 500") as failure:
        one_call(failing, max_retries=1)
    assert len(asked) == 2, "a 500 counts: one retry, then the call fails"
    assert failure.value.endpoint_errors == {"500": 2}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def failed_attempt(exc: BaseException) -> Any:
    outcome = type("Outcome", (), {"exception": lambda self: exc})()
    return type("State", (), {"outcome": outcome})()


def test_a_request_waits_out_429s_for_ten_minutes_from_its_first_429(monkeypatch: pytest.MonkeyPatch) -> None:
    """Time queued behind other requests before its first 429 does not count against it."""
    clock = FakeClock()
    monkeypatch.setattr(live_module, "time", clock)
    response = type("Response", (), {"headers": {}, "status_code": 429, "request": None})()
    limited = openai.RateLimitError("Rate limit reached", response=response, body=None)  # type: ignore[arg-type]
    patience = live_module._Patience(attempts=2)
    clock.now += 300  # queued for five minutes before it was first sent
    assert not patience(failed_attempt(limited)) and not patience.exhausted()
    clock.now += live_module.RATE_LIMIT_PATIENCE_S - 1
    assert not patience(failed_attempt(limited))
    clock.now += 1
    assert patience.exhausted() and patience(failed_attempt(limited)), "ten minutes of 429s: it gives up"
    assert patience.errors == {"429": 1}, "the same 429 raised again (its time ran out in the queue) is one"
    other = live_module._Patience(attempts=2)
    broken = RuntimeError("a dropped connection, say")
    assert not other(failed_attempt(broken)) and other(failed_attempt(broken)), "other failures count"


def test_a_429_for_an_exhausted_quota_is_not_retried_and_stops_the_run(no_waits: None) -> None:
    asked: list[int] = []

    def no_credit(request: dict[str, Any]) -> Reply:
        asked.append(1)
        return Reply.error(429, "You exceeded your current quota", error_type="insufficient_quota",
                           code="insufficient_quota")  # fmt: skip

    with pytest.raises(ModelUnavailable, match="no credit left") as failed:
        one_call(no_credit, max_retries=6)
    assert failed.value.fatal
    assert len(asked) == 1, "no wait brings credit back: not retried"
    assert failed.value.endpoint_errors == {"429": 1}


def test_replies_without_usage_are_estimated_so_cost_and_budget_still_count(tmp_path: Path) -> None:
    """Some compatible servers leave `usage` out: a cost of $0 would switch --budget-usd off."""
    answer = answer_from_recordings()

    def no_usage(body: dict[str, Any]) -> Reply:
        reply = answer(body)
        assert isinstance(reply.body, dict)
        return Reply(body={k: v for k, v in reply.body.items() if k != "usage"})

    out = tmp_path / "out"
    config = write_config(tmp_path, PRICES)
    with FakeOpenAIServer(script=no_usage, api_key=API_KEY) as server:
        result = newsdesk("run", str(ARTICLES / "zh-rrr-cut.txt"), "--out", str(out), "--base-url",
                          server.base_url, "--config", str(config))  # fmt: skip
    assert result.returncode == 0, result.stderr
    [entry] = report_of(out)["articles"]
    assert entry["usage"]["prompt_tokens"] > 1000 and entry["usage"]["completion_tokens"] > 1000
    assert entry["cost_usd"] > 0
    assert "tokens estimated: the endpoint reported no usage for some call" in entry["notes"]


def test_server_rate_limits_are_waited_out_and_the_run_completes(tmp_path: Path) -> None:
    plan = FaultPlan(queue=["429"], retry_after=None, retry_after_ms=300)
    article = ARTICLES / "zh-rrr-cut.txt"
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY, faults=plan, rpm_limit=2, rpm_window=1.5) as limited:
        result = newsdesk("run", str(article), "--out", str(tmp_path), "--base-url", limited.base_url)
        requests = chats(limited)
        counters = limited.counters
    assert result.returncode == 0, result.stderr
    assert report_of(tmp_path)["counts"]["ok"] == 1
    assert plan.injected == ["429"]
    first = requests[0].received_at
    retries = requests[2:]
    assert retries, "the rate-limited call was asked again"
    assert all(r.received_at - first >= 0.29 for r in retries), "no retry before the Retry-After"
    assert counters.accepted == 3, "two calls plus one retry got through"
    assert counters.rejected_429 == 1, "the early retry met the server's limit once, then waited"
    assert requests[-1].received_at - first >= 1.45, "the server's own Retry-After was waited out too"


# ----------------------------------------------------------------------------- 8. faults at concurrency


def test_a_quarter_of_calls_failing_at_concurrency_8_still_finishes_every_article(tmp_path: Path) -> None:
    kinds = ("429", "500", "503", "drop", "malformed", "length", "schema")
    plan = FaultPlan(rate=0.25, seed=9, kinds=kinds, retry_after="1", retry_after_ms=20)  # type: ignore[arg-type]
    out = tmp_path / "out"
    config = write_config(tmp_path, PRICES)
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY, faults=plan) as faulty:
        result = newsdesk("run", str(ARTICLES), "--out", str(out), "--base-url", faulty.base_url,
                          "--concurrency", "8", "--config", str(config))  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    report = report_of(out)
    assert report["counts"]["ok"] == 13
    assert set(plan.injected) == set(kinds), "every kind of fault was injected (seed 9 draws them all)"
    # every transport fault is counted, by kind, per article, per run, in the log and the summary
    as_counted = {"drop": "connection", "malformed": "malformed reply"}
    expected: dict[str, int] = {}
    for kind in plan.injected:
        if kind not in ("length", "schema"):  # those are answers (cut off, or failing the checks)
            expected[as_counted.get(kind, kind)] = expected.get(as_counted.get(kind, kind), 0) + 1
    counted = report["endpoint_errors"]
    # a pooled connection the server closed as it was reused is a real dropped connection too
    assert counted.get("connection", 0) >= expected.pop("connection", 0)
    assert {kind: n for kind, n in counted.items() if kind != "connection"} == expected
    per_article: dict[str, int] = {}
    for entry in report["articles"]:
        for kind, count in entry["endpoint_errors"].items():
            per_article[kind] = per_article.get(kind, 0) + count
    assert per_article == counted
    events = [json.loads(line) for line in next((out / "logs").glob("*.jsonl")).read_text().splitlines()]
    in_log = sum(sum(e["endpoint_errors"].values()) for e in events if e["event"] == "article")
    assert in_log == sum(counted.values())
    assert events[-1]["event"] == "run_finished" and events[-1]["endpoint_errors"] == counted
    assert f"{sum(counted.values())} endpoint errors (" in result.stderr
    written = list(files_under(out))
    assert {p.relative_to(out).parts[0] for p in written} >= {"articles", "logs", "runs"}
    for path in written:
        text = path.read_bytes().decode("utf-8", "replace")
        assert API_KEY not in text and API_KEY[-8:] not in text, f"API key leaked into {path}"
        assert "Bearer" not in text, f"auth header leaked into {path}"
    assert API_KEY not in result.stdout + result.stderr


# ----------------------------------------------------------------------------- 9. the Batch API


@pytest.fixture
def batch_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, "batch_poll_s = 0.05\n" + PRICES)


def test_batch_api_sends_one_batch_and_no_live_call(
    server: FakeOpenAIServer, batch_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = batch_run(out, server, batch_config)
    assert result.returncode == 0, result.stderr
    report = report_of(out)
    assert report["mode"] == "batch"
    assert report["counts"]["ok"] == 13
    assert len(posts(server, "/v1/files")) == 1
    assert len(posts(server, "/v1/batches")) == 1
    assert chats(server) == []
    uploaded = posts(server, "/v1/files")[0].raw
    assert uploaded.count(b'"custom_id"') == 26, "both calls of every article in one file"
    assert not (out / STATE).exists()
    usage = report["usage"]
    live_price = (usage["prompt_tokens"] * 0.4 + usage["completion_tokens"] * 1.6) / 1e6
    assert report["cost_usd"] == pytest.approx(live_price / 2, abs=1e-5), "the Batch API bills half price"


def test_a_saved_batch_the_endpoint_no_longer_knows_is_submitted_again(
    server: FakeOpenAIServer, batch_config: Path, tmp_path: Path
) -> None:
    """Else every night fails on the same 404 (an expired batch, or one made at another endpoint)."""
    out = tmp_path / "out"
    (out / STATE).parent.mkdir(parents=True)
    (out / STATE).write_text('{"batch_id": "batch_999999"}\n', encoding="utf-8")
    result = batch_run(out, server, batch_config)
    assert result.returncode == 0, result.stderr
    assert "does not know the saved batch batch_999999" in result.stderr
    assert report_of(out)["counts"]["ok"] == 13
    assert len(posts(server, "/v1/batches")) == 1 and chats(server) == []
    assert not (out / STATE).exists()


def test_a_batch_api_error_line_is_redacted_of_a_key_from_any_variable(tmp_path: Path) -> None:
    key = "localtoken-HUNTER2hunter2"
    config = write_config(tmp_path, 'api_key_env = "MY_KEY"\nbatch_poll_s = 0.05\n')

    class QuotesTheKey(FakeOpenAIServer):
        def handle(self, method: str, target: str, headers: Any, raw: bytes) -> Reply:
            given = headers.get("authorization", "")
            return Reply.error(401, f"Incorrect API key provided: {given.removeprefix('Bearer ')}")

    with QuotesTheKey(RECORDINGS) as server:
        result = run_newsdesk("run", ARTICLES, "--out", tmp_path / "out", "--base-url", server.base_url,
                              "--batch-api", "--config", config, env={"MY_KEY": key})  # fmt: skip
    assert result.returncode == 1
    assert "Incorrect API key provided: [redacted]" in result.stderr, result.stderr
    assert key not in result.stdout + result.stderr
    assert all(key not in p.read_bytes().decode("utf-8", "replace") for p in files_under(tmp_path / "out"))


def test_batch_api_resumes_a_submitted_batch_instead_of_submitting_again(
    server: FakeOpenAIServer, batch_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    settings = resolve_settings({"base_url": server.base_url}, batch_config)
    book = PromptBook(settings)
    journal = JournaledModel(ReplayModel(RECORDINGS), out / JOURNAL_DIR)
    runner = Runner(settings, journal, book, PlainProgress(io.StringIO()), journal)
    requests = _pending_requests(runner, book, journal, [ARTICLES], RunOptions(out=out))
    assert len(requests) == 26
    data = ("\n".join(batch_line(r) for r in requests) + "\n").encode()
    with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        uploaded = client.files.create(file=("crashed.jsonl", data), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h")
    state = {"batch_id": batch.id, "input_file_id": uploaded.id, "requests": len(requests)}
    (out / STATE).parent.mkdir(parents=True)
    (out / STATE).write_text(json.dumps(state) + "\n", encoding="utf-8")
    before = len(server.requests)

    result = batch_run(out, server, batch_config)
    assert result.returncode == 0, result.stderr
    assert report_of(out)["counts"]["ok"] == 13
    new = server.requests[before:]
    assert [r for r in new if r.method == "POST"] == [], "no new upload, batch or live call"
    assert any(r.path == f"/v1/batches/{batch.id}" for r in new), "it polled the saved batch"
    assert not (out / STATE).exists()


def test_a_folder_bigger_than_one_batch_goes_as_several_batches(tmp_path: Path) -> None:
    """The endpoint takes so many requests per batch (OpenAI: 50,000, or 200 MB of input file)."""
    out = tmp_path / "out"
    config = write_config(tmp_path, "batch_poll_s = 0.05\nbatch_max_requests = 10\n" + PRICES)
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY, batch_max_requests=10) as limited:
        result = batch_run(out, limited, config)
        uploads = [r.raw.count(b'"custom_id"') for r in posts(limited, "/v1/files")]
        live = chats(limited)
    assert result.returncode == 0, result.stderr
    assert uploads == [10, 10, 6], "26 requests in batches of at most 10"
    assert live == [], "every call answered by a batch"
    assert report_of(out)["counts"]["ok"] == 13
    events = [json.loads(line) for line in next((out / "logs").glob("*.jsonl")).read_text().splitlines()]
    assert [e["requests"] for e in events if e["event"] == "batch_submitted"] == [10, 10, 6]
    assert [e["requests"] for e in events if e["event"] == "batch_finished"] == [10, 10, 6]
    assert not (out / STATE).exists()


def test_a_run_killed_between_batches_resumes_the_saved_one_and_sends_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = write_config(tmp_path, "batch_poll_s = 0.05\nbatch_max_requests = 10\n" + PRICES)
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY, batch_max_requests=10) as server:
        settings = resolve_settings({"base_url": server.base_url}, config)
        book = PromptBook(settings)
        journal = JournaledModel(ReplayModel(RECORDINGS), out / JOURNAL_DIR)
        runner = Runner(settings, journal, book, PlainProgress(io.StringIO()), journal)
        first = _pending_requests(runner, book, journal, [ARTICLES], RunOptions(out=out))[:10]
        data = ("\n".join(batch_line(r) for r in first) + "\n").encode()
        with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
            uploaded = client.files.create(file=("killed.jsonl", data), purpose="batch")
            batch = client.batches.create(
                input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
            )
        sent = {f"{r.key.article_id}:{r.key.call}:0": request_sha256(r.body) for r in first}
        (out / STATE).parent.mkdir(parents=True)
        saved = {"batch_id": batch.id, "input_file_id": uploaded.id, "requests": 10, "sent": sent}
        state = {"batches": [saved]}
        (out / STATE).write_text(json.dumps(state) + "\n", encoding="utf-8")
        before = len(server.requests)
        result = batch_run(out, server, config)
        new = server.requests[before:]
    assert result.returncode == 0, result.stderr
    assert report_of(out)["counts"]["ok"] == 13
    uploads = [r.raw.count(b'"custom_id"') for r in new if r.method == "POST" and r.path == "/v1/files"]
    assert uploads == [10, 6], "only the 16 requests no saved batch holds are sent"
    assert [r for r in new if r.path == "/v1/chat/completions"] == [], "no live call"
    assert any(r.path == f"/v1/batches/{batch.id}" for r in new), "it polled the saved batch"
    assert not (out / STATE).exists()


class LosesTheAnswerToTheFirstBatch(FakeOpenAIServer):
    """Makes the first batch, then its answer is lost (a dropped connection, or a proxy's 502)."""

    def __init__(self, *args: Any, lost: Reply, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost: Reply | None = lost

    def _create_batch_endpoint(self, request: RecordedRequest, groups: tuple[str, ...]) -> Reply:
        reply = super()._create_batch_endpoint(request, groups)
        lost, self.lost = self.lost, None
        return lost or reply


@pytest.mark.parametrize("lost", [Reply(drop=True), Reply.error(502, "Bad gateway", error_type="server")])
def test_a_batch_whose_creation_answer_is_lost_is_found_not_made_twice(
    lost: Reply, batch_config: Path, tmp_path: Path
) -> None:
    """Made twice, it would run, and be paid for, twice: the SDK's own retry would do just that."""
    out = tmp_path / "out"
    with LosesTheAnswerToTheFirstBatch(RECORDINGS, api_key=API_KEY, lost=lost) as server:
        result = batch_run(out, server, batch_config)
        created = posts(server, "/v1/batches")
        looked = [r for r in server.requests if r.method == "GET" and r.path == "/v1/batches"]
        live = chats(server)
    assert result.returncode == 0, result.stderr
    assert len(created) == 1, "one batch made, and found again"
    assert len(looked) == 1
    assert live == []
    assert report_of(out)["counts"]["ok"] == 13


class BusyAccount(LosesTheAnswerToTheFirstBatch):
    """Other jobs of the account make 150 batches just after ours: it is on the listing's 2nd page."""

    def _create_batch_endpoint(self, request: RecordedRequest, groups: tuple[str, ...]) -> Reply:
        losing = self.lost is not None
        reply = super()._create_batch_endpoint(request, groups)
        if losing:
            others = {
                "input_file_id": "file-of-another-job",
                "endpoint": ENDPOINT,
                "completion_window": "24h",
            }
            for _ in range(150):
                other = server_module._Batch(self._next_id("batch"), others, [], deque(), None)
                self._batches[other.id] = other
        return reply


class CannotList(LosesTheAnswerToTheFirstBatch):
    def _list_batches_endpoint(self, request: RecordedRequest, groups: tuple[str, ...]) -> Reply:
        return Reply.error(404, "Not found", error_type="invalid_request_error")


def test_a_lost_batch_is_looked_for_past_the_first_page_of_the_listing(
    batch_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with BusyAccount(RECORDINGS, api_key=API_KEY, lost=Reply(drop=True)) as server:
        result = batch_run(out, server, batch_config)
        created = posts(server, "/v1/batches")
        pages = [r for r in server.requests if r.method == "GET" and r.path == "/v1/batches"]
    assert result.returncode == 0, result.stderr
    assert len(created) == 1, "found on the second page, not made again"
    assert len(pages) == 2
    assert report_of(out)["counts"]["ok"] == 13


class ListingDown(LosesTheAnswerToTheFirstBatch):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listing_down = True

    def _list_batches_endpoint(self, request: RecordedRequest, groups: tuple[str, ...]) -> Reply:
        if self.listing_down:
            return Reply.error(503, "Service unavailable", error_type="server_error")
        return super()._list_batches_endpoint(request, groups)


def test_a_run_that_cannot_tell_whether_its_batch_was_made_leaves_it_to_the_next(
    batch_config: Path, tmp_path: Path
) -> None:
    """Its creation answer lost and the listing down: the run fails, and the next run finds the
    batch of the uploaded file instead of uploading and paying for another."""
    out = tmp_path / "out"
    with ListingDown(RECORDINGS, api_key=API_KEY, lost=Reply(drop=True)) as server:
        first = batch_run(out, server, batch_config)
        assert first.returncode == 1 and "the Batch API failed" in first.stderr, first.stderr
        (upload,) = json.loads((out / STATE).read_text(encoding="utf-8"))["batches"]
        assert upload["batch_id"] is None and upload["input_file_id"]
        still_down = batch_run(out, server, batch_config)
        assert still_down.returncode == 1, "it still cannot tell: it fails again, keeping the upload"
        assert json.loads((out / STATE).read_text(encoding="utf-8"))["batches"][0]["batch_id"] is None
        assert len(posts(server, "/v1/files")) == 1 and len(posts(server, "/v1/batches")) == 1
        server.listing_down = False
        second = batch_run(out, server, batch_config)
        uploads, created, live = posts(server, "/v1/files"), posts(server, "/v1/batches"), chats(server)
    assert second.returncode == 0, second.stderr
    assert len(uploads) == 1 and len(created) == 1, "one file, one batch"
    assert live == []
    assert report_of(out)["counts"]["ok"] == 13
    assert not (out / STATE).exists()


def pending_requests(
    server: FakeOpenAIServer, config: Path, out: Path, shard: tuple[int, int] | None = None
) -> list[ModelRequest]:
    """The requests a --batch-api run over the fixtures would send (for planting a saved state)."""
    settings = resolve_settings({"base_url": server.base_url}, config)
    book = PromptBook(settings)
    journal = JournaledModel(ReplayModel(RECORDINGS), out / JOURNAL_DIR)
    runner = Runner(settings, journal, book, PlainProgress(io.StringIO()), journal)
    return _pending_requests(runner, book, journal, [ARTICLES], RunOptions(out=out, shard=shard))


def test_a_batch_saved_by_another_shards_run_is_left_for_it(
    server: FakeOpenAIServer, batch_config: Path, tmp_path: Path
) -> None:
    """Two shards' jobs share an output folder, one after the other: shard 1's job was killed as
    it waited for its batch. Shard 2's job must not collect that batch and forget it."""
    out = tmp_path / "out"
    first = pending_requests(server, batch_config, out, shard=(1, 2))
    data = ("\n".join(batch_line(r) for r in first) + "\n").encode()
    with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        uploaded = client.files.create(file=("shard-1.jsonl", data), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h")
    sent = {custom_id(r): request_sha256(r.body) for r in first}
    shard_1 = {"batch_id": batch.id, "input_file_id": uploaded.id, "requests": len(first), "sent": sent}
    (out / STATE).parent.mkdir(parents=True)
    (out / STATE).write_text(json.dumps({"batches": [shard_1]}), encoding="utf-8")

    assert batch_run(out, server, batch_config, "--shard", "2/2").returncode == 0
    assert json.loads((out / STATE).read_text(encoding="utf-8")) == {"batches": [shard_1]}
    uploads = len(posts(server, "/v1/files"))
    result = batch_run(out, server, batch_config, "--shard", "1/2")
    assert result.returncode == 0, result.stderr
    assert len(posts(server, "/v1/files")) == uploads, "shard 1's requests were in its saved batch"
    assert chats(server) == []
    assert not (out / STATE).exists()


@pytest.mark.parametrize("wanted", [True, False])
def test_an_upload_left_by_a_stopped_run_is_dropped_if_gone_or_no_longer_wanted(
    wanted: bool, server: FakeOpenAIServer, batch_config: Path, tmp_path: Path
) -> None:
    """Its file expired (the endpoint refuses it), or its requests are done or changed since: no
    batch of it is made, and this run's own requests go as its own batch."""
    out = tmp_path / "out"
    sent = {custom_id(r): request_sha256(r.body) for r in pending_requests(server, batch_config, out)}
    if not wanted:
        sent = {key: "another request" for key in sent}
    (out / STATE).parent.mkdir(parents=True)
    upload = {
        "batch_id": None,
        "input_file_id": "file-expired",
        "uploaded_at": 0,
        "requests": 26,
        "sent": sent,
    }
    (out / STATE).write_text(json.dumps({"batches": [upload]}), encoding="utf-8")
    result = batch_run(out, server, batch_config)
    assert result.returncode == 0, result.stderr
    dropped = "file-expired of a stopped run could not be made a batch" in result.stderr
    assert dropped is wanted
    assert len(posts(server, "/v1/batches")) == (2 if wanted else 1), "refused once, then this run's own"
    assert report_of(out)["counts"]["ok"] == 13 and chats(server) == []


def test_an_endpoint_that_cannot_list_batches_is_asked_to_create_it_again(
    batch_config: Path, tmp_path: Path
) -> None:
    """It cannot be told whether the lost batch was made: made again (as the SDK would), not a failed run."""
    out = tmp_path / "out"
    with CannotList(RECORDINGS, api_key=API_KEY, lost=Reply(drop=True)) as server:
        result = batch_run(out, server, batch_config)
        created = posts(server, "/v1/batches")
    assert result.returncode == 0, result.stderr
    assert len(created) == 2
    assert report_of(out)["counts"]["ok"] == 13


@pytest.mark.parametrize(
    "text",
    ['{"batch_id": ""}', '{"batches": [{"batch_id": ""}]}', '{"batches": [{"batch_id": "b1"}]}',
     '{"batches": [{"batch_id": "b1", "sent": ["x:en:0"]}]}', '{"batches": {"batch_id": "b1"}}',
     '["b1"]', "null", "[" * 100_000, '{"batches": [{"batch_id": 7, "sent": {}}]}'],
)  # fmt: skip
def test_a_saved_batch_record_that_cannot_be_used_is_left_out(text: str, tmp_path: Path) -> None:
    """Hand-edited or torn: its requests are sent again, and the run goes on."""
    path = tmp_path / "state.json"
    path.write_text(text, encoding="utf-8")
    assert _read_state(path) == []


def test_saved_batches_are_read_back_including_one_saved_by_an_older_version(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"batch_id": "batch_old", "input_file_id": "file_1", "requests": 26}', encoding="utf-8")
    (old,) = _read_state(path)
    assert old["batch_id"] == "batch_old" and old["sent"] is None, "the older one holds every request"
    new = {"batch_id": "batch_new", "input_file_id": "file_2", "requests": 1, "sent": {"a:en:0": "f00"}}
    _save_state(path, [old, new])
    assert _read_state(path) == [old, new]


def test_batches_are_cut_by_the_size_of_their_input_file() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 80}]}
    requests = [ModelRequest(CallKey(f"a-{i}", "en", 0), body, "v1") for i in range(7)]
    line = len(batch_line(requests[0]).encode()) + 1
    assert [len(c) for c in _chunks(requests, 50_000, 3 * line)] == [3, 3, 1]
    assert [len(c) for c in _chunks(requests, 2, 3 * line)] == [2, 2, 2, 1]
    assert [len(c) for c in _chunks(requests, 50_000, line // 2)] == [1] * 7, "a line too big goes alone"


def test_batch_lines_that_fail_go_through_live_requests(batch_config: Path, tmp_path: Path) -> None:
    plan = FaultPlan(queue=["500", None, "schema", "drop", None, "length"])
    out = tmp_path / "out"
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY, faults=plan) as faulty:
        result = batch_run(out, faulty, batch_config)
        live = chats(faulty)
        batches = posts(faulty, "/v1/batches")
    assert result.returncode == 0, result.stderr
    assert plan.injected == ["500", "schema", "drop", "length"]
    assert len(batches) == 1
    assert report_of(out)["counts"]["ok"] == 13
    assert len(live) == 4, "each failed or unusable batch answer costs one live request"
    assert not (out / STATE).exists()
    assert list(files_under(out / JOURNAL_DIR)) == []


class JunkInBatchOutput(FakeOpenAIServer):
    """A provider whose batch output file holds junk in place of its first five answers."""

    def _store_file(self, filename: str, purpose: str, data: bytes) -> Any:
        if filename.endswith("_output.jsonl"):
            lines = data.decode().splitlines()
            ids = [json.loads(line)["custom_id"] for line in lines[:5]]
            not_an_object = {"status_code": 200, "body": ["not", "an", "object"]}
            lines[:5] = [
                "[1, 2]", "null", "[" * 100_000,
                json.dumps({"custom_id": ids[3], "response": "oops"}),
                json.dumps({"custom_id": ids[4], "response": not_an_object}),
            ]  # fmt: skip
            data = ("\n".join(lines) + "\n").encode()
        return super()._store_file(filename, purpose, data)


def test_junk_lines_in_a_batch_output_file_go_through_live_requests(
    batch_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with JunkInBatchOutput(RECORDINGS, api_key=API_KEY) as provider:
        result = batch_run(out, provider, batch_config)
        live = chats(provider)
    assert result.returncode == 0, result.stderr
    assert report_of(out)["counts"]["ok"] == 13
    assert len(live) == 5, "each junk line costs one live request; the other answers are used"


def batch_run(
    out: Path, server: FakeOpenAIServer, config: Path, *flags: str
) -> subprocess.CompletedProcess[str]:
    return newsdesk("run", str(ARTICLES), "--out", str(out), "--base-url", server.base_url, "--batch-api",
                    "--config", str(config), *flags)  # fmt: skip


def test_answers_of_an_article_that_failed_on_an_internal_error_are_reported_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its entry counted none of them (the error came after the calls): a later run must."""
    article = ARTICLES / "zh-rrr-cut.txt"
    out = tmp_path / "out"

    def run() -> dict[str, Any]:
        settings = resolve_settings({"check_processes": 1}, None)
        journal = JournaledModel(ReplayModel(RECORDINGS), out / JOURNAL_DIR)
        runner = Runner(settings, journal, PromptBook(settings), PlainProgress(io.StringIO()), journal)
        report = asyncio.run(runner.run([article], RunOptions(out=out)))
        return report.articles[0].model_dump()

    def broken_checks(*args: object) -> list[Finding]:
        raise RuntimeError("a bug in a check")

    monkeypatch.setattr(workers_module, "run_checks", broken_checks)
    failed = run()
    assert failed["status"] == "failed" and "internal error" in failed["error"]
    assert failed["usage"]["prompt_tokens"] == 0
    monkeypatch.undo()
    done = run()
    recorded = [json.loads((RECORDINGS / done["id"] / f"{c}-0.json").read_text()) for c in ("en", "zh")]
    assert done["status"] == "ok"
    assert done["usage"]["prompt_tokens"] == sum(r["response"]["usage"]["prompt_tokens"] for r in recorded)


def test_a_journal_left_by_a_run_stopped_while_it_wrote_the_article_is_cleared(tmp_path: Path) -> None:
    """Ctrl-C while an article's files are written: they are whole, but the run never cleared its
    journal. The next run skips the article; its answers must not stay forever."""
    article = ARTICLES / "zh-rrr-cut.txt"
    out = tmp_path / "out"
    settings = resolve_settings({"check_processes": 1}, None)

    def run() -> str:
        journal = JournaledModel(ReplayModel(RECORDINGS), out / JOURNAL_DIR)
        runner = Runner(settings, journal, PromptBook(settings), PlainProgress(io.StringIO()), journal)
        return asyncio.run(runner.run([article], RunOptions(out=out))).articles[0].status

    assert run() == "ok"
    (left,) = list(load_articles([article]))
    assert isinstance(left, Article)
    (out / JOURNAL_DIR / left.id).mkdir(parents=True)
    (out / JOURNAL_DIR / left.id / "en-0.json").write_text("{}", encoding="utf-8")
    assert run() == "skipped"
    assert not (out / JOURNAL_DIR / left.id).exists()


def test_a_batch_answer_is_paid_by_the_run_that_collected_it_only(tmp_path: Path) -> None:
    """A later run that finishes the article replays the answer from the journal: paid before."""
    journal = JournaledModel(ReplayModel(RECORDINGS), tmp_path / JOURNAL_DIR)
    body = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hello"}]}
    request = ModelRequest(CallKey("a-1", "en", 0), body, "v1")
    message = {"role": "assistant", "content": "{}"}
    answer = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}  # fmt: skip
    journal.run_id = "run-1"
    journal.save(request, answer, batch=True)
    collected = asyncio.run(journal.complete(request))
    assert collected.batch and not collected.journaled, "paid by run-1, at the batch price"
    assert asyncio.run(journal.complete(request)).journaled, "counted once, however often run-1 uses it"
    journal.account("a-1")  # run-1 recorded the article's entry (it failed, say): the cost is reported
    journal.run_id = "run-2"
    replayed = asyncio.run(journal.complete(request))
    assert replayed.journaled and not replayed.batch, "run-2 paid nothing for it"


def test_answers_a_killed_run_paid_for_are_reported_by_the_run_that_uses_them(tmp_path: Path) -> None:
    """Killed while it waited for another batch, or with the article in flight: no report holds the
    cost of what it collected or asked; the next run that uses the answers reports it, once."""
    journal = JournaledModel(CountingModel(), tmp_path / JOURNAL_DIR)
    body = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hello"}]}
    batched, asked = (ModelRequest(CallKey("a-1", call, 0), body, "v1") for call in ("en", "zh"))
    message = {"role": "assistant", "content": "{}"}
    answer = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}  # fmt: skip
    journal.run_id = "run-1"
    journal.save(batched, answer, batch=True)  # collected, never used: run-1 was killed
    live = asyncio.run(journal.complete(asked))
    assert not live.journaled and not live.batch, "run-1 paid for its call (then it was killed)"
    journal.run_id = "run-2"
    files = sorted((tmp_path / JOURNAL_DIR).rglob("*.json"))
    before = [f.read_bytes() for f in files]
    first = [asyncio.run(journal.complete(r)) for r in (batched, asked)]
    assert [(r.batch, r.journaled) for r in first] == [(True, False), (False, False)], "run-2 reports both"
    assert [f.read_bytes() for f in files] == before, "using an answer writes nothing"
    again = [asyncio.run(journal.complete(r)) for r in (batched, asked)]
    assert all(r.journaled for r in again), "once"
    journal.run_id = "run-3"  # run-2 was killed too, before its report: run-3 reports them
    assert [asyncio.run(journal.complete(r)).journaled for r in (batched, asked)] == [False, False]
    journal.account("a-1")
    journal.run_id = "run-4"
    assert all(asyncio.run(journal.complete(r)).journaled for r in (batched, asked))


def test_force_with_the_batch_api_pays_each_call_once(
    server: FakeOpenAIServer, batch_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert batch_run(out, server, batch_config).returncode == 0
    first = report_of(out)
    result = batch_run(out, server, batch_config, "--force")
    assert result.returncode == 0, result.stderr
    assert len(posts(server, "/v1/batches")) == 2 and chats(server) == [], "redone by one more batch"
    again = report_of(out)
    assert again["counts"]["ok"] == 13
    assert again["cost_usd"] == pytest.approx(first["cost_usd"]), "paid once, at the batch price"


class LosesOutputFiles(FakeOpenAIServer):
    """A provider whose batch output files are gone (deleted, expired) when asked for."""

    def _store_file(self, filename: str, purpose: str, data: bytes) -> Any:
        stored = super()._store_file(filename, purpose, data)
        if filename.endswith("_output.jsonl"):
            with self._lock:
                del self._files[stored.id]
        return stored


def test_a_batch_whose_output_file_is_gone_goes_live_and_is_forgotten(
    batch_config: Path, tmp_path: Path
) -> None:
    """Else every later run would stop on the same 404."""
    out = tmp_path / "out"
    with LosesOutputFiles(RECORDINGS, api_key=API_KEY) as provider:
        result = batch_run(out, provider, batch_config)
        live = chats(provider)
    assert result.returncode == 0, result.stderr
    assert "is gone (404): its calls go through live requests" in result.stderr
    assert report_of(out)["counts"]["ok"] == 13 and len(live) == 26
    assert not (out / STATE).exists()
    [log] = (out / "logs").glob("*.jsonl")
    events = [json.loads(line)["event"] for line in log.read_text(encoding="utf-8").splitlines()]
    assert events[:3] == ["batch_submitted", "batch_output_missing", "batch_finished"]


def test_answers_of_a_resumed_batch_to_requests_that_changed_are_asked_again(
    server: FakeOpenAIServer, batch_config: Path, tmp_path: Path
) -> None:
    """A batch submitted for one model, resumed by a run for another: its answers are not this
    run's, so they are not published as such."""
    out = tmp_path / "out"
    settings = resolve_settings({"base_url": server.base_url, "model": "gpt-4.1-mini"}, batch_config)
    book = PromptBook(settings)
    journal = JournaledModel(ReplayModel(RECORDINGS), out / JOURNAL_DIR)
    runner = Runner(settings, journal, book, PlainProgress(io.StringIO()), journal)
    requests = _pending_requests(runner, book, journal, [ARTICLES], RunOptions(out=out))
    data = ("\n".join(batch_line(r) for r in requests) + "\n").encode()
    with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        uploaded = client.files.create(file=("crashed.jsonl", data), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h")
    sent = {f"{r.key.article_id}:{r.key.call}:0": request_sha256(r.body) for r in requests}
    (out / STATE).parent.mkdir(parents=True, exist_ok=True)
    (out / STATE).write_text(json.dumps({"batch_id": batch.id, "sent": sent}) + "\n", encoding="utf-8")

    result = batch_run(out, server, batch_config, "--model", "gpt-4.1")
    assert result.returncode == 0, result.stderr
    assert "26 answer(s) of batch" in result.stderr and "changed since" in result.stderr
    assert len(chats(server)) == 26, "every call asked again, for the model of this run"
    assert {json.loads(r.raw)["model"] for r in chats(server)} == {"gpt-4.1"}


def test_a_batch_run_on_a_locked_folder_exits_3_before_paying_for_a_batch(
    server: FakeOpenAIServer, batch_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with RunLock(out, "test-run"):
        started = time.monotonic()
        result = batch_run(out, server, batch_config)
        elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert elapsed < 10
    assert [(r.method, r.path) for r in server.requests] == [], "no upload, batch or call before the lock"
    assert not (out / STATE).exists() and not (out / JOURNAL_DIR).exists(), "nothing written to a held folder"


def test_a_batch_run_with_a_budget_never_submits_more_than_the_budget_starts(
    server: FakeOpenAIServer, batch_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = newsdesk("run", str(ARTICLES), "--out", str(out), "--base-url", server.base_url,
                      "--batch-api", "--config", str(batch_config), "--budget-usd", "0.02")  # fmt: skip
    assert result.returncode in (1, 2), result.stderr  # some not started, or the combination refused
    submitted = sum(r.raw.count(b'"custom_id"') for r in posts(server, "/v1/files"))
    counts = report_of(out)["counts"] if (out / "run-report.json").exists() else {}
    started = counts.get("ok", 0) + counts.get("failed", 0)
    assert submitted <= 2 * started, f"{submitted} batch requests paid for {started} started article(s)"


# ----------------------------------------------------------------------------- 10. the deploy files


def test_the_cron_line_runs_the_nightly_job_on_a_fresh_install(tmp_path: Path) -> None:
    """The line from deploy/newsdesk.cron, run by sh as cron would, in a fresh copy of the layout it
    expects (/srv/newsdesk: .venv, secrets.env in the systemd format, newsdesk.toml, inbox/)."""
    [line] = [x for x in (ROOT / "deploy" / "newsdesk.cron").read_text().splitlines() if x and x[0] != "#"]
    command = line.split(maxsplit=5)[5].replace("/srv/newsdesk", str(tmp_path))
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "activate").write_text(f'PATH="{Path(sys.executable).parent}:$PATH"\n')
    (tmp_path / "secrets.env").write_text(f"OPENAI_API_KEY={API_KEY}\n")  # KEY=value, as systemd reads it
    shutil.copytree(ARTICLES, tmp_path / "inbox", ignore=shutil.ignore_patterns("[!z]*"))  # the five zh-*
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY) as server:
        example = (ROOT / "newsdesk.example.toml").read_text(encoding="utf-8")  # copied, as the cron says
        (tmp_path / "newsdesk.toml").write_text(f'base_url = "{server.base_url}"\n' + example)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "NEWSDESK_"))}
        result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "logs" / "cron.log").read_text(encoding="utf-8")
    assert result.returncode == 0, log + result.stderr
    assert report_of(tmp_path / "site")["counts"]["ok"] == 5
    assert (tmp_path / "site" / "index.html").is_file()
    assert API_KEY not in log
