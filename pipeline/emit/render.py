"""Renderers: pure functions from an :class:`Analysis` to the text of each output file.

Every piece of model text and article metadata is untrusted: every value an HTML template writes
is escaped (and stripped of control characters) by the environment's finalize, only http(s) URLs
become links, and Markdown escapes markup characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from types import SimpleNamespace
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, Template
from markupsafe import Markup

from pipeline.schema import Analysis, Disclaimer, Section

_LABELS = {
    "en": {"key_data": "Key Data", "caption": "Key figures from the source article",
           "entity": "Entity", "info": "Key Info", "metric": "Data/Metrics",
           "analysis": "Deep Analysis", "insights": "Industry Insights"},
    "zh": {"key_data": "核心数据", "caption": "来自原文的关键数据",
           "entity": "实体", "info": "关键信息", "metric": "数据/指标",
           "analysis": "深度解读", "insights": "行业启示"},
}  # fmt: skip


@dataclass(frozen=True)
class SiteInfo:
    name: str = "newsdesk"
    name_zh: str = "新闻分析台"
    url: str | None = None  # the published site's address, for absolute links in the feed


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _escape_str(text: str) -> str:
    """MarkupSafe's escaping of `text`, as markupsafe.escape gives it, without making a Markup."""
    if "&" in text or "<" in text or ">" in text or "'" in text or '"' in text:
        return (text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
                .replace("'", "&#39;").replace('"', "&#34;"))  # fmt: skip
    return text  # most text has nothing to escape


def strip_controls(text: str) -> str:
    """Remove control characters (terminal escapes, NULs) from untrusted text; keep newlines and tabs."""
    return _CONTROL.sub("", text)


def _finalize(value: object) -> str:
    """What every ``{{ ... }}`` of the templates writes: the value's text, HTML-escaped, its control
    characters removed; our own markup (a Markup: the stylesheet, rendered index entries) as it is.

    The escaping is done here, for every value of every template, instead of by jinja2's
    autoescaping, which costs a Markup object and two Python calls more per value; the text is
    MarkupSafe's escaping either way.
    """
    if type(value) is str:  # model text and article metadata: nearly every value
        if not value.isprintable():  # every control character is unprintable: most text needs no pass
            value = _CONTROL.sub("", value)
        return _escape_str(value)
    if hasattr(value, "__html__"):  # our own trusted markup
        return str(value.__html__())
    if isinstance(value, str):
        value = strip_controls(value)
    return _escape_str(str(value))


@cache
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("pipeline.emit", "templates"),
        # _finalize escapes every value written, in every template. (Without autoescaping, what a
        # macro or a {% set %} block makes is plain text: written with {{ }}, it is escaped again.)
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
        auto_reload=False,  # the package's templates do not change while it runs: no stat per render
    )


@cache
def _template(name: str) -> Template:
    return _env().get_template(name)


@cache
def _css() -> Markup:
    """The stylesheet, ours and trusted: marked safe so _finalize leaves its quotes alone."""
    return Markup(_template("base.css.j2").render())


def safe_href(url: str | None) -> str | None:
    """`url` if it is an absolute http(s) URL, else None (no javascript:, data:, relative tricks)."""
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if any(ch in url for ch in "\x00\r\n\t <>\"'`"):
        return None
    return url


# What the templates read is held in objects, not dicts: jinja2 looks a name up as an attribute
# first, and on a dict that fails (an AttributeError raised and caught) before the item is found.
_PAGE_LABELS = {lang: SimpleNamespace(**labels) for lang, labels in _LABELS.items()}


@dataclass(frozen=True, slots=True)
class _PageSection:
    """One language's part of the article page."""

    lang_attr: str
    section: Section
    labels: SimpleNamespace
    heading: str


@dataclass(frozen=True, slots=True)
class _Day:
    day: str  # shown
    iso: str  # the `datetime` attribute, or "" for none


def render_article_html(analysis: Analysis, site: SiteInfo | None = None) -> str:
    site = site or SiteInfo()
    sections = [
        _PageSection("en", analysis.en, _PAGE_LABELS["en"], "English"),
        _PageSection("zh-Hans", analysis.zh, _PAGE_LABELS["zh"], "中文"),
    ]
    return _template("article.html.j2").render(
        a=analysis, sections=sections, css=_css(), site_name=site.name, site_name_zh=site.name_zh,
        source_href=safe_href(analysis.article.url),
        source_lang=_text_lang(analysis.article.source or analysis.article.title),
        published=_published(analysis),
    )  # fmt: skip


def _published(analysis: Analysis) -> _Day | None:
    """The publication date to show, and to put in a `datetime` attribute when it is ISO 8601 (a
    date ingest could not read, "Spring 2026", is shown as written, with no attribute)."""
    raw = analysis.article.published_at
    if not raw:
        return None
    if parse_instant(raw) is None:
        return _Day(raw, "")
    return _Day(raw[:10], raw)


_HAN = re.compile(r"[\u4e00-\u9fff]")


def _text_lang(text: str) -> str:
    return "zh-Hans" if _HAN.search(text) else "en"


@dataclass(frozen=True)
class IndexHead:
    """What the top of the index page needs to know about all its articles, gathered beforehand."""

    count: int
    tags: list[str]  # every tag label, sorted: the filter's options
    disclaimer: Disclaimer | None


def index_entry_html(analysis: Analysis) -> Markup:
    """One article's entry on the index page (its untrusted text escaped)."""
    return Markup(_template("index_entry.html.j2").render(e=_index_entry(analysis)))


def index_html_chunks(
    entries: Iterable[Markup], head: IndexHead, site: SiteInfo | None = None
) -> Iterator[str]:
    """The index page piece by piece around `entries` (from index_entry_html), taken one at a time."""
    site = site or SiteInfo()
    disclaimer = head.disclaimer
    return _template("index.html.j2").generate(
        entries=entries, count=head.count, all_tags=head.tags, css=_css(),
        site_name=site.name, site_name_zh=site.name_zh,
        disclaimer_en=disclaimer.en if disclaimer else "", disclaimer_zh=disclaimer.zh if disclaimer else "",
    )  # fmt: skip


def parse_instant(raw: str | None) -> datetime | None:
    """An ISO 8601 date or date-time as an aware datetime (naive means UTC), else None (also for an
    instant too early or late to be written in UTC, which the index and the feed need)."""
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)
    except OverflowError:  # "9999-12-31T23:59:59-12:00" is after the last instant a datetime holds
        return None
    return moment


def index_instant(analysis: Analysis) -> datetime:
    """When the article was published (else generated), comparable across time zones."""
    return (
        parse_instant(analysis.article.published_at)
        or parse_instant(analysis.generation.created_at)
        or datetime.min.replace(tzinfo=UTC)
    )


_tags_json = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(..., ensure_ascii=False), built once


def _index_entry(analysis: Analysis) -> SimpleNamespace:
    return SimpleNamespace(
        href=f"articles/{analysis.article.id}/article.html",
        title_en=analysis.en.title, title_zh=analysis.zh.title,
        date=index_instant(analysis).astimezone(UTC).isoformat(),  # sortable as text in the page script
        published=_published(analysis), generated_day=analysis.generation.created_at[:10],
        hot=analysis.scores.hot, quality=analysis.scores.quality, impact=analysis.scores.impact,
        tags_json=_tags_json([t.en for t in analysis.tags]),  # the filter's
        tags=analysis.tags,
    )  # fmt: skip


# Markdown's markup characters; the backslash first, so that the escapes added are not escaped again.
# (">" is not among them: it has become "&gt;" by then.)
_MD_SPECIAL = "\\`*_{}[]()#+!|~"


# What would start a list or a thematic break at the start of a line: "1. ", "12.", "- ", "---".
# ("+", "*", ")" and "#" are escaped wherever they are.)
_MD_LINE_START = re.compile(r"\d{1,9}(?=\.(?:\s|$))|(?=-(?:\s|-|$))")

# Any character md_escape would change or remove: a control character, whitespace other than the
# plain space (what str.split() splits on: a test checks the list against str.isspace), "&", "<",
# ">" and the markup characters. Text without one, and without two spaces in a row or a space at
# either end, comes out of md_escape as it went in (but for a leading list or rule marker): most
# text, and one scan of it instead of the twenty-odd passes of the full treatment.
_MD_CHANGED = re.compile(
    "[\x00-\x1f\x7f-\x9f\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000&<>"
    + re.escape(_MD_SPECIAL) + "]"
)  # fmt: skip
# The same test for ASCII text, a few times cheaper than the pattern's: the bytes of _MD_CHANGED's
# characters become 0 in the text's bytes.
_MD_CHANGED_ASCII = bytes(0 if _MD_CHANGED.match(chr(byte)) else byte for byte in range(256))


def md_escape(text: str) -> str:
    """Plain text safe in Markdown: markup characters escaped, HTML neutralised, one line; text
    that starts like a list item or a rule ("1. First", "- item", "---") stays plain text."""
    if text.isascii():
        changed = 0 in text.encode("ascii").translate(_MD_CHANGED_ASCII)
    else:
        changed = _MD_CHANGED.search(text) is not None
    if changed or "  " in text or text.startswith(" ") or text.endswith(" "):
        text = " ".join(strip_controls(text).split())
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        for special in _MD_SPECIAL:  # str.replace per character: a few times faster than a regex here
            if special in text:
                text = text.replace(special, "\\" + special)
    first = text[:1]
    if first.isdigit() or first == "-":
        marker = _MD_LINE_START.match(text)
        if marker is not None:
            text = f"{text[: marker.end()]}\\{text[marker.end() :]}"
    return text


def render_article_markdown(analysis: Analysis) -> str:
    a = analysis
    lines = [f"# {md_escape(a.en.title)}", "", f"# {md_escape(a.zh.title)}", "",
             md_escape(a.en.summary), "", md_escape(a.zh.summary), ""]  # fmt: skip
    href = safe_href(a.article.url)
    source = md_escape(a.article.source or a.article.title)
    lines += [f"Source: [{source}](<{href}>)" if href else f"Source: {source}", ""]
    lines += [f"**Hot 热度** {a.scores.hot} · **Quality 质量** {a.scores.quality} · "
              f"**Impact 影响力** {a.scores.impact}", "", "## Analysis 深度分析", ""]  # fmt: skip
    lines += ["**English**", "", *_markdown_section(a.en, _LABELS["en"])]
    lines += ["**中文**", "", *_markdown_section(a.zh, _LABELS["zh"])]
    lines += ["---", "", f"Disclaimer: {md_escape(a.disclaimer.en)}", "", md_escape(a.disclaimer.zh), ""]
    lines += ["Tags: " + ", ".join(f"{md_escape(t.en)} {md_escape(t.zh)}" for t in a.tags), ""]
    return "\n".join(lines)


def _markdown_section(section: Section, labels: dict[str, str]) -> list[str]:
    lines = ["### TL;DR", "", *[f"- {md_escape(t)}" for t in section.tldr], ""]
    header = f"| {labels['entity']} | {labels['info']} | {labels['metric']} |"
    lines += [f"### {labels['key_data']}", "", header, "| --- | --- | --- |"]
    for row in section.key_data:
        metric = md_escape(row.metric) if row.metric is not None else "-"
        lines.append(f"| {md_escape(row.entity)} | {md_escape(row.info)} | {metric} |")
    lines += ["", f"### {labels['analysis']}", ""]
    for paragraph in section.analysis:
        lines += [md_escape(paragraph), ""]
    lines += [f"### {labels['insights']}", ""]
    lines += [f"{i}. {md_escape(item)}" for i, item in enumerate(section.insights, start=1)]
    lines += ["", "### FAQ", ""]
    for item in section.faq:
        lines += [f"**Q: {md_escape(item.question)}**", "", f"A: {md_escape(item.answer)}", ""]
    return lines


def render_analysis_json(analysis: Analysis) -> str:
    return analysis.model_dump_json(indent=2) + "\n"
