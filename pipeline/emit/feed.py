"""The Atom 1.0 feed (RFC 4287) of the output folder: one entry per article, newest first.

The document is built with :mod:`xml.etree.ElementTree`, so every piece of model text and article
metadata is escaped by the serializer; characters that XML 1.0 cannot carry are removed first, and
only http(s) source URLs become links. Feed and entries carry a machine-readable AI-generated marker:
``<category scheme="urn:newsdesk:ai" term="ai-generated">`` and a ``newsdesk:generation`` element
(namespace :data:`NEWSDESK_NS`) naming the model and the prompt version.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urljoin

from pipeline import __version__
from pipeline.emit.render import SiteInfo, parse_instant, safe_href
from pipeline.schema import Analysis

ATOM_NS = "http://www.w3.org/2005/Atom"
XHTML_NS = "http://www.w3.org/1999/xhtml"
NEWSDESK_NS = "urn:newsdesk:ns:1"
AI_SCHEME = "urn:newsdesk:ai"
TAG_SCHEME = "urn:newsdesk:tag"
FEED_ID = "urn:newsdesk:feed"
XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# Elements are built with literal names and the namespace declarations are written as attributes:
# the output then uses Atom as the default namespace, "newsdesk:" for ours and a default-namespaced
# XHTML div, without touching ElementTree's global prefix registry.
_NS_DECLS = {"xmlns": ATOM_NS, "xmlns:newsdesk": NEWSDESK_NS}
# Everything outside the XML 1.0 Char production (C0 controls but tab/LF/CR, lone surrogates, FFFE/FFFF).
_INVALID_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 cannot represent (escaping is the serializer's job)."""
    return _INVALID_XML.sub("", text)


def rfc3339(moment: datetime) -> str:
    """`moment` as an RFC 3339 timestamp in UTC, to the second: ``2026-03-17T08:30:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class FeedItem:
    """Where one article goes in the feed: its order and its dates."""

    article_id: str
    sort_key: datetime  # published, else generated: the order of the index page
    published: datetime | None
    updated: datetime


def feed_item(analysis: Analysis) -> FeedItem:
    published = parse_instant(analysis.article.published_at)
    generated = parse_instant(analysis.generation.created_at)
    known = [moment for moment in (published, generated) if moment is not None]
    sort_key = published or generated or EPOCH
    return FeedItem(analysis.article.id, sort_key, published, max(known, default=EPOCH))


def feed_base(base_url: str | None) -> str | None:
    """`base_url` as a folder URL ending in '/', or None; anything but http(s) is refused."""
    if base_url is None:
        return None
    href = safe_href(base_url)
    if href is None:
        raise ValueError(f"base_url must be an absolute http(s) URL, not {base_url!r}")
    return href if href.endswith("/") else href + "/"


def _href(base: str | None, path: str) -> str:
    return urljoin(base, path) if base else path


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    """A child element whose text and attribute values are cleaned of invalid XML characters."""
    element = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrs.items()})
    if text is not None:
        element.text = xml_text(text)
    return element


def _zh(element: ET.Element) -> ET.Element:
    element.set(_XML_LANG, "zh-Hans")
    return element


def _ai_marker(parent: ET.Element) -> None:
    _el(parent, "category", term="ai-generated", scheme=AI_SCHEME, label="AI-generated · AI 生成")


def _author(parent: ET.Element, site: SiteInfo, base: str | None) -> None:
    author = _el(parent, "author")
    _el(author, "name", f"{site.name} (AI-generated)")
    if base:
        _el(author, "uri", base)


def _content(parent: ET.Element, analysis: Analysis) -> None:
    """The Chinese title and summary, the English summary and both disclaimers, as one XHTML div."""
    content = _el(parent, "content", type="xhtml")
    div = _el(content, "div", xmlns=XHTML_NS)
    _zh(_el(div, "h1", analysis.zh.title))
    _el(div, "p", analysis.en.summary)
    _zh(_el(div, "p", analysis.zh.summary))
    _el(div, "p", f"Disclaimer: {analysis.disclaimer.en}")
    _zh(_el(div, "p", analysis.disclaimer.zh))


def _entry(a: Analysis, item: FeedItem, site: SiteInfo, base: str | None) -> ET.Element:
    entry = ET.Element("entry")
    _el(entry, "id", f"urn:newsdesk:{quote(a.article.id, safe='-._~')}")
    _el(entry, "title", a.en.title, type="text")
    _zh(_el(entry, "newsdesk:title", a.zh.title))
    _el(entry, "updated", rfc3339(item.updated))
    if item.published is not None:
        _el(entry, "published", rfc3339(item.published))
    page = f"articles/{quote(a.article.id, safe='-._~')}/article.html"
    _el(entry, "link", rel="alternate", type="text/html", href=_href(base, page))
    source = safe_href(a.article.url)
    if source is not None:
        _el(entry, "link", rel="via", href=source, title=a.article.source or a.article.title)
    _author(entry, site, base)
    _el(entry, "summary", a.en.summary, type="text")
    _content(entry, a)
    for tag in a.tags:
        if xml_text(tag.en).strip():  # a term that is only control characters would be empty
            _el(entry, "category", term=tag.en, scheme=TAG_SCHEME, label=f"{tag.en} · {tag.zh}")
    _ai_marker(entry)
    _el(entry, "newsdesk:generation", **{
        "ai-generated": "true", "model": a.generation.model,
        "prompt-version": a.generation.prompt_version, "created": a.generation.created_at,
    })  # fmt: skip
    return entry


def feed_entry_xml(analysis: Analysis, site: SiteInfo, base: str | None) -> str:
    """One article's <entry> element, indented for the feed; `base` comes from feed_base."""
    element = _entry(analysis, feed_item(analysis), site, base)
    ET.indent(element, space="  ", level=1)
    return f"  {ET.tostring(element, encoding='unicode').strip()}\n"


def atom_feed_chunks(
    entries: Iterable[str], updated: datetime, site: SiteInfo, base: str | None
) -> Iterator[str]:
    """The feed piece by piece around `entries` (from feed_entry_xml), taken one at a time.

    `updated` is the feed's own date: the latest of its entries'.
    """
    feed = ET.Element("feed", {**_NS_DECLS, _XML_LANG: "en"})
    _el(feed, "id", base or FEED_ID)
    _el(feed, "title", f"{site.name} | {site.name_zh}", type="text")
    _el(feed, "subtitle", "Bilingual news analysis, generated by AI · AI 生成的双语新闻分析", type="text")
    _el(feed, "updated", rfc3339(updated))
    _el(feed, "link", rel="alternate", type="text/html", href=_href(base, "index.html"))
    _author(feed, site, base)
    _el(feed, "generator", "newsdesk", version=__version__)
    _ai_marker(feed)
    _el(feed, "newsdesk:generation", **{"ai-generated": "true"})
    ET.indent(feed)
    yield XML_DECLARATION + ET.tostring(feed, encoding="unicode").removesuffix("</feed>").rstrip() + "\n"
    yield from entries
    yield "</feed>\n"
