"""Build and maintain the hand-authored recordings in ``fixtures/recordings``.

No model API was reachable when the fixtures were made, so their answers are written by hand.
This tool wraps each hand-written answer in the exact request body the current prompts produce
and a chat-completion response body, so that replay and the loopback server serve them like
real recordings.

    python -m pipeline.testing.fixtures export ANSWERS_DIR  # the answers as editable files
    python -m pipeline.testing.fixtures build ANSWERS_DIR   # answers named <input>.<call>.json
    python -m pipeline.testing.fixtures restamp             # after an intended prompt change

``restamp`` rewrites the requests of existing recordings for the current prompts and keeps
their answers. It is only honest for hand-authored answers: recordings of a real model that
went stale must be recorded again (``newsdesk run --record``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.analyze import Analyzer
from pipeline.config import Settings
from pipeline.emit.write import atomic_write_text
from pipeline.ingest import load_articles
from pipeline.ingest.article import Article, estimate_tokens
from pipeline.model.base import CallKey, ModelReply, ModelRequest, reply_from_body
from pipeline.model.replay import read_recording, recording_document, recording_path
from pipeline.prompts import PromptBook
from pipeline.schema import LANGS, Lang

CREATED = 1_795_000_000  # a fixed timestamp keeps rebuilt recordings byte-identical


def answer_name(article: Article, call: str) -> str:
    """`x.txt.en.json` for a file, `x.jsonl.2.en.json` for line 2 of a JSON Lines file."""
    name = Path(article.input_path).name
    if ":" in name:
        stem, line = name.rsplit(":", 1)
        name = f"{stem}.{line}"
    return f"{name}.{call}.json"


def response_body(request: ModelRequest, content: str) -> dict[str, Any]:
    prompt = sum(estimate_tokens(m["content"]) + 4 for m in request.body["messages"])
    completion = estimate_tokens(content)
    digest = hashlib.sha256(f"{request.key}{content}".encode()).hexdigest()[:24]
    return {
        "id": f"chatcmpl-{digest}",
        "object": "chat.completion",
        "created": CREATED,
        "model": request.body["model"],
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": None}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": 0}},
    }  # fmt: skip


def first_request(book: PromptBook, article: Article, call: Lang) -> ModelRequest:
    messages = book.messages(article, call)
    body = book.request_body(call, messages, book.settings.max_output_tokens)
    return ModelRequest(CallKey(article.id, call, 0), body, book.version)


def write_recording(folder: Path, request: ModelRequest, content: str) -> Path:
    path = recording_path(folder, request)
    document = recording_document(request, response_body(request, content))
    atomic_write_text(path, json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    return path


def build(articles_dir: Path, answers_dir: Path, recordings: Path) -> int:
    """Write a recording for each answer; every answer is read first, so a missing or broken one
    stops the build before any recording is rewritten."""
    book = PromptBook(Settings())
    planned: list[tuple[ModelRequest, str]] = []
    problems: list[str] = []
    for article in load_articles([articles_dir]):
        if not isinstance(article, Article):
            problems.append(f"{article.label}: {article.reason}")
            continue
        for call in LANGS:
            answer = answers_dir / answer_name(article, call)
            try:
                content = json.dumps(json.loads(answer.read_text(encoding="utf-8")), ensure_ascii=False)
            except (OSError, ValueError) as exc:
                problems.append(f"{answer}: {getattr(exc, 'strerror', None) or exc}")
                continue
            planned.append((first_request(book, article, call), content))
    if problems:
        raise SystemExit("nothing was written; fix these first:\n  " + "\n  ".join(problems))
    for request, content in planned:
        write_recording(recordings, request, content)
    return len(planned)


def _recorded_answers(
    articles_dir: Path, recordings: Path
) -> Iterator[tuple[Article, Lang, ModelRequest, str]]:
    """Each fixture call that has a recording: its article, call, current first request and the
    recorded answer."""
    book = PromptBook(Settings())
    for article in load_articles([articles_dir]):
        if not isinstance(article, Article):
            continue
        for call in LANGS:
            request = first_request(book, article, call)
            path = recording_path(recordings, request)
            if path.is_file():
                recorded = json.loads(path.read_text(encoding="utf-8"))
                yield article, call, request, recorded["response"]["choices"][0]["message"]["content"]


def restamp(articles_dir: Path, recordings: Path) -> int:
    """Rewrite each recording's request for the current prompts, keeping its answer. Each article
    is replayed as a run would replay it, so re-asks get the request the run sends them."""
    book = PromptBook(Settings())
    stamper = _Restamper(recordings)

    async def replay_all() -> None:
        for article in load_articles([articles_dir]):
            if isinstance(article, Article):
                await Analyzer(stamper, book, book.settings).analyze(article)

    asyncio.run(replay_all())
    return stamper.written


class _Restamper:
    """Answers each call from its recording and writes the recording again for today's request."""

    def __init__(self, recordings: Path) -> None:
        self.recordings = recordings
        self.written = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        reply = reply_from_body(read_recording(recording_path(self.recordings, request), request)["response"])
        write_recording(self.recordings, request, reply.content or "")
        self.written += 1
        return reply

    async def aclose(self) -> None:
        return None


def export(articles_dir: Path, recordings: Path, answers: Path) -> int:
    """Write each recording's answer as an editable, pretty-printed file (the input of `build`)."""
    written = 0
    for article, call, _, content in _recorded_answers(articles_dir, recordings):
        text = json.dumps(json.loads(content), ensure_ascii=False, indent=2) + "\n"
        atomic_write_text(answers / answer_name(article, call), text)
        written += 1
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.testing.fixtures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("command", choices=("build", "restamp", "export"))
    parser.add_argument(
        "answers", nargs="?", type=Path, help="folder of hand-written answers (build, export)"
    )
    parser.add_argument("--articles", type=Path, default=Path("fixtures/articles"))
    parser.add_argument("--recordings", type=Path, default=Path("fixtures/recordings"))
    args = parser.parse_args(argv)
    if args.command in ("build", "export") and args.answers is None:
        parser.error(f"{args.command} needs the folder of answers")
    if args.command == "build":
        count = build(args.articles, args.answers, args.recordings)
    elif args.command == "export":
        count = export(args.articles, args.recordings, args.answers)
        print(f"{count} answer(s) written to {args.answers}")
        return
    else:
        count = restamp(args.articles, args.recordings)
    print(f"{count} recording(s) written to {args.recordings}")


if __name__ == "__main__":
    main()
