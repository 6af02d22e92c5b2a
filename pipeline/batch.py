"""OpenAI Batch API mode (``newsdesk run --batch-api``): the nightly job at half the price.

1. The first request of every call (``en`` and ``zh``) of every article still to do goes into
   a JSONL file, each line the same body live mode would send, with ``custom_id`` =
   ``<article id>:<call>:0`` (several files when they are more than one batch takes). Each file is
   uploaded and saved in ``OUT/.batch/state.json``, then its batch made and its id saved at once,
   so a rerun resumes polling instead of submitting again, and sends only what no saved batch
   holds (an upload whose batch may or may not have been made is looked for first).
2. Each batch is polled until it ends; its output file is downloaded and each answer written to
   the call journal (``OUT/.calls``); the error file's lines are simply not journaled.
3. The normal run follows: the journal answers the batched calls, and whatever failed in the
   batch, or fails validation, goes through live requests and re-asks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import openai
from openai.types import Batch

from pipeline.analyze import first_request
from pipeline.config import Settings
from pipeline.emit.write import atomic_write_text
from pipeline.errors import ConfigError, ModelUnavailable
from pipeline.events import EventLog
from pipeline.ingest import InputFailure, Limits, discover, load_file
from pipeline.ingest.article import Article
from pipeline.model.base import ChatModel, ModelRequest
from pipeline.model.cache import JournaledModel
from pipeline.model.replay import request_sha256
from pipeline.prompts import PromptBook
from pipeline.redact import Redactor
from pipeline.report import RunReport
from pipeline.runner import Progress, Runner, RunOptions, in_shard, new_run_id
from pipeline.schema import LANGS

STATE = Path(".batch") / "state.json"
ENDPOINT: Final = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")


def custom_id(request: ModelRequest) -> str:
    return f"{request.key.article_id}:{request.key.call}:{request.key.attempt}"


def batch_line(request: ModelRequest) -> str:
    line = {"custom_id": custom_id(request), "method": "POST", "url": ENDPOINT, "body": request.body}
    return json.dumps(line, ensure_ascii=False)


async def run_batch(
    settings: Settings,
    book: PromptBook,
    chat: ChatModel,
    journal: JournaledModel | None,
    paths: list[Path],
    options: RunOptions,
    progress: Progress,
    api_key: str,
) -> RunReport:
    if journal is None:
        raise ConfigError("--batch-api needs a live endpoint")
    if settings.budget_usd is not None:
        raise ConfigError("--batch-api is paid batch by batch and cannot honour --budget-usd; "
                          "drop the budget or split the folder with --shard")  # fmt: skip
    client = openai.AsyncOpenAI(api_key=api_key, base_url=settings.base_url, max_retries=3)
    options.mode = "batch"
    run_id = new_run_id()
    runner = Runner(settings, chat, book, progress, journal)

    async def submit_and_collect(events: EventLog) -> None:  # runs inside the output folder's lock
        state_path = options.out / STATE
        records = _read_state(state_path)
        for record in [r for r in records if r.get("batch_id")]:
            if not await _known(client, record):
                records.remove(record)
                _warn(progress, events, "batch_unknown", batch_id=record["batch_id"],
                     message=f"the endpoint does not know the saved batch {record['batch_id']} (expired, or "
                             "made at another endpoint): the pending requests are sent again")  # fmt: skip
        # --force drops the journal of the articles to redo now, once: the answers the batch brings
        # back are then this run's, and the runner, told so, keeps them
        forget = options.force and not records
        pending = _pending_requests(runner, book, journal, paths, options, forget)
        requests = {custom_id(r): r for r in pending}
        options.journal_is_fresh = True

        # a record none of whose requests this run sends is another run's (another shard, other
        # inputs, the same output folder): it stays in the state as it is, for that run
        def theirs(record: dict[str, Any]) -> bool:
            return record["sent"] is not None and not record["sent"].keys() & requests.keys()

        others = [r for r in records if theirs(r)]
        saved = [r for r in records if not theirs(r)]

        def save() -> None:
            _save_state(state_path, [*others, *saved])

        for record in [r for r in saved if not r.get("batch_id")]:  # a stopped run's uploads
            if not _still_wanted(record, requests):  # changed since: no batch of it is needed
                saved.remove(record)
                continue
            record["lost"] = True  # it may have been made a batch: that is looked for first
            try:
                await _create_batch(client, settings, record, saved, save)
            except _Refused:  # the file expired, say: no batch of it runs
                _warn(progress, events, "batch_upload_dropped", input_file_id=record["input_file_id"],
                     message=f"the uploaded file {record['input_file_id']} of a stopped run could not "
                             "be made a batch: its requests are sent again")  # fmt: skip
        covered = _covered(saved, requests)
        unsent = [r for key, r in requests.items() if key not in covered]
        for chunk in _chunks(unsent, settings.batch_max_requests, int(settings.batch_max_mb * 1_000_000)):
            record = await _upload(client, chunk)
            saved.append(record)
            try:
                await _create_batch(client, settings, record, saved, save)
            except _Refused as refused:
                raise refused.error from None
            progress.note(f"batch {record['batch_id']} submitted with {len(chunk)} request(s)")
            events.emit("batch_submitted", batch_id=record["batch_id"], requests=len(chunk))
        for record in saved:
            await _collect(client, settings, record, requests, journal, progress, redactor, events)
        if saved:
            progress.note("the calls no batch answered go through live requests")
        if others:
            _save_state(state_path, others)
        else:
            state_path.unlink(missing_ok=True)

    redactor = Redactor([api_key])  # the key from the configured variable, whatever its name
    try:
        return await runner.run(paths, options, run_id, before=submit_and_collect)
    except openai.APIError as exc:
        message = f"the Batch API failed: {type(exc).__name__}: {getattr(exc, 'message', exc)}"
        raise ModelUnavailable(redactor(message)) from None
    finally:
        await client.close()
        await chat.aclose()


def _pending_requests(
    runner: Runner,
    book: PromptBook,
    journal: JournaledModel,
    paths: Iterable[Path],
    options: RunOptions,
    forget: bool = False,
) -> list[ModelRequest]:
    """The first request of each call of each article that is neither done nor journaled (with
    `forget`, for --force, each such article's journal is dropped first)."""
    limits = Limits(runner.settings.max_input_bytes, runner.settings.max_input_tokens)
    seen: set[str] = set()
    requests: list[ModelRequest] = []
    for item in discover(paths, exclude=options.out):
        loaded = [item] if isinstance(item, InputFailure) else load_file(item, limits)
        for article in loaded:
            if not isinstance(article, Article) or article.content_sha256 in seen:
                continue
            seen.add(article.content_sha256)
            if not in_shard(article.content_sha256, options.shard):
                continue
            if not options.force and runner.is_done(article, options.out):
                continue
            if forget:
                journal.forget(article.id)
            for call in LANGS:
                request = first_request(book, article, call, runner.settings.max_output_tokens)
                if not journal.has(request):
                    requests.append(request)
    return requests


def _still_wanted(record: dict[str, Any], requests: dict[str, ModelRequest]) -> bool:
    """Whether an upload holds a request this run still needs answered (the same request)."""
    sent: dict[str, str] = record["sent"] or {}
    return any(key in requests and request_sha256(requests[key].body) == sha for key, sha in sent.items())


def _covered(saved: list[dict[str, Any]], requests: dict[str, ModelRequest]) -> set[str]:
    """The requests the saved batches already hold (the one batch an older version saved, without
    its list of requests, holds all of them)."""
    covered: set[str] = set()
    for record in saved:
        covered.update(requests if record["sent"] is None else record["sent"])
    return covered


def _chunks(requests: list[ModelRequest], max_requests: int, max_bytes: int) -> Iterator[list[ModelRequest]]:
    """The requests in batches the endpoint takes: at most `max_requests` lines and `max_bytes` of
    input file each (OpenAI: 50,000 and 200 MB). A line bigger than that goes alone."""
    chunk: list[ModelRequest] = []
    size = 0
    for request in requests:
        line_size = len(batch_line(request).encode()) + 1
        if chunk and (len(chunk) >= max_requests or size + line_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(request)
        size += line_size
    if chunk:
        yield chunk


async def _upload(client: openai.AsyncOpenAI, requests: list[ModelRequest]) -> dict[str, Any]:
    """Upload the input file of a batch: its record, without a batch yet."""
    data = ("\n".join(batch_line(r) for r in requests) + "\n").encode()
    uploaded = await client.files.create(file=("newsdesk-batch.jsonl", data), purpose="batch")
    sent = {custom_id(request): request_sha256(request.body) for request in requests}
    return {"batch_id": None, "input_file_id": uploaded.id, "uploaded_at": uploaded.created_at,
            "requests": len(requests), "sent": sent}  # fmt: skip


CREATE_ATTEMPTS = 4  # to make a batch, with a look for it after each attempt that may have made it
LOOKUP_LIMIT = 5000  # batches of the endpoint's listing read in one look


class _Refused(Exception):
    """The endpoint refused to make a batch of the file (a 4xx), and none of it exists."""

    def __init__(self, error: openai.APIStatusError) -> None:
        super().__init__(str(error))
        self.error = error


async def _create_batch(
    client: openai.AsyncOpenAI, settings: Settings, record: dict[str, Any], saved: list[dict[str, Any]],
    save: Callable[[], None],
) -> None:  # fmt: skip
    """Make the batch of an uploaded file (`record`, one of `saved`); `save` writes the state.

    The record is saved first: a run that stops before it knows whether the endpoint made the
    batch leaves the file for the next run to look for. The SDK's blind retries are off: after
    an attempt that failed where the endpoint may have made the batch anyway (a dropped
    connection, a 5xx), the batch of this file is looked for, and made again only if there is none
    (else it would run, and be paid for, twice). An endpoint that cannot list its batches is
    asked again, as the SDK would."""
    save()
    creator = client.with_options(max_retries=0)
    failure: Exception | None = None
    for attempt in range(CREATE_ATTEMPTS):
        made: Batch | None = None
        looked = False  # whether the listing was read, and holds no batch of the file
        if attempt or record.get("lost"):
            if attempt:
                await asyncio.sleep(min(30.0, settings.batch_poll_s * 2**attempt))
            try:
                made = await _batch_of_file(creator, record["input_file_id"], record.get("uploaded_at") or 0)
                looked = made is None
            except openai.APIStatusError as exc:
                if exc.status_code not in (404, 405, 501):  # it lists batches: look again later
                    failure = exc
                    continue
                # it cannot list them: asked again, as the SDK would
            except openai.APIConnectionError as exc:
                failure = exc  # it cannot be told whether the batch was made: look again later
                continue
        if made is None:
            try:
                made = await creator.batches.create(
                    input_file_id=record["input_file_id"],
                    endpoint=ENDPOINT,
                    completion_window=settings.batch_completion_window,  # type: ignore[arg-type]
                    metadata={"tool": "newsdesk"},
                )
            except openai.APIStatusError as exc:
                if exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                    if record.get("lost") and not looked:  # an earlier attempt may have made it
                        save()
                        raise
                    saved.remove(record)  # refused, and no batch of this file exists
                    save()
                    raise _Refused(exc) from None
                failure = exc
                record["lost"] = True
                continue
            except openai.APIConnectionError as exc:
                failure = exc
                record["lost"] = True
                continue
        record.pop("lost", None)
        record["batch_id"] = made.id
        save()
        return
    save()  # with "lost": the next run looks for the batch before making one
    assert failure is not None
    raise failure


async def _batch_of_file(client: openai.AsyncOpenAI, file_id: str, uploaded_at: int) -> Batch | None:
    """The batch made of the uploaded file, if any: batches are listed newest first, so the look
    ends at the first one made an hour before the file (or after LOOKUP_LIMIT batches)."""
    seen = 0
    async for batch in client.batches.list(limit=100):
        if batch.input_file_id == file_id:
            return batch
        seen += 1
        if batch.created_at < uploaded_at - 3600 or seen >= LOOKUP_LIMIT:
            return None
    return None


def _save_state(path: Path, saved: list[dict[str, Any]]) -> None:
    atomic_write_text(path, json.dumps({"batches": saved}) + "\n")


async def _collect(
    client: openai.AsyncOpenAI,
    settings: Settings,
    record: dict[str, Any],
    requests: dict[str, ModelRequest],
    journal: JournaledModel,
    progress: Progress,
    redactor: Redactor,
    events: EventLog,
) -> None:
    batch = await client.batches.retrieve(record["batch_id"])
    while batch.status not in TERMINAL:
        await asyncio.sleep(settings.batch_poll_s)
        batch = await client.batches.retrieve(batch.id)
    progress.note(f"batch {batch.id} {batch.status}")
    text = ""
    if batch.output_file_id:
        try:
            text = (await client.files.content(batch.output_file_id)).text
        except openai.NotFoundError:  # deleted, or expired: the calls go through live requests
            _warn(progress, events, "batch_output_missing", batch_id=batch.id,
                 message=f"the output file of batch {batch.id} is gone (404): its calls go through "
                         "live requests")  # fmt: skip
    sent: dict[str, str] = record["sent"] or {}
    answered = changed = 0
    for raw in text.splitlines():
        verdict = _journal_line(raw, requests, sent, journal, redactor)
        answered += verdict == "journaled"
        changed += verdict == "changed"
    if changed:
        _warn(progress, events, "batch_answers_outdated", batch_id=batch.id, answers=changed,
             message=f"{changed} answer(s) of batch {batch.id} were to requests that have changed since "
                     "(the model, prompts or settings): they are asked again live")  # fmt: skip
    held = len(sent) if sent else record.get("requests")
    events.emit("batch_finished", batch_id=batch.id, status=batch.status, collected=answered,
                requests=held, errors=_batch_errors(batch))  # fmt: skip
    progress.note(f"batch {batch.id}: {answered} answer(s) collected")


def _batch_errors(batch: Any) -> list[str]:
    """The reasons a batch gives for failing as a whole (a failed batch says why here)."""
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    return [str(getattr(e, "message", e))[:300] for e in errors][:5]


def _warn(progress: Progress, events: EventLog, event: str, message: str, **fields: Any) -> None:
    progress.note(f"warning: {message}")
    events.emit(event, message=message, **fields)


def _journal_line(
    raw: str, requests: dict[str, ModelRequest], sent: dict[str, str], journal: JournaledModel,
    redactor: Redactor,
) -> str:  # fmt: skip
    """Journal one line of a batch's output file: "journaled", "changed" when the request it
    answers is no longer the one this run would send, or "unusable" (its call then goes through a
    live request). The file comes from the provider: any line may be junk."""
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError):
        return "unusable"
    if not isinstance(line, dict):
        return "unusable"
    key = str(line.get("custom_id"))
    request = requests.get(key)
    response = line.get("response")
    if request is None or line.get("error") or not isinstance(response, dict):
        return "unusable"
    if response.get("status_code") != 200 or not isinstance(response.get("body"), dict):
        return "unusable"
    if key in sent and sent[key] != request_sha256(request.body):
        return "changed"
    journal.save(request, redactor.scrub_json(response["body"]), batch=True)
    return "journaled"


async def _known(client: openai.AsyncOpenAI, record: dict[str, Any]) -> bool:
    """Whether the endpoint still knows the saved batch (a 404 means it never will again)."""
    try:
        await client.batches.retrieve(record["batch_id"])
    except openai.NotFoundError:
        return False
    return True


def _read_state(path: Path) -> list[dict[str, Any]]:
    """The saved batches, oldest first, each with the requests it holds (``sent``: custom id ->
    request hash; None for the one batch an older version saved without that list: it holds them
    all), and the uploads of a run stopped before it knew whether their batch was made (no
    ``batch_id``). A record this cannot use (hand-edited, torn) is left out: its requests are
    sent again."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    if not isinstance(state, dict):
        return []
    if "batches" not in state:  # the one batch an older version saved (its "sent" came later)
        sent = state.get("sent")
        return [{**state, "sent": sent if isinstance(sent, dict) else None}] if _names_a_batch(state) else []
    batches = state["batches"]
    if not isinstance(batches, list):
        return []
    return [
        b for b in batches
        if isinstance(b, dict) and (_names_a_batch(b) or _names_an_upload(b)) and _holds_requests(b)
    ]  # fmt: skip


def _names_an_upload(record: dict[str, Any]) -> bool:
    file_id = record.get("input_file_id")
    uploaded = isinstance(record.get("uploaded_at", 0), int)
    return record.get("batch_id") is None and isinstance(file_id, str) and bool(file_id) and uploaded


def _holds_requests(record: dict[str, Any]) -> bool:
    return "sent" in record and isinstance(record["sent"], dict | None)


def _names_a_batch(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get("batch_id"), str) and bool(record["batch_id"])
