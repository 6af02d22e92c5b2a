"""The fake OpenAI server, driven by the real ``openai`` SDK over loopback HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletion

from pipeline.testing.server import (
    FAULT_KINDS,
    REFUSAL_TEXT,
    FakeOpenAIServer,
    FaultPlan,
    Reply,
    find_recording,
    load_recordings,
    parse_multipart,
)

ROOT = Path(__file__).resolve().parents[1]
RECORDED_MODEL = "gpt-4.1-mini"
SYSTEM = {"role": "system", "content": "You analyse news articles. Answer in JSON."}
ARTICLE_1 = [SYSTEM, {"role": "user", "content": "Article a1: Chipmaker sells a unit for $900m."}]
ARTICLE_2 = [SYSTEM, {"role": "user", "content": "Article a2: 车企销量增长百分之三十五。"}]
ANSWER_1 = '{"title": "Chipmaker sells its unit", "score": 61}'
ANSWER_2 = '{"title": "车企销量大增", "score": 55}'
REASK = [
    {"role": "assistant", "content": '{"title": ""}'},
    {"role": "user", "content": "The title is empty. Answer again."},
]


class Answer(pydantic.BaseModel):
    title: str
    score: int


def make_recording(
    messages: list[dict[str, str]],
    content: str,
    *,
    article_id: str,
    attempt: int = 1,
    cached_tokens: int = 64,
) -> dict[str, Any]:
    request = {
        "model": RECORDED_MODEL,
        "messages": messages,
        "response_format": {"type": "json_schema", "json_schema": {"name": "Answer"}},
        "temperature": 0.2,
        "max_completion_tokens": 2000,
    }
    response = {
        "id": f"chatcmpl-{article_id}-{attempt}",
        "object": "chat.completion",
        "created": 1767225600,
        "model": RECORDED_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 812,
            "completion_tokens": 96,
            "total_tokens": 908,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        },
    }
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    return {
        "key": {"article_id": article_id, "call": "en", "attempt": attempt},
        "prompt_version": "v1",
        "request_sha256": digest,
        "request": request,
        "response": response,
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    root = tmp_path / "recordings"
    write_json(root / "a1-en-1.json", make_recording(ARTICLE_1, ANSWER_1, article_id="a1"))
    write_json(root / "zh" / "a2-en-1.json", make_recording(ARTICLE_2, ANSWER_2, article_id="a2"))
    write_json(root / "not-a-recording.json", {"key": "x", "request": {}})
    (root / "broken.json").write_text("{", encoding="utf-8")
    (root / "notes.txt").write_text("not json", encoding="utf-8")
    return root


@pytest.fixture
def server(recordings: Path) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(recordings) as running:
        yield running


@contextmanager
def sdk(server: FakeOpenAIServer, **options: Any) -> Iterator[openai.OpenAI]:
    options.setdefault("max_retries", 0)
    with openai.OpenAI(base_url=server.base_url, api_key="test-key", **options) as client:
        yield client


def ask(client: openai.OpenAI, messages: list[dict[str, str]] = ARTICLE_1) -> ChatCompletion:
    return client.chat.completions.create(model="gpt-test", messages=messages)  # type: ignore[arg-type]


def ask_parsed(client: openai.OpenAI) -> Any:
    return client.chat.completions.parse(
        model="gpt-test",
        messages=ARTICLE_1,  # type: ignore[arg-type]
        response_format=Answer,
    )


# ----------------------------------------------------------------------------- recordings


def test_loader_keeps_only_recordings_recursively(recordings: Path) -> None:
    loaded = load_recordings(recordings)
    assert sorted(r.key.article_id for r in loaded) == ["a1", "a2"]
    assert {r.path.name for r in loaded} == {"a1-en-1.json", "a2-en-1.json"}


def test_recorded_answer_comes_back_with_usage(server: FakeOpenAIServer) -> None:
    with sdk(server) as client:
        completion = ask(client, ARTICLE_2)
    assert completion.choices[0].message.content == ANSWER_2
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-test"  # the incoming model is echoed
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (812, 96)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 64


def test_parse_validates_a_recorded_answer(server: FakeOpenAIServer) -> None:
    with sdk(server) as client:
        parsed = ask_parsed(client)
    assert parsed.choices[0].message.parsed == Answer(title="Chipmaker sells its unit", score=61)


def test_requests_are_logged_with_lowercased_headers(server: FakeOpenAIServer) -> None:
    with sdk(server) as client:
        ask(client)
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.body["messages"] == ARTICLE_1


def test_reask_is_answered_by_the_recording_it_extends(server: FakeOpenAIServer) -> None:
    with sdk(server) as client:
        completion = ask(client, [*ARTICLE_1, *REASK])
    assert completion.choices[0].message.content == ANSWER_1


def test_longest_prefix_wins(tmp_path: Path) -> None:
    write_json(tmp_path / "1.json", make_recording(ARTICLE_1, ANSWER_1, article_id="a1"))
    retry = make_recording([*ARTICLE_1, *REASK], '{"title": "Fixed", "score": 1}', article_id="a1")
    write_json(tmp_path / "2.json", retry)
    loaded = load_recordings(tmp_path)
    assert find_recording(loaded, [*ARTICLE_1, *REASK]) is loaded[1]
    assert find_recording(loaded, [*ARTICLE_1, *REASK, *REASK]) is loaded[1]
    assert find_recording(loaded, ARTICLE_1) is loaded[0]
    assert find_recording(loaded, ARTICLE_1[:1]) is None


def test_unmatched_conversation_is_a_400_naming_it(server: FakeOpenAIServer) -> None:
    with sdk(server) as client, pytest.raises(openai.BadRequestError) as caught:
        ask(client, [SYSTEM, {"role": "user", "content": "An unseen article"}])
    assert caught.value.code == "recording_not_found"
    assert "An unseen article" in caught.value.message
    assert caught.value.request_id is not None


def test_invalid_url_is_a_404(server: FakeOpenAIServer) -> None:
    with sdk(server) as client, pytest.raises(openai.NotFoundError, match="Invalid URL"):
        client.embeddings.create(model="gpt-test", input="text")


# ----------------------------------------------------------------------------- faults


def test_429_fault_carries_retry_headers(server: FakeOpenAIServer) -> None:
    server.faults = FaultPlan(queue=["429"], retry_after="0", retry_after_ms=5)
    with sdk(server) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client)
        assert ask(client).choices[0].message.content == ANSWER_1  # the queue is used up
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("0", "5")
    assert caught.value.code == "rate_limit_exceeded"
    assert server.faults.injected == ["429"]


def test_sdk_retries_honour_retry_after_ms(server: FakeOpenAIServer) -> None:
    server.faults = FaultPlan(queue=["429", "429"], retry_after=None, retry_after_ms=10)
    with sdk(server, max_retries=2) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test",
            messages=ARTICLE_1,  # type: ignore[arg-type]
        )
    assert raw.retries_taken == 2
    assert raw.parse().choices[0].message.content == ANSWER_1
    assert len(server.requests) == 3


@pytest.mark.parametrize("kind", ["500", "503"])
def test_server_error_faults(server: FakeOpenAIServer, kind: Any) -> None:
    server.faults = FaultPlan(queue=[kind])
    with sdk(server) as client, pytest.raises(openai.InternalServerError) as caught:
        ask(client)
    assert caught.value.status_code == int(kind)
    assert caught.value.type == "server_error"


def test_drop_is_a_connection_error_and_the_server_survives(server: FakeOpenAIServer) -> None:
    server.faults = FaultPlan(queue=["drop"])
    with sdk(server) as client:
        with pytest.raises(openai.APIConnectionError):
            ask(client)
        assert ask(client).choices[0].message.content == ANSWER_1


def test_malformed_body_fails_json_decoding(server: FakeOpenAIServer) -> None:
    server.faults = FaultPlan(queue=["malformed"])
    with sdk(server) as client, pytest.raises(json.JSONDecodeError):
        ask(client)


def test_html_with_200_comes_back_as_a_string(server: FakeOpenAIServer) -> None:
    server.faults = FaultPlan(queue=["html"])
    with sdk(server) as client:
        result: Any = ask(client)
    assert isinstance(result, str)  # the SDK returns non-JSON text as it is
    assert "<html>" in result


def test_html_with_502_is_an_internal_server_error(server: FakeOpenAIServer) -> None:
    server.faults = FaultPlan(queue=["html"], html_status=502)
    with sdk(server) as client, pytest.raises(openai.InternalServerError) as caught:
        ask(client)
    assert caught.value.status_code == 502
    assert caught.value.response.headers["content-type"].startswith("text/html")


def test_length_fault_cuts_the_content(server: FakeOpenAIServer) -> None:
    server.faults = FaultPlan(queue=["length", "length"])
    with sdk(server) as client:
        completion = ask(client)
        with pytest.raises(openai.LengthFinishReasonError) as caught:
            ask_parsed(client)
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == ANSWER_1[: len(ANSWER_1) // 3]
    assert caught.value.completion.usage is not None
    assert caught.value.completion.usage.prompt_tokens == 812


def test_schema_fault_fails_validation(server: FakeOpenAIServer) -> None:
    server.faults = FaultPlan(queue=["schema", "schema"])
    with sdk(server) as client:
        assert ask(client).choices[0].message.content == '{"oops": true}'
        with pytest.raises(pydantic.ValidationError):
            ask_parsed(client)


def test_refusal_fault_sets_the_refusal_field(server: FakeOpenAIServer) -> None:
    server.faults = FaultPlan(queue=["refusal"])
    with sdk(server) as client:
        message = ask_parsed(client).choices[0].message
    assert (message.content, message.parsed, message.refusal) == (None, None, REFUSAL_TEXT)


def test_content_filter_fault(server: FakeOpenAIServer) -> None:
    server.faults = FaultPlan(queue=["content_filter", "content_filter"])
    with sdk(server) as client:
        choice = ask(client).choices[0]
        with pytest.raises(openai.ContentFilterFinishReasonError):
            ask_parsed(client)
    assert (choice.finish_reason, choice.message.content) == ("content_filter", None)


def test_fault_rate_is_seeded_and_follows_the_queue() -> None:
    def draws(plan: FaultPlan) -> list[Any]:
        return [plan.next_fault() for _ in range(200)]

    first = draws(FaultPlan(queue=["drop", None], rate=0.25, seed=1, kinds=["500", "503"]))
    assert first == draws(FaultPlan(queue=["drop", None], rate=0.25, seed=1, kinds=["500", "503"]))
    assert first[:2] == ["drop", None]
    assert set(first[2:]) == {None, "500", "503"}
    assert 20 < sum(kind is not None for kind in first[2:]) < 80
    assert draws(FaultPlan()) == [None] * 200
    assert set(draws(FaultPlan(rate=1.0, seed=3))) == set(FAULT_KINDS)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultPlan(queue=["404"])  # type: ignore[list-item]


# ----------------------------------------------------------------------------- scripts


def test_script_decides_and_faults_still_apply() -> None:
    seen: list[dict[str, Any]] = []

    def script(request: dict[str, Any]) -> Reply:
        seen.append(request)
        return Reply.chat(request, ANSWER_2, prompt_tokens=7, completion_tokens=3)

    plan = FaultPlan(queue=[None, "length"])
    with FakeOpenAIServer(script=script, faults=plan) as server, sdk(server) as client:
        first, second = ask(client), ask(client)
    assert first.choices[0].message.content == ANSWER_2
    assert first.usage is not None
    assert (first.usage.total_tokens, first.model) == (10, "gpt-test")
    assert second.choices[0].finish_reason == "length"
    assert [request["messages"] for request in seen] == [ARTICLE_1, ARTICLE_1]


def test_a_crashing_script_answers_500() -> None:
    def script(request: dict[str, Any]) -> Reply:
        raise KeyError("boom")

    with FakeOpenAIServer(script=script) as server, sdk(server) as client:
        with pytest.raises(openai.InternalServerError, match="boom"):
            ask(client)
        assert isinstance(server.errors[0], KeyError)


# ----------------------------------------------------------------------------- admission


def test_wrong_api_key_is_a_401(recordings: Path) -> None:
    with FakeOpenAIServer(recordings, api_key="test-key") as server:
        with sdk(server) as client:
            assert ask(client).choices[0].message.content == ANSWER_1
        with (
            openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0) as other,
            pytest.raises(openai.AuthenticationError) as caught,
        ):
            ask(other)
    assert caught.value.status_code == 401
    assert (caught.value.type, caught.value.code) == ("invalid_request_error", "invalid_api_key")


def test_chunked_body_and_missing_key_over_plain_http(recordings: Path) -> None:
    body = json.dumps({"model": "m", "messages": ARTICLE_1}).encode()
    with FakeOpenAIServer(recordings, api_key="test-key") as server:
        statuses, payloads = [], []
        for headers in ({}, {"Authorization": "Bearer test-key"}):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            chunks = iter([body[:10], body[10:]])
            connection.request("POST", "/v1/chat/completions", chunks, headers, encode_chunked=True)
            response = connection.getresponse()
            statuses.append(response.status)
            payloads.append(json.loads(response.read()))
            connection.close()
    assert statuses == [401, 200]
    assert payloads[0]["error"]["code"] == "invalid_api_key"
    assert payloads[1]["choices"][0]["message"]["content"] == ANSWER_1
    assert server.requests[0].headers["transfer-encoding"] == "chunked"


def test_unknown_model_is_a_404_and_models_are_listed(recordings: Path) -> None:
    known = {"gpt-test", "gpt-big"}
    with FakeOpenAIServer(recordings, known_models=known) as server, sdk(server) as client:
        assert ask(client).choices[0].message.content == ANSWER_1
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="gpt-nope", messages=ARTICLE_1)  # type: ignore[arg-type]
        listed = [model.id for model in client.models.list()]
    assert caught.value.code == "model_not_found"
    assert "gpt-nope" in caught.value.message
    assert listed == ["gpt-big", "gpt-test"]


def test_default_model_list(server: FakeOpenAIServer) -> None:
    with sdk(server) as client:
        assert [model.id for model in client.models.list()] == ["newsdesk-replay"]


def test_rpm_limit_rejects_the_request_over_the_cap(recordings: Path) -> None:
    with FakeOpenAIServer(recordings, rpm_limit=2) as server, sdk(server) as client:
        ask(client)
        ask(client)
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client)
        counters = server.counters
    assert 59 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert caught.value.response.headers["x-ratelimit-limit-requests"] == "2"
    assert (counters.accepted, counters.rejected_429) == (2, 1)


def test_rpm_window_slides(recordings: Path) -> None:
    with FakeOpenAIServer(recordings, rpm_limit=1, rpm_window=0.3) as server, sdk(server) as client:
        ask(client)
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client)
        time.sleep(0.35)
        ask(client)
        counters = server.counters
    assert 0 < int(caught.value.response.headers["retry-after-ms"]) <= 300
    assert (counters.accepted, counters.rejected_429) == (2, 1)


def test_latency_overlaps_concurrent_async_requests(recordings: Path) -> None:
    async def run(base_url: str) -> tuple[float, list[ChatCompletion]]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0) as client:
            started = time.perf_counter()
            calls = [
                client.chat.completions.create(model="gpt-test", messages=ARTICLE_1)  # type: ignore[arg-type]
                for _ in range(5)
            ]
            results = await asyncio.gather(*calls)
            return time.perf_counter() - started, results

    with FakeOpenAIServer(recordings, latency=0.2) as server:
        elapsed, results = asyncio.run(run(server.base_url))
    assert 0.2 <= elapsed < 0.6
    assert {result.choices[0].message.content for result in results} == {ANSWER_1}


# ----------------------------------------------------------------------------- files, batches


def batch_line(custom_id: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    body = {"model": "gpt-batch", "messages": messages}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\r\n" for row in rows).encode()


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> dict[str, Any]:
    assert file_id is not None
    rows = [json.loads(line) for line in client.files.content(file_id).text.splitlines()]
    return {row["custom_id"]: row for row in rows}


def submit(client: openai.OpenAI, data: bytes) -> Any:
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "test"},
    )


def test_file_upload_round_trips(server: FakeOpenAIServer) -> None:
    data = jsonl([batch_line("a1", ARTICLE_1), batch_line("a2", ARTICLE_2)])
    with sdk(server) as client:
        uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
        assert client.files.content(uploaded.id).content == data
        assert client.files.retrieve(uploaded.id).filename == "in.jsonl"
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve("file-missing")
    assert (uploaded.purpose, uploaded.bytes, uploaded.status) == ("batch", len(data), "processed")


def test_batch_flow(server: FakeOpenAIServer) -> None:
    lost = [SYSTEM, {"role": "user", "content": "unrecorded"}]
    rows = [batch_line("a1", ARTICLE_1), batch_line("a2", ARTICLE_2), batch_line("lost", lost)]
    with sdk(server) as client:
        created = submit(client, jsonl(rows))
        statuses = [created.status] + [client.batches.retrieve(created.id).status for _ in range(2)]
        batch = client.batches.retrieve(created.id)
        output = read_jsonl(client, batch.output_file_id)
        errors = read_jsonl(client, batch.error_file_id)
    assert statuses == ["validating", "in_progress", "completed"]
    assert (batch.status, batch.metadata) == ("completed", {"run": "test"})
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}
    assert batch.usage is not None
    assert (batch.usage.input_tokens, batch.usage.input_tokens_details.cached_tokens) == (1624, 128)
    a1 = output["a1"]
    assert (a1["error"], a1["response"]["status_code"]) == (None, 200)
    completion = ChatCompletion.model_validate(a1["response"]["body"])
    assert (completion.choices[0].message.content, completion.model) == (ANSWER_1, "gpt-batch")
    assert list(errors) == ["lost"]
    assert errors["lost"]["response"]["status_code"] == 400
    assert errors["lost"]["response"]["body"]["error"]["code"] == "recording_not_found"


def test_batch_lines_draw_faults(recordings: Path) -> None:
    plan = FaultPlan(queue=["500", "drop", "length"])
    rows = [batch_line(f"line-{n}", ARTICLE_1) for n in range(4)]
    with (
        FakeOpenAIServer(recordings, faults=plan, batch_statuses=["completed"]) as server,
        sdk(server) as client,
    ):
        batch = submit(client, jsonl(rows))
        output = read_jsonl(client, batch.output_file_id)
        errors = read_jsonl(client, batch.error_file_id)
    assert batch.status == "completed"
    assert errors["line-0"]["response"]["status_code"] == 500
    dropped = errors["line-1"]
    assert (dropped["response"], dropped["error"]["code"]) == (None, "server_error")
    assert output["line-2"]["response"]["body"]["choices"][0]["finish_reason"] == "length"
    assert output["line-3"]["response"]["body"]["choices"][0]["finish_reason"] == "stop"


def test_invalid_batch_input_fails_validation(server: FakeOpenAIServer) -> None:
    bad = [batch_line("a1", ARTICLE_1), batch_line("a1", ARTICLE_2), {"custom_id": "x"}]
    with sdk(server) as client:
        created = submit(client, jsonl(bad) + b"not json\n")
        failed = client.batches.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_missing")
    assert (created.status, failed.status) == ("validating", "failed")
    assert failed.errors is not None
    assert failed.errors.data is not None
    assert [error.line for error in failed.errors.data] == [2, 3, 4]
    assert failed.output_file_id is None


def test_parse_multipart_keeps_bytes_exact() -> None:
    payload = b"line one\r\n--not-the-boundary\r\nline two\n"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + payload + b"\r\n--XyZ--\r\n"
    )
    form = parse_multipart('multipart/form-data; boundary="XyZ"', body)
    assert form["purpose"].text == "batch"
    assert (form["file"].filename, form["file"].data) == ("a.jsonl", payload)


# ----------------------------------------------------------------------------- lifecycle, CLI


def test_lifecycle(recordings: Path) -> None:
    server = FakeOpenAIServer(recordings)
    with pytest.raises(RuntimeError):
        _ = server.base_url
    with server:
        assert server.base_url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError):
            server.start()
    server.stop()  # idempotent
    with pytest.raises(ValueError, match="batch_statuses"):
        FakeOpenAIServer(batch_statuses=["validating"])


def test_command_line_serves_until_interrupted(recordings: Path) -> None:
    command = [sys.executable, "-m", "pipeline.testing.server", "--recordings", str(recordings)]
    with subprocess.Popen(
        [*command, "--port", "0", "--rpm", "100"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        try:
            with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as client:
                content = ask(client).choices[0].message.content
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=10)
    assert base_url.startswith("http://127.0.0.1:")
    assert content == ANSWER_1
    assert process.returncode == 0, stderr
