"""``newsdesk run --dry-run``: render every request without calling the model; estimate tokens and cost."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Settings
from pipeline.cost import cost_usd
from pipeline.ingest import InputFailure, Limits, load_articles
from pipeline.ingest.article import estimate_tokens
from pipeline.prompts import PromptBook
from pipeline.schema import LANGS, Usage


@dataclass
class DryRun:
    articles: int = 0
    failures: list[InputFailure] = field(default_factory=list)  # inputs that cannot be read, and why
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # assumed: half of max_output_tokens per call
    cost_usd: float | None = None

    @property
    def failed_inputs(self) -> int:
        return len(self.failures)


def request_tokens(body: dict[str, object]) -> int:
    """An estimate of a request's prompt tokens: its messages and, when sent, its schema."""
    messages = body.get("messages")
    total = (
        sum(estimate_tokens(str(m.get("content", ""))) + 4 for m in messages)
        if isinstance(messages, list)
        else 0
    )
    if "response_format" in body:
        total += estimate_tokens(json.dumps(body["response_format"]))
    return total


def dry_run(paths: Iterable[Path], settings: Settings, book: PromptBook, out: Path | None = None) -> DryRun:
    """What a run would send for the inputs under `paths` (the output folder `out` left out)."""
    result = DryRun()
    limits = Limits(settings.max_input_bytes, settings.max_input_tokens)
    for item in load_articles(paths, limits, exclude=out):
        if isinstance(item, InputFailure):
            result.failures.append(item)
            continue
        result.articles += 1
        for call in LANGS:
            body = book.request_body(call, book.messages(item, call), settings.max_output_tokens)
            result.requests += 1
            result.prompt_tokens += request_tokens(body)
            result.completion_tokens += settings.max_output_tokens // 2
    price = settings.price()
    if price is not None:
        usage = Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
        result.cost_usd = cost_usd(usage, price)
    return result
