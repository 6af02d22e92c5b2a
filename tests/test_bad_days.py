"""Bad days (issue 6, item 7): an output folder that cannot be written (read-only, full, or under a
file), a disk that fills up mid-run, an endpoint that is unreachable for the whole run, a wrong API
key (401), a model the server does not know (404), a server that answers HTML instead of JSON.

Each ends in one ``Error: ...`` line with the documented exit code, leaves nothing torn (no
temporary files, every analysis.json complete), loses nothing already paid for, and a rerun once the
problem is gone completes only what is missing.

Filesystem faults are injected in-process (the tests run as root, so ``chmod`` would not stop a
write): ``os.open``/``open``/``os.mkdir``/``os.replace`` refuse writes under the output folder, or
``os.fsync`` fails with ENOSPC once the disk "fills up". Endpoint faults use the real CLI in a
subprocess against the loopback OpenAI-compatible server.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import pipeline.checkpoints as checkpoints_module
import pipeline.emit.write as write_module
from pipeline.cli import app
from pipeline.schema import Analysis
from pipeline.testing.server import FakeOpenAIServer, FaultPlan, RecordedRequest
from tests.conftest import ARTICLES, RECORDINGS, run_newsdesk

KEY = "ndk-baddays-2468ACEGIKMOQSUWY13579"
CHAT = "/v1/chat/completions"
TOTAL = 13  # fixture articles
CLEAN_RUN_CALLS = 26  # two calls each, no re-asks, when nothing fails


# ----------------------------------------------------------------------------- helpers


def chats(server: FakeOpenAIServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.method == "POST" and r.path == CHAT]


def report_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    return data


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def assert_one_error_line(stderr: str, *needles: str) -> str:
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == lines[0], "the explanation is the last line"
    assert "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_nothing_torn(out: Path) -> list[Path]:
    """No temporary file is left and every analysis.json is whole; returns the analysis files."""
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    analyses = sorted(out.glob("articles/*/analysis.json"))
    for path in analyses:
        Analysis.model_validate_json(path.read_text(encoding="utf-8"))
    return analyses


def write_config(folder: Path, text: str) -> Path:
    path = folder / "newsdesk.toml"
    path.write_text(text, encoding="utf-8")
    return path


def newsdesk(*args: str | Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_newsdesk(*args, api_key=KEY, env=env)


def run_in_process(out: Path, base_url: str, *extra: str) -> Any:
    result = CliRunner().invoke(
        app, ["run", str(ARTICLES), "--out", str(out), "--base-url", base_url, *extra]
    )
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    return result


# ----------------------------------------------------------------------------- the output folder


def test_an_output_folder_under_a_regular_file_fails_before_any_model_call(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be\n", encoding="utf-8")
    out = blocker / "out"
    with FakeOpenAIServer(RECORDINGS, api_key=KEY) as server:
        result = newsdesk("run", ARTICLES, "--out", out, "--base-url", server.base_url)
        assert chats(server) == [], "nothing was paid for"
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == assert_one_error_line(result.stderr, str(out))
    assert blocker.read_text(encoding="utf-8") == "a file where a folder should be\n"


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def refuse_writes(monkeypatch: pytest.MonkeyPatch, root: Path, code: int) -> None:
    """Every attempt to create, write or rename a file or folder under `root` fails with `code`."""
    real_open, real_mkdir, real_replace, real_io_open = os.open, os.mkdir, os.replace, io.open

    def under(path: Any) -> bool:
        if not isinstance(path, str | bytes | os.PathLike):
            return False  # a file descriptor
        absolute = os.path.abspath(os.fsdecode(path))
        return absolute == str(root) or absolute.startswith(str(root) + os.sep)

    def refuse(path: Any) -> OSError:
        return OSError(code, os.strerror(code), os.fsdecode(path))

    def fake_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if under(path) and flags & WRITE_FLAGS:
            raise refuse(path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def fake_mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        if under(path):
            if os.path.exists(path):  # as on a real read-only or full disk: EEXIST comes first
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
            raise refuse(path)
        real_mkdir(path, mode, dir_fd=dir_fd)

    def fake_replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if under(dst):
            raise refuse(dst)
        real_replace(src, dst, **kwargs)

    def fake_io_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if under(file) and set(mode) & set("wax+"):
            raise refuse(file)
        return real_io_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "replace", fake_replace)
    monkeypatch.setattr(os, "rename", fake_replace)
    monkeypatch.setattr(io, "open", fake_io_open)
    monkeypatch.setattr(builtins, "open", fake_io_open)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC], ids=["read-only", "full"])
@pytest.mark.parametrize("exists", [True, False], ids=["existing-out", "new-out"])
def test_an_unwritable_output_folder_ends_the_run_before_paying_and_a_rerun_completes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, exists: bool
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    volume = tmp_path / "volume"
    volume.mkdir()
    out = volume / "out"
    if exists:
        out.mkdir()
    with FakeOpenAIServer(RECORDINGS, api_key=KEY) as server:
        with monkeypatch.context() as patched:
            refuse_writes(patched, volume, code)
            refused = run_in_process(out, server.base_url)
        assert chats(server) == [], "no model call before the folder is known to be writable"
        assert refused.exit_code == 2, refused.stderr
        assert refused.stderr.strip() == assert_one_error_line(refused.stderr, str(out), os.strerror(code))
        assert sorted(p.name for p in volume.rglob("*")) == (["out"] if exists else [])

        rerun = run_in_process(out, server.base_url)
        assert rerun.exit_code == 0, rerun.stderr
        assert len(chats(server)) == CLEAN_RUN_CALLS
    assert report_of(out)["counts"]["ok"] == TOTAL
    assert len(assert_nothing_torn(out)) == TOTAL


class FillingDisk:
    """atomic_write_text, wherever pipeline imported it, on a disk that fills up for good at the
    first article.md after `complete` articles were written whole: from then on every write (and
    fsync) to a file under `volume` fails with ENOSPC, inside the real atomic_write_text, which
    must clean up its temporary file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, volume: Path, complete: int) -> None:
        self.real_write: Callable[..., None] = write_module.atomic_write_text
        self.real_fsync, self.real_os_write = os.fsync, os.write
        self.volume = str(volume)
        self.complete = complete
        self.written = 0
        self.full = False
        for name, module in list(sys.modules.items()):
            if name.startswith("pipeline") and getattr(module, "atomic_write_text", None) is self.real_write:
                monkeypatch.setattr(module, "atomic_write_text", self)
        monkeypatch.setattr(os, "fsync", self.fsync)
        monkeypatch.setattr(os, "write", self.os_write)

    def _refused(self, fd: int) -> bool:
        return self.full and os.readlink(f"/proc/self/fd/{fd}").startswith(self.volume)

    def fsync(self, fd: int) -> None:
        if self._refused(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real_fsync(fd)

    def os_write(self, fd: int, data: bytes) -> int:
        if self._refused(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real_os_write(fd, data)

    def __call__(self, path: Path, text: str, **options: bool) -> None:
        if path.name == "article.md" and self.written >= self.complete:
            self.full = True
        self.real_write(path, text, **options)
        if path.name == "analysis.json":
            self.written += 1

    def heal(self) -> None:
        self.full, self.complete = False, 10**9


def test_a_disk_that_fills_up_mid_run_leaves_whole_files_and_a_rerun_pays_only_for_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "out"
    disk = FillingDisk(monkeypatch, out, complete=3)
    with FakeOpenAIServer(RECORDINGS, api_key=KEY) as server:
        first = run_in_process(out, server.base_url, "--concurrency", "1")
        paid_first = len(chats(server))
        assert disk.full, "the disk filled up during the run"
        assert first.exit_code == 1, first.stderr
        assert_one_error_line(first.stderr, os.strerror(errno.ENOSPC))
        finished = assert_nothing_torn(out)
        assert len(finished) == 3, "the articles written before the disk filled up are whole"
        assert paid_first == 2 * 4, "the run stopped starting articles once it could not write"

        disk.heal()
        second = run_in_process(out, server.base_url, "--concurrency", "1")
        paid_second = len(chats(server)) - paid_first
    assert second.exit_code == 0, second.stderr
    statuses = {entry["source"]: entry["status"] for entry in report_of(out)["articles"]}
    skipped = {s for s, status in statuses.items() if status == "skipped"}
    assert len(skipped) == 3 and set(statuses.values()) == {"ok", "skipped"}, statuses
    assert paid_first + paid_second == CLEAN_RUN_CALLS, "the answers paid before the failure were kept"
    assert len(assert_nothing_torn(out)) == TOTAL
    assert not any((out / ".calls").rglob("*.json")), "the call journal is emptied once outputs exist"


def test_a_disk_that_refuses_to_flush_at_the_end_gives_one_error_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "out"

    def refused(paths: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(checkpoints_module, "flush_to_disk", refused)
    monkeypatch.setattr(checkpoints_module, "CHECKPOINT_SECONDS", 3600.0)  # only the final flush
    with FakeOpenAIServer(RECORDINGS, api_key=KEY) as server:
        result = run_in_process(out, server.base_url)
    assert result.exit_code == 1, result.stderr
    line = assert_one_error_line(result.stderr, "could not be flushed to disk", os.strerror(errno.EIO))
    assert line.endswith("the next run checks them again")
    assert report_of(out)["counts"]["ok"] == TOTAL


# ----------------------------------------------------------------------------- the endpoint

FAST = "concurrency = 1\nmax_retries = 1\nconnect_timeout_s = 1.0\ntimeout_s = 10.0\n"


def assert_stopped_after_the_first_article(out: Path, cause: str) -> None:
    report = report_of(out)
    counts = report["counts"]
    assert counts["failed"] == 1 and counts["not_started"] == TOTAL - 1 and counts["ok"] == 0, counts
    for entry in report["articles"]:
        assert cause in entry["error"], entry
        if entry["status"] == "not_started":
            assert entry["error"].startswith("not started"), entry
    logs = list((out / "logs").glob("*.jsonl"))
    assert len(logs) == 1
    events = [json.loads(line)["event"] for line in logs[0].read_text(encoding="utf-8").splitlines()]
    assert events[0] == "run_started" and events[-1] == "run_finished", "the log is complete"
    assert assert_nothing_torn(out) == []
    assert not (out / "articles").exists() or not any((out / "articles").iterdir()), "nothing half-written"


def test_an_endpoint_unreachable_for_the_whole_run_stops_fast_and_a_rerun_completes(tmp_path: Path) -> None:
    config = write_config(tmp_path, FAST)
    out = tmp_path / "out"
    started = time.monotonic()
    result = newsdesk(
        "run", ARTICLES, "--out", out, "--config", config, "--base-url", "http://127.0.0.1:9/v1"
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert_one_error_line(result.stderr, "could not be reached", "127.0.0.1:9")
    assert elapsed < 20, f"{elapsed:.1f}s: the run went on trying every article"
    assert_stopped_after_the_first_article(out, "could not be reached")

    with FakeOpenAIServer(RECORDINGS, api_key=KEY) as server:
        rerun = newsdesk("run", ARTICLES, "--out", out, "--config", config, "--base-url", server.base_url)
        assert len(chats(server)) == CLEAN_RUN_CALLS
    assert rerun.returncode == 0, rerun.stderr
    assert report_of(out)["counts"]["ok"] == TOTAL


FATAL: dict[str, tuple[dict[str, Any], list[str], dict[str, str], int, tuple[str, ...]]] = {
    # name: (server options, extra CLI args, environment, chat requests before the stop, words of the Error)
    "wrong-key-401": ({"api_key": KEY}, [], {"OPENAI_API_KEY": "ndk-wrong-000000000000000000"}, 2,
                      ("401", "OPENAI_API_KEY")),
    "unknown-model-404": ({"api_key": KEY, "known_models": {"gpt-4.1-mini"}}, ["--model", "no-such-model"],
                          {}, 2, ("404", "no-such-model")),
    "html-instead-of-json": ({"api_key": KEY, "faults": FaultPlan(rate=1.0, kinds=["html"])}, [], {}, 4,
                             ("not a chat completion",)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FATAL))
def test_a_fatal_endpoint_answer_stops_the_run_with_one_line_and_a_rerun_completes(
    tmp_path: Path, name: str
) -> None:
    options, args, env, calls, words = FATAL[name]
    config = write_config(tmp_path, FAST)
    out = tmp_path / "out"
    with FakeOpenAIServer(RECORDINGS, **options) as server:
        result = newsdesk("run", ARTICLES, "--out", out, "--config", config, "--base-url", server.base_url,
                          *args, env=env)  # fmt: skip
        assert len(chats(server)) == calls, "no article was started after the first fatal answer"
    assert result.returncode == 1, result.stderr
    line = assert_one_error_line(result.stderr, *words)
    assert "ndk-wrong" not in line
    assert_stopped_after_the_first_article(out, words[0])

    with FakeOpenAIServer(RECORDINGS, api_key=KEY) as healthy:
        rerun = newsdesk("run", ARTICLES, "--out", out, "--config", config, "--base-url", healthy.base_url)
        assert len(chats(healthy)) == CLEAN_RUN_CALLS
    assert rerun.returncode == 0, rerun.stderr
    assert report_of(out)["counts"] == {
        "ok": TOTAL,
        "failed": 0,
        "skipped": 0,
        "duplicate": 0,
        "not_started": 0,
    }
    assert len(assert_nothing_torn(out)) == TOTAL
