"""Checks over a typed section: structure beyond the schema, and the language of every field."""

from __future__ import annotations

import re
from collections.abc import Iterator

from hanzidentifier import helpers as hanzi_tables

from pipeline.ingest.article import HAN, HAN_CLASS
from pipeline.schema import Lang, ModelPart, Section, Tag
from pipeline.validate.findings import Finding

_HAN_RUN = re.compile(f"[{HAN_CLASS}]+")
_CJK_PUNCTUATION = re.compile(r"[。，；！？、]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
_MARKUP = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>|javascript:|\bon[a-z]+\s*=", re.IGNORECASE)


def section_fields(section: Section) -> Iterator[tuple[str, str]]:
    """Every text field of a section as (path, text)."""
    yield "title", section.title
    yield "summary", section.summary
    for i, bullet in enumerate(section.tldr):
        yield f"tldr[{i}]", bullet
    for i, row in enumerate(section.key_data):
        yield f"key_data[{i}].entity", row.entity
        yield f"key_data[{i}].info", row.info
        if row.metric is not None:
            yield f"key_data[{i}].metric", row.metric
    for i, paragraph in enumerate(section.analysis):
        yield f"analysis[{i}]", paragraph
    for i, insight in enumerate(section.insights):
        yield f"insights[{i}]", insight
    for i, item in enumerate(section.faq):
        yield f"faq[{i}].question", item.question
        yield f"faq[{i}].answer", item.answer


def check_section(lang: Lang, section: Section) -> list[Finding]:
    findings = list(_blank_fields(lang, section))
    findings += _duplicates(lang, section)
    findings += _language(lang, section)
    findings += _markup(lang, section)
    return findings


def check_tags(tags: list[Tag]) -> list[Finding]:
    findings: list[Finding] = []
    for i, tag in enumerate(tags):
        if HAN.search(tag.en):
            findings.append(Finding("language", "error", "en", f"tags[{i}].en",
                                    "the English tag label contains Chinese characters", tag.en))  # fmt: skip
        if not HAN.search(tag.zh):
            findings.append(Finding("language", "error", "en", f"tags[{i}].zh",
                                    "the Chinese tag label is not written in Chinese", tag.zh))  # fmt: skip
        elif traditional_characters(tag.zh):
            findings.append(Finding("language", "error", "en", f"tags[{i}].zh",
                                    "the Chinese tag label uses Traditional characters", tag.zh))  # fmt: skip
    labels = [tag.en.strip().lower() for tag in tags]
    if len(set(labels)) != len(labels):
        findings.append(Finding("structure", "error", "en", "tags", "duplicate tags"))
    return findings


def check_part(part: ModelPart) -> list[Finding]:
    """Every check that needs no source article."""
    return check_tags(part.tags) + check_section("en", part.en) + check_section("zh", part.zh)


def _blank_fields(lang: Lang, section: Section) -> Iterator[Finding]:
    for path, text in section_fields(section):
        if not text.strip():
            yield Finding("structure", "error", lang, f"{lang}.{path}", "empty or whitespace-only")


def _duplicates(lang: Lang, section: Section) -> Iterator[Finding]:
    lists: dict[str, list[str]] = {
        "tldr": section.tldr,
        "analysis": section.analysis,
        "insights": section.insights,
        "faq": [item.question for item in section.faq],
        "key_data": [f"{r.entity}|{r.info}|{r.metric}" for r in section.key_data],
    }
    for name, items in lists.items():
        seen: set[str] = set()
        for i, item in enumerate(items):
            norm = " ".join(item.lower().split())
            if norm in seen:
                yield Finding("structure", "error", lang, f"{lang}.{name}[{i}]", "duplicate item", item)
            seen.add(norm)


def _language(lang: Lang, section: Section) -> Iterator[Finding]:
    for path, text in section_fields(section):
        problem = english_problem(text) if lang == "en" else chinese_problem(text, path)
        if problem:
            yield Finding("language", "error", lang, f"{lang}.{path}", problem, text)


def _han_count(text: str) -> int:
    """How many Han characters `text` has (counted by runs: one string per run, not per character)."""
    return sum(map(len, _HAN_RUN.findall(text)))


def english_problem(text: str) -> str | None:
    """Why `text` is not acceptable English, or None. Han characters are allowed only inside names."""
    if text.isascii():
        return None
    han = _han_count(text)
    if han == 0:
        return None
    latin = sum(len(w) for w in _LATIN_WORD.findall(text))
    if han > 0.2 * max(latin, 1) or han > 12:
        return "written in Chinese in an English field"
    if any(len(run) > 6 for run in _HAN_RUN.findall(text)) or _CJK_PUNCTUATION.search(text):
        return "contains a Chinese sentence in an English field (Han characters belong only in names)"
    return None


# The characters only Traditional Chinese writes, from hanzidentifier's CC-CEDICT tables: what its
# identify() reports as TRADITIONAL for a single character, as one set to test every field against.
_TRADITIONAL_ONLY = frozenset(hanzi_tables.TRADITIONAL_CHARACTERS - hanzi_tables.SIMPLIFIED_CHARACTERS)
# the same set as one character class: a scan in C, six times faster than testing each character
_TRADITIONAL_CHAR = re.compile(f"[{''.join(re.escape(ch) for ch in sorted(_TRADITIONAL_ONLY))}]")


def traditional_characters(text: str) -> str:
    """The characters of `text` that are Traditional-only (empty for Simplified Chinese)."""
    if _TRADITIONAL_CHAR.search(text) is None:
        return ""
    return "".join(dict.fromkeys(_TRADITIONAL_CHAR.findall(text)))


def chinese_problem(text: str, path: str) -> str | None:
    """Why `text` is not acceptable Chinese, or None. Metrics and entities may be Latin or figures."""
    traditional = traditional_characters(text)
    if traditional:
        return f"Traditional characters in Simplified Chinese text: {traditional}"
    han = _han_count(text)
    latin = sum(len(w) for w in _LATIN_WORD.findall(text))
    if path.endswith(".metric") or path.endswith(".entity"):
        return None if han or latin < 40 else "written in English in a Chinese field"
    if han == 0:
        return "not written in Chinese"
    if latin > 1.5 * han:
        return "mostly English in a Chinese field"
    return None


def _markup(lang: Lang, section: Section) -> Iterator[Finding]:
    for path, text in section_fields(section):
        # markup needs a "<", an event handler a "=", a javascript: URL a "t:": most fields have none
        if ("<" in text or "=" in text or "t:" in text or "T:" in text) and _MARKUP.search(text):
            yield Finding("markup", "warning", lang, f"{lang}.{path}",
                          "HTML or script in model text (escaped when rendered)", text)  # fmt: skip
        if path.startswith(_LIST_FIELDS) and (marker := _LIST_MARKER.match(text)):
            yield Finding("markup", "warning", lang, f"{lang}.{path}",
                          f"starts with its own list marker {marker.group(1)!r}: the page numbers "
                          "and bullets lists itself, so it would show twice", text)  # fmt: skip


_LIST_FIELDS = ("tldr[", "insights[")
# "1. ", "2) ", "3、", "- ", "• " at the start of a list item
_LIST_MARKER = re.compile(r"\s*(\d{1,3}[.)、]|[-*•·●▪–—])(?=\s|(?<=、))")
