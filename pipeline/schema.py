"""The shapes the model must answer in, and the `analysis.json` contract.

The model answers two calls per article:

* the ``en`` call returns :class:`EnglishAnswer` (scores, tags and the English section);
* the ``zh`` call returns :class:`ChineseAnswer` (the Chinese section, written natively).

Both shapes stay inside the strict-JSON-schema subset that OpenAI accepts: no dicts, no
defaults, nullable fields written as ``X | None`` without a default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, Lang] = ("en", "zh")

# Length caps (characters) per field; the structure check reports anything longer.
Title = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Summary = Annotated[str, StringConstraints(min_length=1, max_length=1200)]
Bullet = Annotated[str, StringConstraints(min_length=1, max_length=400)]
Entity = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Info = Annotated[str, StringConstraints(min_length=1, max_length=400)]
Metric = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Paragraph = Annotated[str, StringConstraints(min_length=1, max_length=3000)]
Insight = Annotated[str, StringConstraints(min_length=1, max_length=800)]
Question = Annotated[str, StringConstraints(min_length=1, max_length=300)]
Answer = Annotated[str, StringConstraints(min_length=1, max_length=1500)]
TagLabel = Annotated[str, StringConstraints(min_length=1, max_length=40)]
Score = Annotated[int, Field(ge=0, le=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyDataRow(_Strict):
    entity: Entity = Field(description="Company, person, product or body the row is about.")
    info: Info = Field(description="What the row says about the entity.")
    metric: Metric | None = Field(
        description="The figure, copied in value from the article, or null when there is none."
    )


class FaqItem(_Strict):
    question: Question
    answer: Answer


class Section(_Strict):
    """One language's finished analysis."""

    title: Title
    summary: Summary
    tldr: list[Bullet] = Field(min_length=3, max_length=6)
    key_data: list[KeyDataRow] = Field(min_length=3, max_length=10)
    analysis: list[Paragraph] = Field(min_length=3, max_length=6)
    insights: list[Insight] = Field(min_length=3, max_length=5)
    faq: list[FaqItem] = Field(min_length=3, max_length=5)


class Scores(_Strict):
    hot: Score = Field(description="How much attention the story draws now.")
    quality: Score = Field(description="How solid, specific and well sourced the article is.")
    impact: Score = Field(description="How far the consequences reach.")


class Tag(_Strict):
    en: TagLabel
    zh: TagLabel


class EnglishAnswer(_Strict):
    """What the ``en`` call returns."""

    scores: Scores
    tags: list[Tag] = Field(min_length=2, max_length=6)
    en: Section


class ChineseAnswer(_Strict):
    """What the ``zh`` call returns."""

    zh: Section


class ModelPart(_Strict):
    """Everything the model writes for one article: both answers merged."""

    scores: Scores
    tags: list[Tag] = Field(min_length=2, max_length=6)
    en: Section
    zh: Section


ArticleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,119}$")]


class ArticleMeta(_Strict):
    id: ArticleId  # a folder name under OUT/articles: never a path
    title: str
    source: str | None
    url: str | None
    published_at: str | None
    language: Literal["en", "zh", "other"]
    content_sha256: str


class Disclaimer(_Strict):
    en: str
    zh: str


class Usage(_Strict):
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class FindingOut(_Strict):
    check: str
    severity: Literal["error", "warning"]
    lang: Lang | None
    path: str
    message: str
    text: str | None = None


class Generation(_Strict):
    model: str
    prompt_version: str
    created_at: str
    usage: Usage
    calls: int
    attempts: int
    ai_generated: bool = True
    warnings: list[FindingOut] = Field(default_factory=list)
    truncated_input: bool = False


class Analysis(_Strict):
    """The ``analysis.json`` contract (field names are fixed)."""

    schema_version: Literal[1] = 1
    article: ArticleMeta
    scores: Scores
    tags: list[Tag]
    en: Section
    zh: Section
    disclaimer: Disclaimer
    generation: Generation
