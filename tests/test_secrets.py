"""Secrets (issue 6, item 6): the API key never appears in logs, reports, recordings, the call journal,
error messages, tracebacks (NEWSDESK_DEBUG=1) or the process title.

The key below does not start with ``sk-``, so the Redactor's ``sk-`` pattern cannot hide it: only
real redaction of the configured key can. Every test runs the real CLI in a subprocess against the
loopback OpenAI-compatible server and scans stdout, stderr and every file the run wrote (OUT,
including the hidden call journal and the logs, and the --record folder) for:

* any 12 consecutive characters of the key (so a key cut short is still a leak),
* the masked echo of the key a server sent back ("Incorrect API key provided: ndk-****...H6jq"),
* an ``Authorization:`` header or a ``Bearer <token>`` that was not redacted.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import typer

from pipeline.cli import fail
from pipeline.errors import ModelUnavailable
from pipeline.testing.server import (
    FakeOpenAIServer,
    FaultPlan,
    RecordedRequest,
    Reply,
    find_recording,
    load_recordings,
)
from tests.conftest import ARTICLES, RECORDINGS, ROOT, cli_env, run_newsdesk

KEY = "ndk-secret-5Qm8ZtX2vR7pL4wN9cK1bH6jq"
OTHER_KEY = "ndk-server-0000111122223333444455556"
CHAT = "/v1/chat/completions"
ONE = ARTICLES / "energy-iron-air-storage.txt"
SOME = [ARTICLES / "energy-iron-air-storage.txt", ARTICLES / "zh-rrr-cut.txt", ARTICLES / "wire-briefs.jsonl"]
AUTH_HEADER = re.compile(r"(?i)\bauthorization\s*[:=]\s*(?!(?:bearer\s+)?\[redacted\])\S")
BEARER = re.compile(r"(?i)\bbearer\s+(?!\[redacted\])\S")


def masked(key: str) -> str:
    """How OpenAI echoes a wrong key: the first and last characters, the rest as stars."""
    return f"{key[:4]}{'*' * (len(key) - 8)}{key[-4:]}"


def leaks(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    fragments = [KEY[i : i + 12] for i in range(len(KEY) - 11) if KEY[i : i + 12] in text]
    found = [f"{len(fragments)} key fragment(s), first {fragments[0]!r}"] if fragments else []
    found += [f"echo {e!r}" for e in extra if e in text]
    found += [f"header {m.group(0)!r}" for m in AUTH_HEADER.finditer(text)]
    found += [f"bearer {m.group(0)!r}" for m in BEARER.finditer(text)]
    return found


def written(*folders: Path) -> Iterator[tuple[Path, str]]:
    for folder in folders:
        if folder.exists():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    yield path, path.read_bytes().decode("utf-8", "replace")


def assert_no_secret(
    result: subprocess.CompletedProcess[str], *folders: Path, echo: tuple[str, ...] = ()
) -> int:
    """Scan the run's output streams and files; returns how many files were scanned."""
    problems = [f"stdout: {p}" for p in leaks(result.stdout, echo)]
    problems += [f"stderr: {p}" for p in leaks(result.stderr, echo)]
    files = list(written(*folders))
    for path, text in files:
        problems += [f"{path}: {p}" for p in leaks(text, echo)]
    assert not problems, "secret leaked:\n" + "\n".join(problems[:20])
    return len(files)


def newsdesk(*args: str | Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_newsdesk(*args, api_key=KEY, env=env)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error: ")]


def chats(server: FakeOpenAIServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.method == "POST" and r.path == CHAT]


def write_config(folder: Path, text: str) -> Path:
    path = folder / "newsdesk.toml"
    path.write_text(text, encoding="utf-8")
    return path


class EchoingServer(FakeOpenAIServer):
    """Answers a wrong key the way OpenAI does: 401 with the key it was given, masked, in the message."""

    def handle(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> Reply:
        reply = super().handle(method, target, headers, raw)
        if reply.status != 401:
            return reply
        given = headers.get("authorization", "").removeprefix("Bearer ").strip()
        message = (
            f"Incorrect API key provided: {masked(given)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return Reply.error(401, message, code="invalid_api_key")


# --- runs that succeed, with faults, recording, and debug on --------------------------------------------


def test_a_run_with_faults_and_recording_writes_the_key_nowhere(tmp_path: Path) -> None:
    kinds = ("429", "500", "drop", "html", "length", "schema")
    plan = FaultPlan(queue=kinds, rate=0.2, seed=5, kinds=kinds, retry_after="0", retry_after_ms=5)
    out, recordings = tmp_path / "out", tmp_path / "rec"
    with FakeOpenAIServer(RECORDINGS, api_key=KEY, faults=plan) as server:
        result = newsdesk("run", *SOME, "--out", out, "--base-url", server.base_url, "--record", recordings,
                          env={"NEWSDESK_DEBUG": "1"})  # fmt: skip
        requests = chats(server)
    assert result.returncode == 0, result.stderr
    assert set(plan.injected) == set(kinds), f"every kind of fault was injected: {plan.injected}"
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in requests), "the key was sent"
    assert len(list(recordings.rglob("*.json"))) >= 8, "every call of the four articles was recorded"
    assert list((out / "logs").glob("*.jsonl")), "the run logged its events"
    scanned = assert_no_secret(result, out, recordings)
    assert scanned >= 8 + 12 + 3, "outputs, recordings, report and logs were all scanned"


def test_the_process_title_never_shows_the_key(tmp_path: Path) -> None:
    with FakeOpenAIServer(RECORDINGS, api_key=KEY, latency=1.5) as server:
        child = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", str(ONE), "--out", str(tmp_path / "out"),
             "--base-url", server.base_url],
            cwd=ROOT, env=cli_env(KEY), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not chats(server) and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.02)
            assert chats(server), "the child reached the server (which now holds the request)"
            proc = Path(f"/proc/{child.pid}")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\x00", b" ").decode("utf-8", "replace")
            titles = [(proc / "comm").read_text(encoding="utf-8", errors="replace")]
            titles += [t.read_text(encoding="utf-8", errors="replace") for t in proc.glob("task/*/comm")]
            stdout, stderr = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert "pipeline" in cmdline and "run" in cmdline, cmdline
    assert not leaks(cmdline), cmdline
    assert not [t for t in titles if leaks(t)], titles
    assert child.returncode == 0, stderr
    assert not leaks(stdout + stderr)


# --- a wrong key, and servers that echo the key back -----------------------------------------------------


@pytest.mark.parametrize("debug", ["", "1"], ids=["plain", "NEWSDESK_DEBUG"])
def test_a_wrong_key_echoed_back_masked_is_written_nowhere(tmp_path: Path, debug: str) -> None:
    out, recordings = tmp_path / "out", tmp_path / "rec"
    with EchoingServer(RECORDINGS, api_key=OTHER_KEY) as server:
        result = newsdesk("run", *SOME, "--out", out, "--base-url", server.base_url, "--record", recordings,
                          env={"NEWSDESK_DEBUG": debug})  # fmt: skip
        requests = chats(server)
    assert requests and all(r.headers.get("authorization") == f"Bearer {KEY}" for r in requests)
    assert result.returncode == 1, result.stderr
    assert "401" in result.stderr
    assert (out / "run-report.json").is_file(), "the report is written even so"
    assert_no_secret(result, out, recordings, echo=(masked(KEY),))


Script = Callable[[dict[str, Any]], Reply]
ECHOES: dict[str, Script] = {
    "400-header-echo": lambda body: Reply.error(400, f"Invalid header: Authorization: Bearer {KEY}"),
    "500-bare-key": lambda body: Reply.error(500, f"upstream rejected {KEY}", error_type="server_error"),
    "200-html-page": lambda body: Reply(body=f"<html><body>Invalid API key: {KEY}</body></html>",
                                        content_type="text/html"),
    "502-html-page": lambda body: Reply(status=502, body=f"<html><body>proxy: bad key {KEY}</body></html>",
                                        content_type="text/html"),
}  # fmt: skip


@pytest.mark.parametrize("reply", sorted(ECHOES))
def test_a_server_that_echoes_the_whole_key_does_not_get_it_written(tmp_path: Path, reply: str) -> None:
    config = write_config(tmp_path, "max_retries = 0\nconcurrency = 1\n")
    out = tmp_path / "out"
    with FakeOpenAIServer(script=ECHOES[reply], api_key=KEY) as server:
        result = newsdesk("run", ONE, "--out", out, "--base-url", server.base_url, "--config", config)
        assert chats(server), "the server answered"
    assert result.returncode == 1, result.stderr
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    assert report["articles"][0]["status"] == "failed" and report["articles"][0]["error"]
    assert_no_secret(result, out)


# A failure in a place no handler plans for, with the key in its message. (Reading replies is
# defensive, so the run's process gets one through a startup hook.)
UNPLANNED_FAILURE = """
import os
import pipeline.analyze

def parse_answer(call, content):
    raise RuntimeError(f"cannot read the {call} reply sent for {os.environ['OPENAI_API_KEY']}")

pipeline.analyze.parse_answer = parse_answer
"""


@pytest.mark.parametrize("debug", ["", "1"], ids=["internal-error", "NEWSDESK_DEBUG-traceback"])
def test_an_unexpected_error_about_the_key_never_shows_it(tmp_path: Path, debug: str) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(UNPLANNED_FAILURE, encoding="utf-8")
    out = tmp_path / "out"
    # the replies echo the key too: they stay in the call journal, as the article failed
    with FakeOpenAIServer(script=lambda body: Reply.chat(body, f"the key is {KEY}"), api_key=KEY) as server:
        result = newsdesk(
            "run", ONE, "--out", out, "--base-url", server.base_url,
            env={"NEWSDESK_DEBUG": debug, "PYTHONPATH": str(hook)},
        )  # fmt: skip
        assert chats(server)
    assert result.returncode == 1
    if debug:
        assert "Traceback (most recent call last)" in result.stderr, "debug mode shows the traceback"
        assert "RuntimeError: cannot read the" in result.stderr
    else:
        assert "internal error (RuntimeError: cannot read the" in result.stderr
    assert list((out / ".calls").rglob("*.json")), "the replies were journaled"
    assert_no_secret(result, out)


@pytest.mark.parametrize("batch", [False, True], ids=["live", "batch-api"])
def test_an_answer_that_echoes_the_key_is_published_without_it(tmp_path: Path, batch: bool) -> None:
    recordings = load_recordings(RECORDINGS)

    def echo_in_summary(body: dict[str, Any]) -> Reply:
        recording = find_recording(recordings, body["messages"])
        assert recording is not None
        response = copy.deepcopy(recording.response)
        answer = json.loads(response["choices"][0]["message"]["content"])
        section = answer.get("en") or answer["zh"]
        section["summary"] += f" (sent with {KEY}, masked {masked(KEY)})"
        response["choices"][0]["message"]["content"] = json.dumps(answer, ensure_ascii=False)
        return Reply(body=response)

    out, record = tmp_path / "out", tmp_path / "rec"
    mode = ["--batch-api", "--config", write_config(tmp_path, "batch_poll_s = 0.05\n")] if batch else []
    with FakeOpenAIServer(script=echo_in_summary, api_key=KEY) as server:
        result = newsdesk("run", ONE, "--out", out, "--base-url", server.base_url, "--record", record, *mode)
        assert any(r.path == "/v1/batches" for r in server.requests) is batch
    assert result.returncode == 0, result.stderr
    (analysis,) = out.glob("articles/*/analysis.json")
    summaries = [json.loads(analysis.read_text(encoding="utf-8"))[lang]["summary"] for lang in ("en", "zh")]
    assert any(s.endswith("(sent with [redacted], masked [redacted])") for s in summaries), summaries
    assert assert_no_secret(result, out, record, echo=(masked(KEY),)) > 5


@pytest.mark.parametrize("key", [None, "test"], ids=["no-key", "short-local-key"])
def test_a_local_server_s_placeholder_key_is_not_taken_out_of_answers(
    tmp_path: Path, key: str | None
) -> None:
    """With no key (a local server) the client sends a placeholder, and a local server's key may be
    a word: neither is a secret to strip from what the model wrote."""
    recordings = load_recordings(RECORDINGS)
    added = " Some unused test capacity remains."

    def add_words(body: dict[str, Any]) -> Reply:
        recording = find_recording(recordings, body["messages"])
        assert recording is not None
        response = copy.deepcopy(recording.response)
        answer = json.loads(response["choices"][0]["message"]["content"])
        (answer.get("en") or answer["zh"])["summary"] += added
        response["choices"][0]["message"]["content"] = json.dumps(answer, ensure_ascii=False)
        return Reply(body=response)

    out = tmp_path / "out"
    with FakeOpenAIServer(script=add_words) as server:
        result = run_newsdesk("run", ONE, "--out", out, "--base-url", server.base_url, api_key=key)
    assert result.returncode == 0, result.stderr
    (analysis,) = out.glob("articles/*/analysis.json")
    document = json.loads(analysis.read_text(encoding="utf-8"))
    assert all(document[lang]["summary"].endswith(added) for lang in ("en", "zh"))


# --- configuration: the key is read from the environment variable the config names ------------------------


def test_api_key_env_in_the_config_names_the_variable_the_key_is_read_from(tmp_path: Path) -> None:
    text = 'api_key_env = "MY_NEWSDESK_KEY"\n'
    config = write_config(tmp_path, text)
    out = tmp_path / "out"
    with FakeOpenAIServer(RECORDINGS, api_key=KEY) as server:
        result = newsdesk("run", ONE, "--out", out, "--base-url", server.base_url, "--config", config,
                          env={"MY_NEWSDESK_KEY": KEY, "OPENAI_API_KEY": OTHER_KEY})  # fmt: skip
        requests = chats(server)
    assert result.returncode == 0, result.stderr
    assert len(requests) == 2
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in requests), (
        "read from MY_NEWSDESK_KEY"
    )
    assert config.read_text(encoding="utf-8") == text, "the config file is never written to"
    assert_no_secret(result, out, tmp_path)


def test_a_missing_key_names_the_variable_from_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'api_key_env = "MY_NEWSDESK_KEY"\n')
    result = newsdesk("run", ONE, "--out", tmp_path / "out", "--config", config, env={"OPENAI_API_KEY": KEY})
    assert result.returncode == 2
    assert error_lines(result) == [result.stderr.strip()]
    assert "$MY_NEWSDESK_KEY" in result.stderr
    assert not leaks(result.stderr)


def test_a_config_file_holding_a_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'api_key = "{KEY}"\n')
    result = newsdesk("run", ONE, "--out", tmp_path / "out", "--config", config)
    assert result.returncode == 2
    assert error_lines(result) == [result.stderr.strip()] and "api_key" in result.stderr
    assert not leaks(result.stderr + result.stdout)
    assert not (tmp_path / "out").exists()


def test_a_key_pasted_into_api_key_env_is_refused_without_echoing_it(tmp_path: Path) -> None:
    # a common slip: the key itself where the variable's NAME belongs
    config = write_config(tmp_path, f'api_key_env = "{KEY}"\n')
    out = tmp_path / "out"
    with FakeOpenAIServer(RECORDINGS, api_key=KEY) as server:
        with_url = newsdesk("run", ONE, "--out", out, "--base-url", server.base_url, "--config", config)
    without_url = newsdesk("run", ONE, "--out", tmp_path / "out2", "--config", config)
    for result in (with_url, without_url):
        assert_no_secret(result, out, tmp_path / "out2")
        assert result.returncode == 2, "a configuration error"
        assert len(error_lines(result)) == 1, result.stderr


def test_an_error_line_never_shows_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a provider's error message may quote the key (the Batch API's errors reach this line as they are)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("NEWSDESK_DEBUG", raising=False)
    with pytest.raises(typer.Exit):
        fail(
            ModelUnavailable(f"the Batch API failed: AuthenticationError: Incorrect API key provided: {KEY}")
        )
    stderr = capsys.readouterr().err
    assert (
        stderr == "Error: the Batch API failed: AuthenticationError: Incorrect API key provided: [redacted]\n"
    )
