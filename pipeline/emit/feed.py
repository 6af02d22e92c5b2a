"""The Atom 1.0 feed (RFC 4287) of the output folder: one entry per article, newest first.

The feed's head is built with :mod:`xml.etree.ElementTree`; each entry is written as the text
ElementTree would write for it (the tests compare the two), every piece of model text and article
metadata escaped as its serializer escapes it. Characters that XML 1.0 cannot carry are removed
first, and only http(s) source URLs become links. Feed and entries carry a machine-readable
AI-generated marker: ``<category scheme="urn:newsdesk:ai" term="ai-generated">`` and a
``newsdesk:generation`` element (namespace :data:`NEWSDESK_NS`) naming the model and the prompt
version.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
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
    # Every character XML 1.0 lacks is unprintable (a control, a lone surrogate, a noncharacter):
    # printable text, most text, needs no pass of the pattern.
    return text if text.isprintable() else _INVALID_XML.sub("", text)


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


@lru_cache(maxsize=16)  # asked once per article written, of the one site
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


# One article's <entry> is written as text, the bytes ElementTree writes for it (ET.indent at level
# 1, then ET.tostring): the feed has one per article, and building and serializing the tree cost
# more than all the rest of an entry. Each value goes through _text or _attr: xml_text, then the
# escaping of ElementTree's serializer. The rest of the feed is built with ElementTree (_el).


def _text(text: str) -> str:
    """Element content: xml_text, then "&", "<" and ">" escaped."""
    return xml_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(text: str) -> str:
    """An attribute value: xml_text, then escaped as ElementTree escapes it (tab, LF, CR too)."""
    text = xml_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace('"', "&quot;")
    if not text.isprintable():  # else it has no tab, LF or CR
        text = text.replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#09;")
    return text


def _leaf(indent: str, tag: str, attrs: str, text: str) -> str:
    """A line of an element with no children; `attrs` and `text` escaped already."""
    if text:
        return f"{indent}<{tag}{attrs}>{text}</{tag}>"
    return f"{indent}<{tag}{attrs} />"  # as ElementTree writes an empty element


_IN1, _IN2, _IN3 = "\n    ", "\n      ", "\n        "  # the indentation of ET.indent(level=1)
_ZH = ' xml:lang="zh-Hans"'
_AI_MARKER = f'{_IN1}<category term="ai-generated" scheme="{AI_SCHEME}" label="AI-generated · AI 生成" />'


def _entry(a: Analysis, item: FeedItem, site: SiteInfo, base: str | None) -> str:
    """The <entry> element of one article, as ET.tostring writes it after ET.indent(level=1)."""
    slug = quote(a.article.id, safe="-._~")
    parts = [
        "<entry>",
        _leaf(_IN1, "id", "", _text(f"urn:newsdesk:{slug}")),
        _leaf(_IN1, "title", ' type="text"', _text(a.en.title)),
        _leaf(_IN1, "newsdesk:title", _ZH, _text(a.zh.title)),
        _leaf(_IN1, "updated", "", _text(rfc3339(item.updated))),
    ]
    if item.published is not None:
        parts.append(_leaf(_IN1, "published", "", _text(rfc3339(item.published))))
    href = _href(base, f"articles/{slug}/article.html")
    parts.append(f'{_IN1}<link rel="alternate" type="text/html" href="{_attr(href)}" />')
    source = safe_href(a.article.url)
    if source is not None:
        title = _attr(a.article.source or a.article.title)
        parts.append(f'{_IN1}<link rel="via" href="{_attr(source)}" title="{title}" />')
    parts += [f"{_IN1}<author>", _leaf(_IN2, "name", "", _text(f"{site.name} (AI-generated)"))]
    if base:
        parts.append(_leaf(_IN2, "uri", "", _text(base)))
    parts += [
        f"{_IN1}</author>",
        _leaf(_IN1, "summary", ' type="text"', _text(a.en.summary)),
        f'{_IN1}<content type="xhtml">{_IN2}<div xmlns="{XHTML_NS}">',
        _leaf(_IN3, "h1", _ZH, _text(a.zh.title)),
        _leaf(_IN3, "p", "", _text(a.en.summary)),
        _leaf(_IN3, "p", _ZH, _text(a.zh.summary)),
        _leaf(_IN3, "p", "", _text(f"Disclaimer: {a.disclaimer.en}")),
        _leaf(_IN3, "p", _ZH, _text(a.disclaimer.zh)),
        f"{_IN2}</div>{_IN1}</content>",
    ]
    for tag in a.tags:
        if xml_text(tag.en).strip():  # a term that is only control characters would be empty
            label = _attr(f"{tag.en} · {tag.zh}")
            parts.append(f'{_IN1}<category term="{_attr(tag.en)}" scheme="{TAG_SCHEME}" label="{label}" />')
    g = a.generation
    parts += [
        _AI_MARKER,
        f'{_IN1}<newsdesk:generation ai-generated="true" model="{_attr(g.model)}"'
        f' prompt-version="{_attr(g.prompt_version)}" created="{_attr(g.created_at)}" />',
        "\n  </entry>",
    ]
    return "".join(parts)


def feed_entry_xml(analysis: Analysis, site: SiteInfo, base: str | None) -> str:
    """One article's <entry> element, indented for the feed; `base` comes from feed_base."""
    return f"  {_entry(analysis, feed_item(analysis), site, base)}\n"


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
