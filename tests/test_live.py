"""The real path: the `newsdesk` CLI and the openai SDK over HTTP against the loopback server."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from pipeline.testing.server import FakeOpenAIServer, FaultPlan, Reply
from tests.conftest import ARTICLES, RECORDINGS, run_newsdesk

API_KEY = "sk-test-0123456789abcdefghijklmnopqrstuvwxyz"
TRANSPORT_FAULTS = ("429", "500", "503", "drop", "malformed", "html", "length", "schema")


def newsdesk(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run_newsdesk(*args, api_key=API_KEY, env=env, timeout=timeout)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY) as running:
        yield running


def report_of(out: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    return data


def all_written_text(folder: Path) -> Iterator[tuple[Path, str]]:
    for path in folder.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes().decode("utf-8", "replace")


def assert_no_secret(folder: Path, *texts: str) -> None:
    for path, text in all_written_text(folder):
        assert API_KEY not in text, f"API key leaked into {path}"
        assert "Bearer " not in text, f"auth header leaked into {path}"
    for text in texts:
        assert API_KEY not in text


def test_every_fixture_completes_over_http(server: FakeOpenAIServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = newsdesk("run", str(ARTICLES), "--out", str(out), "--base-url", server.base_url,
                      "--model", "any-model")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = report_of(out)
    assert report["counts"] == {"ok": 13, "failed": 0, "skipped": 0, "duplicate": 0, "not_started": 0}
    chats = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 26  # two calls per article, none wasted
    assert all(r.headers.get("authorization") == f"Bearer {API_KEY}" for r in chats)
    assert {r.body["model"] for r in chats if isinstance(r.body, dict)} == {"any-model"}
    assert_no_secret(out, result.stdout, result.stderr)


def test_faults_on_a_quarter_of_calls_still_finish_every_article(tmp_path: Path) -> None:
    plan = FaultPlan(rate=0.25, seed=7, kinds=TRANSPORT_FAULTS, retry_after="1", retry_after_ms=20)
    out = tmp_path / "out"
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY, faults=plan) as server:
        result = newsdesk("run", str(ARTICLES), "--out", str(out), "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr + result.stdout
    assert report_of(out)["counts"]["ok"] == 13  # type: ignore[index]
    assert len(plan.injected) >= 5, "the plan injected faults"
    assert set(plan.injected) & {"length", "schema"}, "content faults were among them"
    assert_no_secret(out, result.stdout, result.stderr)


@pytest.mark.parametrize("fault", TRANSPORT_FAULTS)
def test_each_fault_kind_is_recovered(fault: str, tmp_path: Path) -> None:
    plan = FaultPlan(queue=[fault, fault], retry_after="0", retry_after_ms=10)  # type: ignore[list-item]
    article = ARTICLES / "energy-iron-air-storage.txt"
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY, faults=plan) as server:
        result = newsdesk("run", str(article), "--out", str(tmp_path), "--base-url", server.base_url)
        chats = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert result.returncode == 0, result.stderr
    assert plan.injected == [fault, fault]
    assert len(chats) == 4  # the two faulted requests were asked again, once each
    entry = report_of(tmp_path)["articles"][0]  # type: ignore[index]
    assert entry["status"] == "ok"
    if fault in ("length", "schema"):  # answered 200: the model's usage is counted in the attempts
        assert entry["attempts"] == 4


def test_429_retry_after_is_honoured(tmp_path: Path) -> None:
    plan = FaultPlan(queue=["429"], retry_after="1")
    article = ARTICLES / "energy-iron-air-storage.txt"
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY, faults=plan) as server:
        result = newsdesk("run", str(article), "--out", str(tmp_path), "--base-url", server.base_url)
        chats = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert result.returncode == 0, result.stderr
    first, retried = chats[0], chats[-1]
    assert retried.received_at - first.received_at >= 0.95
    report = report_of(tmp_path)
    assert report["rate_limit_pause_s"] == 1.0  # type: ignore[index]
    assert "paused 1s for rate limits" in result.stdout + result.stderr
    logs = (tmp_path / "logs").glob("*.jsonl")
    finished = [json.loads(line) for log in logs for line in log.read_text(encoding="utf-8").splitlines()]
    assert [e["rate_limit_pause_s"] for e in finished if e["event"] == "run_finished"] == [1.0]


def test_429_retry_after_as_an_http_date_is_honoured(tmp_path: Path) -> None:
    """Retry-After may be an HTTP date (RFC 9110): the retry waits until then, not a second."""
    until = time.time() + 3
    plan = FaultPlan(queue=["429"], retry_after=formatdate(until, usegmt=True))
    article = ARTICLES / "energy-iron-air-storage.txt"
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY, faults=plan) as server:
        started = time.monotonic() - time.time()  # the server's clock against the wall clock
        result = newsdesk("run", str(article), "--out", str(tmp_path), "--base-url", server.base_url)
        chats = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert result.returncode == 0, result.stderr
    retried_at = chats[-1].received_at - started
    assert retried_at >= int(until) - 0.05, "the date has whole seconds: not before its second"


def test_wrong_api_key_fails_with_a_clear_line_and_no_key_on_disk(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    wrong = "sk-wrong-zyxwvutsrqponmlkjihgfedcba9876543210"
    article = ARTICLES / "energy-iron-air-storage.txt"
    result = newsdesk("run", str(article), "--out", str(tmp_path), "--base-url", server.base_url,
                      env={"OPENAI_API_KEY": wrong})  # fmt: skip
    assert result.returncode == 1
    entry = report_of(tmp_path)["articles"][0]  # type: ignore[index]
    assert entry["status"] == "failed"
    assert "401" in entry["error"] and "OPENAI_API_KEY" in entry["error"]
    assert entry["endpoint_errors"] == {"401": 2}, "a refusal that is not retried is counted too"
    for path, text in all_written_text(tmp_path):
        assert wrong not in text and wrong[-8:] not in text, path
    assert wrong not in result.stderr + result.stdout


def test_unknown_model_is_reported_as_such(tmp_path: Path) -> None:
    article = ARTICLES / "energy-iron-air-storage.txt"
    with FakeOpenAIServer(RECORDINGS, api_key=API_KEY, known_models={"real-model"}) as server:
        result = newsdesk("run", str(article), "--out", str(tmp_path), "--base-url", server.base_url,
                          "--model", "no-such-model")  # fmt: skip
    assert result.returncode == 1
    entry = report_of(tmp_path)["articles"][0]  # type: ignore[index]
    assert "404" in entry["error"] and "no-such-model" in entry["error"]


def test_unreachable_endpoint_fails_each_article_with_a_reason(tmp_path: Path) -> None:
    article = ARTICLES / "energy-iron-air-storage.txt"
    config = tmp_path / "fast.toml"
    config.write_text("max_retries = 1\nconnect_timeout_s = 1.0\n", encoding="utf-8")
    result = newsdesk("run", str(article), "--out", str(tmp_path / "out"), "--config", str(config),
                      "--base-url", "http://127.0.0.1:9/v1")  # fmt: skip
    assert result.returncode == 1
    entry = report_of(tmp_path / "out")["articles"][0]  # type: ignore[index]
    assert "could not be reached" in entry["error"]
    assert entry["endpoint_errors"] == {"connection": 4}, "two calls, two attempts each, all counted"


def test_record_then_replay_round_trip(server: FakeOpenAIServer, tmp_path: Path) -> None:
    recordings = tmp_path / "rec"
    article = ARTICLES / "zh-rrr-cut.txt"
    recorded = newsdesk("run", str(article), "--out", str(tmp_path / "a"), "--base-url", server.base_url,
                        "--record", str(recordings))  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    files = sorted(p.relative_to(recordings).as_posix() for p in recordings.rglob("*.json"))
    assert [f.split("/")[1] for f in files] == ["en-0.json", "zh-0.json"]
    document = json.loads((recordings / files[0]).read_text(encoding="utf-8"))
    assert set(document) >= {"key", "prompt_version", "request", "response"}
    assert document["request"]["messages"][0]["role"] == "system"
    assert document["response"]["choices"][0]["message"]["content"]
    assert_no_secret(recordings)

    replayed = newsdesk("run", str(article), "--out", str(tmp_path / "b"), "--replay", str(recordings),
                        env={"OPENAI_API_KEY": ""})  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    a = json.loads(next((tmp_path / "a").rglob("analysis.json")).read_text(encoding="utf-8"))
    b = json.loads(next((tmp_path / "b").rglob("analysis.json")).read_text(encoding="utf-8"))
    assert a["zh"] == b["zh"] and a["en"] == b["en"]


def test_a_recordings_folder_that_cannot_be_written_stops_the_run_and_nothing_is_paid_twice(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    bad, good, out = tmp_path / "a-file" / "rec", tmp_path / "rec", tmp_path / "out"
    articles = [str(ARTICLES / "zh-rrr-cut.txt"), str(ARTICLES / "energy-iron-air-storage.txt")]
    config = tmp_path / "one.toml"
    config.write_text("concurrency = 1\n", encoding="utf-8")
    first = newsdesk("run", *articles, "--out", str(out), "--base-url", server.base_url, "--record", str(bad),
                     "--config", str(config))  # fmt: skip
    assert first.returncode == 1
    report = report_of(out)
    failed = [a for a in report["articles"] if a["status"] == "failed"]  # type: ignore[union-attr, index]
    assert len(failed) == 1 and f"cannot save the recording {bad}" in failed[0]["error"]
    assert "make --record" in failed[0]["error"] and "cannot write to" not in failed[0]["error"]
    assert [a["status"] for a in report["articles"]].count("not_started") == 1  # type: ignore[union-attr, index]
    paid = len([r for r in server.requests if r.path.endswith("/chat/completions")])
    assert paid == 2, "both calls of the first article were made once"
    entry: dict[str, Any] = failed[0]  # type: ignore[assignment]
    recorded = [json.loads((RECORDINGS / entry["id"] / f"{c}-0.json").read_text()) for c in ("en", "zh")]
    paid_tokens = sum(r["response"]["usage"]["prompt_tokens"] for r in recorded)
    assert entry["usage"]["prompt_tokens"] == paid_tokens, "answered and paid for, though not recorded"

    again = newsdesk(
        "run", *articles, "--out", str(out), "--base-url", server.base_url, "--record", str(good)
    )
    assert again.returncode == 0, again.stderr
    calls = len([r for r in server.requests if r.path.endswith("/chat/completions")])
    assert calls - paid == 2, (
        "the first article's answers came from the journal: only the second one's are new"
    )
    assert len(list(good.rglob("*.json"))) == 4, "the journaled answers were recorded on the rerun"
    entries: list[dict[str, Any]] = report_of(out)["articles"]  # type: ignore[assignment]
    (entry,) = [e for e in entries if e["id"] == entry["id"]]
    assert entry["usage"]["prompt_tokens"] == 0, "the first run reported what it paid: not again"


def test_replay_without_a_recording_says_how_to_record(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    article = ARTICLES / "energy-iron-air-storage.txt"
    result = newsdesk("run", str(article), "--out", str(tmp_path / "out"), "--replay", str(empty))
    assert result.returncode == 1
    entry = report_of(tmp_path / "out")["articles"][0]  # type: ignore[index]
    assert "--record" in entry["error"]


def scripted_from_recordings(fence: bool) -> Callable[[dict[str, Any]], Reply]:
    """A server script answering any output mode with the fixture answer for the same article."""
    by_article: dict[tuple[str, str], str] = {}
    for path in RECORDINGS.rglob("*-0.json"):
        document = json.loads(path.read_text(encoding="utf-8"))
        article_message = document["request"]["messages"][1]["content"]
        content = document["response"]["choices"][0]["message"]["content"]
        by_article[(article_message, document["key"]["call"])] = content

    def answer(body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        call = "zh" if 'single key "zh"' in messages[2]["content"] else "en"
        content = by_article[(messages[1]["content"], call)]
        if fence:
            content = f"Here is the analysis.\n```json\n{content}\n```"
        return Reply.chat(body, content)

    return answer


@pytest.mark.parametrize("mode", ["json_object", "text"])
def test_other_output_modes_work_over_http(mode: str, tmp_path: Path) -> None:
    article = ARTICLES / "central-bank-rate-decision.md"
    script = scripted_from_recordings(fence=mode == "text")
    with FakeOpenAIServer(script=script, api_key=API_KEY) as server:
        result = newsdesk("run", str(article), "--out", str(tmp_path), "--base-url", server.base_url,
                          env={"NEWSDESK_OUTPUT_MODE": mode})  # fmt: skip
        bodies = [r.body for r in server.requests if isinstance(r.body, dict)]
    assert result.returncode == 0, result.stderr
    assert len(bodies) == 2
    for body in bodies:
        if mode == "json_object":
            assert body["response_format"] == {"type": "json_object"}
        else:
            assert "response_format" not in body
        assert '"additionalProperties": false' in body["messages"][-1]["content"]
