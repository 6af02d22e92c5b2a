"""One article through the model: ask both calls, validate, re-ask what failed, assemble.

Both calls (``en``: scores, tags and the English section; ``zh``: the Chinese section) go out
at once. Each answer is parsed against its schema and checked; a call whose answer has errors
is re-asked with the findings, within its budget. A reply cut off by the token limit is asked
again with a larger limit (it is never fed back); a refusal or a content-filter stop fails the
article as what it is.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel

from pipeline.config import Settings
from pipeline.errors import (
    AnswerRejected,
    ModelError,
    ModelUnavailable,
    RecordingUnwritable,
    ReplyFiltered,
    ReplyRefused,
    ReplyTruncated,
)
from pipeline.ingest.article import Article
from pipeline.model.base import CallKey, ChatModel, ModelReply, ModelRequest
from pipeline.prompts import Message, PromptBook
from pipeline.schema import (
    LANGS,
    Analysis,
    ArticleMeta,
    ChineseAnswer,
    Disclaimer,
    EnglishAnswer,
    FindingOut,
    Generation,
    Lang,
    ModelPart,
    Usage,
)
from pipeline.validate import Finding, errors, parse_answer
from pipeline.validate.source import source_figure_texts
from pipeline.workers import CheckContext, InlineWorkers, Workers


def check_context(book: PromptBook) -> CheckContext:
    return CheckContext(book.glossary, book.system_prompt)


def first_request(book: PromptBook, article: Article, call: Lang, max_tokens: int) -> ModelRequest:
    """The first request of one of the article's calls, as a run makes it (and journals its answer)."""
    body = book.request_body(call, book.messages(article, call), max_tokens)
    return ModelRequest(CallKey(article.id, call, 0), body, book.version)


@dataclass
class Conversation:
    """The running exchange of one call."""

    call: Lang
    messages: list[Message]
    max_tokens: int
    requests: int = 0
    reasks: int = 0
    usage: Usage = field(default_factory=Usage)
    paid: Usage = field(default_factory=Usage)
    paid_batch: Usage = field(default_factory=Usage)
    content: str | None = None
    answer: BaseModel | None = None
    parse_findings: list[Finding] = field(default_factory=list)
    stale: bool = False
    spoiled: bool = False  # its answer was refused, filtered, cut off or rejected: not one to keep
    usage_estimated: bool = False  # a reply came without usage: its tokens are estimates
    endpoint_errors: Counter[str] = field(default_factory=Counter)  # what the endpoint answered instead


@dataclass
class ArticleOutcome:
    """What one article came to: an analysis, or the error that stopped it (never both)."""

    analysis: Analysis | None
    usage: Usage  # every attempt that shaped this article, including journaled ones
    calls: int
    findings: list[Finding]
    stale: bool
    error: str | None = None
    paid: Usage = field(default_factory=Usage)  # what this run paid for at the live price
    paid_batch: Usage = field(default_factory=Usage)  # ... and at the Batch API price
    fatal: bool = False  # the endpoint failed in a way every other article would share
    spoiled_calls: list[str] = field(default_factory=list)  # whose journaled answers a retry must not reuse
    usage_estimated: bool = False  # some reply reported no usage: the tokens (and cost) are estimates
    endpoint_errors: dict[str, int] = field(default_factory=dict)  # by kind: "429", "503", "timeout"


class Analyzer:
    def __init__(self, model: ChatModel, book: PromptBook, settings: Settings) -> None:
        self.model = model
        self.book = book
        self.settings = settings
        self.workers: Workers = InlineWorkers(check_context(book))

    async def analyze(self, article: Article) -> ArticleOutcome:
        """The finished analysis, or the reason there is none; usage counts every attempt."""
        talks = {lang: Conversation(lang, self.book.messages(article, lang), self.settings.max_output_tokens)
                 for lang in LANGS}  # fmt: skip
        try:
            return await self._converse(article, talks)
        except AnswerRejected as exc:
            for finding in errors(exc.findings):
                talks[finding.lang or "en"].spoiled = True
            return self._failure(talks, str(exc), exc.findings)
        except ModelError as exc:
            outcome = self._failure(talks, str(exc), [])
            outcome.fatal = bool(getattr(exc, "fatal", False))
            return outcome

    async def _converse(self, article: Article, talks: dict[Lang, Conversation]) -> ArticleOutcome:
        pending: list[Lang] = list(LANGS)
        while True:
            results = await asyncio.gather(
                *(self._ask(article, talks[lang]) for lang in pending), return_exceptions=True
            )
            for result in results:  # both calls finish (and are paid for) before a failure counts
                if isinstance(result, BaseException):
                    raise result
            findings = await self._check(article, talks)
            blocking = errors(findings)
            if not blocking:
                return self._outcome(article, talks, findings)
            pending = self._reask(article, talks, blocking, findings)

    def _failure(
        self, talks: dict[Lang, Conversation], error: str, findings: list[Finding]
    ) -> ArticleOutcome:
        calls = sum(t.requests for t in talks.values())
        stale = any(t.stale for t in talks.values())
        spoiled: list[str] = [t.call for t in talks.values() if t.spoiled]
        return ArticleOutcome(None, _total(talks), calls, findings, stale, error=error,
                              paid=_total(talks, "paid"), paid_batch=_total(talks, "paid_batch"),
                              spoiled_calls=spoiled, usage_estimated=_estimated(talks),
                              endpoint_errors=_endpoint_errors(talks))  # fmt: skip

    async def _ask(self, article: Article, talk: Conversation) -> None:
        while True:
            key = CallKey(article.id, talk.call, talk.requests)
            body = self.book.request_body(talk.call, talk.messages, talk.max_tokens)
            talk.requests += 1
            try:
                reply = await self.model.complete(ModelRequest(key, body, self.book.version))
            except ModelUnavailable as exc:
                talk.endpoint_errors.update(exc.endpoint_errors)
                raise
            except RecordingUnwritable as exc:  # answered (and paid for), then not recorded
                if exc.reply is not None:
                    _count(talk, exc.reply)
                raise
            _count(talk, reply)
            if reply.refusal:
                talk.spoiled = True
                raise ReplyRefused(f"the model refused the {talk.call} call: {reply.refusal[:200]}")
            if reply.finish_reason == "content_filter":
                talk.spoiled = True
                raise ReplyFiltered(f"a content filter stopped the {talk.call} reply")
            if reply.finish_reason == "length":
                talk.spoiled = True  # until an answer comes back whole
                self._grow_limit(talk)
                continue
            talk.spoiled = False
            talk.content = reply.content
            talk.answer, talk.parse_findings = parse_answer(talk.call, reply.content)
            return

    def _grow_limit(self, talk: Conversation) -> None:
        """A cut-off reply is asked again with 1.5 times the limit, up to the ceiling (the ceiling
        alone bounds the retries: raising it, as the error says, does allow longer replies)."""
        ceiling = self.settings.max_output_tokens_ceiling
        if talk.max_tokens >= ceiling:
            raise ReplyTruncated(
                f"the {talk.call} reply was cut off at {talk.max_tokens} tokens; raise "
                "max_output_tokens_ceiling in the config or shorten the input (max_input_tokens)"
            )
        talk.max_tokens = min(ceiling, int(talk.max_tokens * 1.5))

    async def _check(self, article: Article, talks: dict[Lang, Conversation]) -> list[Finding]:
        findings: list[Finding] = []
        for talk in talks.values():
            findings += talk.parse_findings
        en, zh = talks["en"].answer, talks["zh"].answer
        if isinstance(en, EnglishAnswer) and isinstance(zh, ChineseAnswer):
            part = ModelPart(scores=en.scores, tags=en.tags, en=en.en, zh=zh.zh)
            findings += await self.workers.check(part, article)
        return findings

    def _reask(self, article: Article, talks: dict[Lang, Conversation], blocking: list[Finding],
               findings: list[Finding]) -> list[Lang]:  # fmt: skip
        pending: list[Lang] = []
        for lang in LANGS:
            mine = [f for f in blocking if (f.lang or "en") == lang]
            if not mine:
                continue
            talk = talks[lang]
            if talk.reasks >= self.settings.max_reasks:
                raise AnswerRejected(
                    f"the {lang} answer still fails {len(mine)} check(s) after {talk.reasks} re-ask(s): "
                    + "; ".join(f.one_line() for f in mine[:3]),
                    findings,
                )
            talk.reasks += 1
            about_figures = any(f.check in ("grounding", "parity") for f in mine)
            figures = source_figure_texts(article) if about_figures else []
            talk.messages = [*talk.messages, {"role": "assistant", "content": talk.content or ""},
                             self.book.reask(mine, figures)]  # fmt: skip
            pending.append(lang)
        return pending

    def _outcome(self, article: Article, talks: dict[Lang, Conversation],
                 findings: list[Finding]) -> ArticleOutcome:  # fmt: skip
        message = "replayed from a recording of another request (the prompts changed since); record it again"
        findings = [
            *findings,
            *(Finding("stale", "warning", t.call, "", message) for t in talks.values() if t.stale),
        ]
        en, zh = talks["en"].answer, talks["zh"].answer
        assert isinstance(en, EnglishAnswer) and isinstance(zh, ChineseAnswer)
        usage = _total(talks)
        calls = sum(t.requests for t in talks.values())
        warnings = [FindingOut.model_validate(f.to_dict()) for f in findings if not f.is_error]
        analysis = Analysis(
            article=ArticleMeta(
                id=article.id, title=article.title, source=article.source, url=article.url,
                published_at=article.published_at, language=article.language,
                content_sha256=article.content_sha256,
            ),
            scores=en.scores, tags=en.tags, en=en.en, zh=zh.zh,
            disclaimer=Disclaimer(en=self.settings.disclaimer_en, zh=self.settings.disclaimer_zh),
            generation=Generation(
                model=self.settings.model, prompt_version=self.book.version,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                usage=usage, calls=calls, attempts=calls, warnings=warnings,
                truncated_input=article.truncated,
            ),
        )  # fmt: skip
        stale = any(t.stale for t in talks.values())
        return ArticleOutcome(analysis, usage, calls, findings, stale,
                              paid=_total(talks, "paid"), paid_batch=_total(talks, "paid_batch"),
                              usage_estimated=_estimated(talks),
                              endpoint_errors=_endpoint_errors(talks))  # fmt: skip


def _total(talks: dict[Lang, Conversation], which: str = "usage") -> Usage:
    total = Usage()
    for talk in talks.values():
        total = total + getattr(talk, which)
    return total


def _estimated(talks: dict[Lang, Conversation]) -> bool:
    return any(t.usage_estimated for t in talks.values())


def _count(talk: Conversation, reply: ModelReply) -> None:
    """Add a reply's tokens, cost and endpoint errors to its call's."""
    talk.usage = talk.usage + reply.usage
    if reply.batch:
        talk.paid_batch = talk.paid_batch + reply.usage
    elif not reply.journaled:
        talk.paid = talk.paid + reply.usage
    talk.stale = talk.stale or reply.stale
    talk.usage_estimated = talk.usage_estimated or reply.usage_estimated
    talk.endpoint_errors.update(reply.endpoint_errors)


def _endpoint_errors(talks: dict[Lang, Conversation]) -> dict[str, int]:
    return dict(sum((talk.endpoint_errors for talk in talks.values()), Counter[str]()))
