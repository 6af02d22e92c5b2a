"""Checks against the source article: grounding, parity and entities.

* grounding (error): every figure in the title, summary, TL;DR, key data and FAQ is in the source;
  in the deep analysis and insights an unmatched figure is a warning, unless it is a source figure
  with its magnitude moved (万/亿, million/billion, a decimal point), which is an error.
* parity: a figure in one language's key data or TL;DR with no counterpart in the other language
  or in the source is an error; one in the source but missing from the other language is a warning.
* entities: key-data entities of the section in the source's language appear in the source; in
  the other section a Latin name must appear in an English source, and a translated name must be
  resolved through the glossary or the other section's row with the same figure (else a warning).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, partial

from pipeline.ingest.article import Article
from pipeline.prompts import Glossary, mentions
from pipeline.schema import KeyDataRow, Lang, ModelPart, Section
from pipeline.validate.figures import Figure, FigureIndex, Memo, describe, figures_in, period_parts
from pipeline.validate.findings import Finding, Severity
from pipeline.validate.rules import section_fields

_OTHER: dict[Lang, Lang] = {"en": "zh", "zh": "en"}
_LANG_NAME = {"en": "English", "zh": "Chinese"}
_NAME_SPLIT = re.compile(r"\s*[()（）/、&]\s*|\s+and\s+|\s*,\s*")
_LATIN_RUN = re.compile(r"[A-Za-z][A-Za-z0-9&.'\- ]*[A-Za-z0-9]|[A-Za-z]{2,}")
_ZH_AFFIXES = re.compile(r"^(中国|我国)|(股份有限公司|有限责任公司|有限公司|集团公司|集团|公司|股份)$")
_STOPWORDS = frozenset("the of and for in on at to a an its inc ltd corp co plc llc group".split())  # noqa: SIM905


@dataclass
class Source:
    """The source article as the checks need it: its text and its figures."""

    article: Article
    memo: Memo = field(default_factory=dict, repr=False)  # shared with the answers' figures
    text: str = field(init=False)
    lowered: str = field(init=False)
    figures: list[Figure] = field(init=False)

    def __post_init__(self) -> None:
        meta = " ".join(x for x in (self.article.published_at or "",) if x)
        self.text = f"{self.article.title}\n{meta}\n{self.article.text}"
        self.lowered = self.text.lower()
        self.figures = figures_in(self.text, liberal=True, memo=self.memo)
        self.index = FigureIndex(self.figures)
        self.periods = [f for f in self.figures if f.kind == "period"]

    @cached_property
    def _tokens(self) -> set[str]:
        """The source's words, for names written a little differently (needed for few articles)."""
        return set(re.findall(r"[a-z0-9]+", self.lowered.replace(".", "")))

    def has(self, figure: Figure) -> bool:
        return self.index.has(figure)

    def slip_of(self, figure: Figure) -> Figure | None:
        return next((known for known in self.figures if figure.scaled_slip_of(known)), None)

    def names(self, name: str) -> bool:
        return mentions(self.text, self.lowered, name) or _loosely_named(self, name)


_REASONING = ("analysis[", "insights[")


Fields = list[tuple[str, str]]  # (path with its language, text)


def split_fields(lang: Lang, section: Section) -> tuple[Fields, Fields]:
    """The fields whose figures must all be in the source (all but the analysis and insights), and
    the deep analysis and insights, which may reason beyond the source's figures."""
    strict: Fields = []
    reasoning: Fields = []
    for path, text in section_fields(section):
        (reasoning if path.startswith(_REASONING) else strict).append((f"{lang}.{path}", text))
    return strict, reasoning


def _is_parity_field(path: str) -> bool:
    return ".tldr[" in path or ".key_data[" in path


Parse = Callable[[str], list[Figure]]


def check_against_source(part: ModelPart, article: Article, glossary: Glossary) -> list[Finding]:
    source = Source(article)
    parsed: dict[str, list[Figure]] = {}

    def figures(text: str) -> list[Figure]:  # each field is parsed once per check
        if text not in parsed:
            parsed[text] = figures_in(text, memo=source.memo)
        return parsed[text]

    fields = {lang: split_fields(lang, part.en if lang == "en" else part.zh) for lang in _OTHER}
    findings: list[Finding] = []
    for lang in ("en", "zh"):
        section = part.en if lang == "en" else part.zh
        other = part.zh if lang == "en" else part.en
        other_strict, other_reasoning = fields[_OTHER[lang]]
        other_fields = other_strict + other_reasoning
        other_figures = FigureIndex(f for _, text in other_fields for f in figures(text))
        other_words = _Lazy(partial(_liberal_index, other_strict, source.memo))
        findings += _grounding(lang, fields[lang], (other_figures, other_words), source, figures)
        findings += _entities(lang, section, other, source, glossary, figures)
    return findings


class _Lazy:
    """A FigureIndex made the first time it is needed (most checks never need it)."""

    def __init__(self, make: Callable[[], FigureIndex]) -> None:
        self._make = make
        self._index: FigureIndex | None = None

    def has(self, figure: Figure) -> bool:
        if self._index is None:
            self._index = self._make()
        return self._index.has(figure)


def _liberal_index(fields: Fields, memo: Memo) -> FigureIndex:
    """The figures of `fields` with number words read too ("six months", "three consecutive")."""
    return FigureIndex(f for _, text in fields for f in figures_in(text, liberal=True, memo=memo))


def _grounding(
    lang: Lang,
    fields: tuple[Fields, Fields],
    other: tuple[FigureIndex, _Lazy],
    source: Source,
    figures: Parse,
) -> list[Finding]:
    findings: list[Finding] = []
    other_name = _LANG_NAME[_OTHER[lang]]
    other_figures, other_words = other
    strict, reasoning = fields
    for path, text in strict:
        for figure in figures(text):
            if figure.kind == "period":
                findings += _period_findings(lang, path, figure, source)
                continue
            if source.has(figure):
                if _is_parity_field(path) and not other_figures.has(figure) and not other_words.has(figure):
                    message = f"{figure.text} is in the source but not in the {other_name} section"
                    findings.append(Finding("parity", "warning", lang, path, message, figure.text))
                continue
            findings.append(
                Finding("grounding", "error", lang, path, _not_in_source(figure, source), figure.text)
            )
            if _is_parity_field(path) and not other_figures.has(figure):
                message = f"{figure.text} is in neither the source nor the {other_name} section"
                findings.append(Finding("parity", "error", lang, path, message, figure.text))
    for path, text in reasoning:
        for figure in figures(text):
            if figure.kind == "period":
                findings += _period_findings(lang, path, figure, source)
                continue
            if source.has(figure):
                continue
            slipped = source.slip_of(figure)
            if slipped is not None:
                message = f"{figure.text} contradicts the source's {slipped.text} (magnitude moved)"
                findings.append(Finding("grounding", "error", lang, path, message, figure.text))
            else:
                message = f"{figure.text} is not in the source (analysis may reason, but check it)"
                findings.append(Finding("grounding", "warning", lang, path, message, figure.text))
    return findings


def _period_findings(lang: Lang, path: str, figure: Figure, source: Source) -> list[Finding]:
    """A quarter or month with its year contradicts the source when the source dates the same
    quarter or month in another year ("fourth quarter of 2028" written as "2029年第四季度")."""
    if source.has(figure):
        return []
    year, code = period_parts(figure)
    for known in source.periods:
        known_year, known_code = period_parts(known)
        if code == known_code and year != known_year:
            message = f"{figure.text} contradicts the source's {known.text}"
            return [Finding("grounding", "error", lang, path, message, figure.text)]
    return []


def _not_in_source(figure: Figure, source: Source) -> str:
    slipped = source.slip_of(figure)
    if slipped is not None:
        return f"{figure.text} is not in the source; the source says {slipped.text} (magnitude moved)"
    return f"{figure.text} is not in the source"


def source_figure_texts(article: Article, limit: int = 60) -> list[str]:
    """The source's figures as written, for re-ask prompts."""
    return describe(figures_in(f"{article.title}\n{article.text}"))[:limit]


# --- entities -------------------------------------------------------------------------------


def _entities(
    lang: Lang,
    section: Section,
    other: Section,
    source: Source,
    glossary: Glossary,
    figures: Parse = figures_in,
) -> list[Finding]:
    source_lang = source.article.language
    if source_lang not in ("en", "zh"):
        return []
    findings: list[Finding] = []
    for i, row in enumerate(section.key_data):
        path = f"{lang}.key_data[{i}].entity"
        problem = _entity_problem(lang, row, other, source, glossary, figures)
        if problem is not None:
            severity, message = problem
            findings.append(Finding("entities", severity, lang, path, message, row.entity))
    return findings


def _entity_problem(
    lang: Lang, row: KeyDataRow, other: Section, source: Source, glossary: Glossary, figures: Parse
) -> tuple[Severity, str] | None:
    parts = [p for p in _NAME_SPLIT.split(row.entity) if p.strip()]
    if any(source.names(part) for part in parts):
        return None
    if lang == source.article.language:
        if _via_glossary(parts, source, glossary):
            return None
        return "error", f"entity {row.entity!r} does not appear in the source"
    latin = [run.strip() for part in parts for run in _LATIN_RUN.findall(part) if len(run.strip()) >= 2]
    if source.article.language == "en" and latin:
        if any(source.names(name) for name in latin) or _via_glossary(latin, source, glossary):
            return None
        return "error", f"the Latin name in {row.entity!r} does not appear in the English source"
    if _via_glossary(parts, source, glossary) or _via_same_figure(row, other, figures):
        return None
    return (
        "warning",
        f"entity {row.entity!r} could not be matched to the source (glossary or same-figure row)",
    )


def _via_glossary(parts: list[str], source: Source, glossary: Glossary) -> bool:
    """Whether a glossary term named by one of `parts` is named (in any of its names) by the source."""
    for part in parts:
        for term in glossary.by_name.get(part.strip().lower(), []):
            if any(source.names(n) for n in term.names()):
                return True
    return False


def _via_same_figure(row: KeyDataRow, other: Section, figures: Parse) -> bool:
    """Whether a row of the other section has the same figures (each metric was parsed already)."""
    if row.metric is None:
        return False
    mine = figures(row.metric)
    if not mine:
        return False
    for candidate in other.key_data:
        theirs = figures(candidate.metric or "")
        if theirs and all(any(a.matches(b) for b in theirs) for a in mine):
            return True
    return False


def _loosely_named(source: Source, name: str) -> bool:
    """A name the source writes a little differently: "U.S. Commerce Department", "华电集团"."""
    if not name.isascii():
        core = _ZH_AFFIXES.sub("", _ZH_AFFIXES.sub("", name.strip()))
        return len(core) >= 2 and core in source.lowered
    words = [w for w in re.findall(r"[a-z0-9]+", name.lower().replace(".", "")) if w not in _STOPWORDS]
    if not words:
        return False
    return all(w in source._tokens or any(t.startswith(w) for t in source._tokens) for w in words)
