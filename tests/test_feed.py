"""The Atom feed: a valid RFC 4287 document, newest first, stable ids, escaped text, safe links."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

import pytest

from pipeline.config import DEFAULT_DISCLAIMER_EN, DEFAULT_DISCLAIMER_ZH
from pipeline.emit.feed import AI_SCHEME, NEWSDESK_NS, TAG_SCHEME
from pipeline.emit.index import render_atom_feed
from pipeline.emit.render import SiteInfo
from pipeline.schema import Analysis
from tests.conftest import RECORDINGS

A = "{http://www.w3.org/2005/Atom}"
ND = f"{{{NEWSDESK_NS}}}"
XHTML = "{http://www.w3.org/1999/xhtml}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
IDS = sorted(p.name for p in RECORDINGS.iterdir() if p.is_dir())[:4]
SITE = SiteInfo()
CONTROL = "\x00\x01\x08\x0b\x0c\x1b\x1f\ufffe\uffff"
PLANTED = f"<script>alert(1)</script> AT&T ]]> {CONTROL}end"
INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def recorded_answer(article_id: str, call: str) -> dict[str, Any]:
    document = json.loads((RECORDINGS / article_id / f"{call}-0.json").read_text(encoding="utf-8"))
    answer: dict[str, Any] = json.loads(document["response"]["choices"][0]["message"]["content"])
    return answer


def make_analysis(article_id: str, **article: Any) -> Analysis:
    en, zh = recorded_answer(article_id, "en"), recorded_answer(article_id, "zh")
    meta = {"id": article_id, "title": "Original headline", "source": "Example Wire",
            "url": "https://example.com/story", "published_at": "2026-03-18", "language": "en",
            "content_sha256": "0" * 64} | article  # fmt: skip
    generation = {"model": "gpt-4.1-mini", "prompt_version": "pv-test", "created_at": "2026-03-19T08:00:00Z",
                  "usage": {"prompt_tokens": 1, "cached_tokens": 0, "completion_tokens": 1},
                  "calls": 2, "attempts": 2}  # fmt: skip
    disclaimer = {"en": DEFAULT_DISCLAIMER_EN, "zh": DEFAULT_DISCLAIMER_ZH}
    return Analysis.model_validate({
        "schema_version": 1, "article": meta, "scores": en["scores"], "tags": en["tags"],
        "en": en["en"], "zh": zh["zh"], "disclaimer": disclaimer, "generation": generation,
    })  # fmt: skip


def hostile_analysis(**article: Any) -> Analysis:
    document = make_analysis(IDS[0], **article).model_dump()
    for lang in ("en", "zh"):
        document[lang]["title"] = PLANTED
        document[lang]["summary"] = PLANTED
    document["tags"] = [{"en": "<b>&]]>\x07", "zh": "标签<i>&\x00"}, {"en": "Plain", "zh": "普通"}]
    document["generation"]["model"] = f'model"<&>{CONTROL}'
    return Analysis.model_validate(document)


def parse(feed: str) -> ET.Element:
    return ET.fromstring(feed.encode("utf-8"))


def entries(root: ET.Element) -> list[ET.Element]:
    return root.findall(f"{A}entry")


def text(element: ET.Element, path: str) -> str:
    found = element.find(path)
    assert found is not None, f"missing {path}"
    return found.text or ""


def alternate(entry: ET.Element) -> str:
    links = [link for link in entry.findall(f"{A}link") if link.get("rel", "alternate") == "alternate"]
    assert len(links) == 1
    return links[0].get("href") or ""


def instant(stamp: str) -> datetime:
    assert RFC3339.match(stamp), f"not RFC 3339: {stamp!r}"
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def analyses() -> list[Analysis]:
    stamps = ["2026-05-13T09:00:00+08:00", "2026-05-13T02:00:00Z", "2026-05-12", None]
    return [make_analysis(i, published_at=s) for i, s in zip(IDS, stamps, strict=True)]


def test_feed_is_atom_with_one_entry_per_article(analyses: list[Analysis]) -> None:
    feed = render_atom_feed(iter(analyses), SITE)
    assert feed.startswith('<?xml version="1.0" encoding="utf-8"?>')
    root = parse(feed)
    assert root.tag == f"{A}feed"
    assert len(entries(root)) == len(analyses)
    assert SITE.name in text(root, f"{A}title") and SITE.name_zh in text(root, f"{A}title")
    assert text(root, f"{A}id") and text(root, f"{A}author/{A}name")
    generator = root.find(f"{A}generator")
    assert generator is not None and generator.text == "newsdesk" and generator.get("version")
    for entry in entries(root):
        for child in ("id", "title", "updated", "summary", "author/" + A + "name"):
            assert text(entry, A + child).strip(), child


def test_entries_are_newest_first_comparing_instants_across_time_zones(analyses: list[Analysis]) -> None:
    order = [text(e, f"{A}id") for e in entries(parse(render_atom_feed(reversed(analyses), SITE)))]
    # 02:00Z is later than 09:00+08:00 (01:00Z); no published date falls back to created_at (03-19),
    # which sorts before 2026-05-12.
    expected = [IDS[1], IDS[0], IDS[2], IDS[3]]
    assert order == [f"urn:newsdesk:{i}" for i in expected]


def test_ids_are_unique_and_stable(analyses: list[Analysis]) -> None:
    first = parse(render_atom_feed(analyses, SITE))
    again = parse(render_atom_feed(reversed(analyses), SITE, base_url="https://news.example/desk/"))
    ids = sorted(text(e, f"{A}id") for e in entries(first))
    assert ids == sorted(f"urn:newsdesk:{i}" for i in IDS)
    assert ids == sorted(text(e, f"{A}id") for e in entries(again))


def test_the_same_article_twice_is_one_entry(analyses: list[Analysis]) -> None:
    root = parse(render_atom_feed([*analyses, analyses[0]], SITE))
    assert len(entries(root)) == len(analyses)


def test_timestamps_are_rfc3339_and_feed_updated_is_the_latest(analyses: list[Analysis]) -> None:
    root = parse(render_atom_feed(analyses, SITE))
    updated = [instant(text(e, f"{A}updated")) for e in entries(root)]
    for entry in entries(root):
        published = entry.find(f"{A}published")
        if published is not None:
            assert instant(published.text or "") <= instant(text(entry, f"{A}updated"))
    assert instant(text(root, f"{A}updated")) == max(updated)
    published_ids = [e for e in entries(root) if e.find(f"{A}published") is not None]
    assert len(published_ids) == 3, "the article without a date has no <published>"


def test_titles_summaries_and_tags_in_both_languages(analyses: list[Analysis]) -> None:
    root = parse(render_atom_feed(analyses[:1], SITE))
    (entry,) = entries(root)
    a = analyses[0]
    assert text(entry, f"{A}title") == a.en.title
    assert text(entry, f"{A}summary") == a.en.summary
    zh_title = entry.find(f"{ND}title")
    assert zh_title is not None and zh_title.text == a.zh.title and zh_title.get(XML_LANG) == "zh-Hans"
    content = entry.find(f"{A}content")
    assert content is not None and content.get("type") == "xhtml"
    divs = list(content)
    assert [d.tag for d in divs] == [f"{XHTML}div"], "xhtml content is a single XHTML div"
    zh_texts = [el.text for el in divs[0].iter() if el.get(XML_LANG) == "zh-Hans"]
    assert a.zh.title in zh_texts and a.zh.summary in zh_texts and a.disclaimer.zh in zh_texts
    tags = [c for c in entry.findall(f"{A}category") if c.get("scheme") == TAG_SCHEME]
    assert [c.get("term") for c in tags] == [t.en for t in a.tags]
    assert all(t.zh in (c.get("label") or "") for c, t in zip(tags, a.tags, strict=True))


def test_ai_generated_marker_on_feed_and_entries(analyses: list[Analysis]) -> None:
    root = parse(render_atom_feed(analyses, SITE))
    for element in (root, *entries(root)):
        terms = [(c.get("scheme"), c.get("term")) for c in element.findall(f"{A}category")]
        assert (AI_SCHEME, "ai-generated") in terms
        generation = element.find(f"{ND}generation")
        assert generation is not None and generation.get("ai-generated") == "true"
    for entry in entries(root):
        generation = entry.find(f"{ND}generation")
        assert generation is not None
        assert generation.get("model") == "gpt-4.1-mini" and generation.get("prompt-version") == "pv-test"


def test_planted_markup_and_control_characters_are_escaped_or_removed() -> None:
    analysis = hostile_analysis(source=PLANTED, title=PLANTED)
    feed = render_atom_feed([analysis], SITE)
    assert "<script>" not in feed and "]]>" not in feed and "<b>" not in feed and "<i>" not in feed
    assert not INVALID_XML.search(feed), "no character XML 1.0 forbids"
    assert "AT&amp;T" in feed
    (entry,) = entries(parse(feed))
    clean = INVALID_XML.sub("", PLANTED)
    assert text(entry, f"{A}title") == clean and text(entry, f"{A}summary") == clean
    assert text(entry, f"{ND}title") == clean
    terms = [c.get("term") for c in entry.findall(f"{A}category") if c.get("scheme") == TAG_SCHEME]
    assert terms == ["<b>&]]>", "Plain"]
    generation = entry.find(f"{ND}generation")
    assert generation is not None and generation.get("model") == 'model"<&>'


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,x", "//evil.example/"]
)
def test_unsafe_source_urls_never_become_links(url: str) -> None:
    root = parse(render_atom_feed([make_analysis(IDS[0], url=url)], SITE))
    hrefs = [link.get("href") or "" for link in root.iter(f"{A}link")]
    assert hrefs and all(h.startswith(("articles/", "index.html")) for h in hrefs), hrefs


def test_a_safe_source_url_is_a_via_link() -> None:
    (entry,) = entries(parse(render_atom_feed([make_analysis(IDS[0])], SITE)))
    via = [link.get("href") for link in entry.findall(f"{A}link") if link.get("rel") == "via"]
    assert via == ["https://example.com/story"]


def test_links_are_relative_without_base_url_and_absolute_with_it(analyses: list[Analysis]) -> None:
    relative = entries(parse(render_atom_feed(analyses, SITE)))
    assert sorted(alternate(e) for e in relative) == sorted(f"articles/{i}/article.html" for i in IDS)
    for base in ("https://news.example/desk", "https://news.example/desk/"):
        absolute = entries(parse(render_atom_feed(analyses, SITE, base_url=base)))
        expected = sorted(f"https://news.example/desk/articles/{i}/article.html" for i in IDS)
        assert sorted(alternate(e) for e in absolute) == expected


@pytest.mark.parametrize("base", ["javascript:alert(1)", "ftp://news.example/", "/desk/", ""])
def test_a_base_url_that_is_not_http_is_refused(analyses: list[Analysis], base: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        render_atom_feed(analyses, SITE, base_url=base)


def test_empty_feed_is_valid() -> None:
    root = parse(render_atom_feed([], SITE))
    assert root.tag == f"{A}feed" and not entries(root)
    assert text(root, f"{A}updated") == "1970-01-01T00:00:00Z"
    assert text(root, f"{A}id") and text(root, f"{A}title") and text(root, f"{A}author/{A}name")
