"""The emit step's shortcuts write what the plain treatments write, byte for byte.

Each renderer skips work where it can prove the result unchanged: md_escape returns text with
nothing to escape as it is, the HTML templates escape in their finalize instead of by autoescaping,
control characters and invalid XML characters are looked for only in unprintable text, and the feed
entry is written as text rather than through ElementTree. Each is checked here against the plain
version (written out below as it was) on hostile and generated text, and the tables the shortcuts
rest on are checked against the whole of Unicode.
"""

from __future__ import annotations

import json
import random
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from markupsafe import Markup, escape

from pipeline.config import DEFAULT_DISCLAIMER_EN, DEFAULT_DISCLAIMER_ZH
from pipeline.emit import feed as feed_module
from pipeline.emit import render as render_module
from pipeline.emit.feed import feed_base, feed_entry_xml, feed_item, rfc3339, xml_text
from pipeline.emit.render import (
    SiteInfo,
    md_escape,
    safe_href,
    strip_controls,
)
from pipeline.emit.write import remove_temporaries
from pipeline.schema import Analysis
from tests.conftest import RECORDINGS

ARTICLE_ID = "duke-energy-orders-8-5-gwh-of-iron-air-batteries-in-largest-7f7822e172"
ALL_CHARACTERS = [chr(c) for c in range(sys.maxunicode + 1)]

# Pieces of hostile and awkward text; the corpus strings are random runs of them.
ATOMS = [
    "<script>alert(1)</script>", '"', "'", "&", "&amp;", "<", ">", "]]>", "\x00", "\x01", "\x08", "\x0b",
    "\x0c", "\x1b", "\x1c", "\x1f", "\x7f", "\x85", "\x9f", "\xa0", "\u1680", "\u2000", "\u200a",
    "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\t", "\n", "\r", "\r\n", " ", "  ", "\\", "`",
    "*", "_", "{", "}", "[", "]", "(", ")", "#", "+", "!", "|", "~", "-", "--", "---", "1.", "12. ",
    "1", "٣", "²", ".", "a", "word", "中文", "数据。", "\ufffe", "\uffff", "\ud800", "\U0001f600",
    "\u200b", "\ufeff", "é", "·", "javascript:", "{{ x }}", "\u00ad", "\x80", "\ud7ff", "\ue000",
    "\ufffd", "\U0010ffff", "&#39;", "- x", "1. First",
]  # fmt: skip


def corpus(count: int = 4000, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "  ", "plain text", "纯文本", "1. First", "- item", "---", "2026. A year"]
    texts += ["".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 8))) for _ in range(count)]
    return texts


TEXTS = corpus()


# --- Markdown ------------------------------------------------------------------------------------

_MD_SPECIAL = "\\`*_{}[]()#+!|~"
_MD_LINE_START = re.compile(r"\d{1,9}(?=\.(?:\s|$))|(?=-(?:\s|-|$))")


def plain_md_escape(text: str) -> str:
    """md_escape as it was before its shortcut: every step on every text."""
    text = " ".join(strip_controls(text).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for special in _MD_SPECIAL:
        if special in text:
            text = text.replace(special, "\\" + special)
    if text[:1].isdigit() or text[:1] == "-":
        marker = _MD_LINE_START.match(text)
        if marker is not None:
            text = f"{text[: marker.end()]}\\{text[marker.end() :]}"
    return text


def test_md_escape_writes_what_the_full_treatment_writes() -> None:
    assert [md_escape(t) for t in TEXTS] == [plain_md_escape(t) for t in TEXTS]


def test_every_character_md_escape_changes_fails_its_quick_test() -> None:
    """Whitespace other than the space (what str.split() splits on), control characters, "&<>"
    and the markup characters: md_escape may return text as it is only when it holds none."""
    changed = {c for c in ALL_CHARACTERS if (c.isspace() and c != " ") or strip_controls(c) == ""}
    changed |= set(_MD_SPECIAL + "&<>")
    assert {c for c in ALL_CHARACTERS if render_module._MD_CHANGED.match(c)} == changed
    ascii_table = render_module._MD_CHANGED_ASCII
    assert {chr(b) for b in range(128) if ascii_table[b] == 0} == {c for c in changed if c.isascii()}


# --- HTML ----------------------------------------------------------------------------------------


def test_every_control_character_is_unprintable() -> None:
    """What lets _finalize and xml_text look for control or invalid XML characters only in text
    that is not printable."""
    assert all(not c.isprintable() for c in ALL_CHARACTERS if strip_controls(c) == "")
    assert all(not c.isprintable() for c in ALL_CHARACTERS if feed_module._INVALID_XML.match(c))


def test_template_values_are_escaped_as_autoescaping_escapes_them() -> None:
    finalize = render_module._finalize
    assert [finalize(t) for t in TEXTS] == [str(escape(strip_controls(t))) for t in TEXTS]
    assert finalize(Markup("<b>trusted</b>")) == "<b>trusted</b>"
    assert finalize(42) == "42" and finalize(None) == "None"
    template = render_module._env().from_string('<p title="{{ x }}">{{ x ~ "<" }}{{ m }}</p>')
    page = template.render(x="<a href='x'>\x1b&</a>", m=Markup("<i>ok</i>"))
    assert page == (
        '<p title="&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;">'
        "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;&lt;<i>ok</i></p>"
    )


# --- the feed ------------------------------------------------------------------------------------


def elementtree_entry(a: Analysis, site: SiteInfo, base: str | None) -> str:
    """feed_entry_xml as it was: the <entry> built and written by ElementTree."""
    lang = "{http://www.w3.org/XML/1998/namespace}lang"

    def el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        invalid = feed_module._INVALID_XML
        element = ET.SubElement(parent, tag, {k: invalid.sub("", v) for k, v in attrs.items()})
        if text is not None:
            element.text = invalid.sub("", text)
        return element

    def zh(element: ET.Element) -> None:
        element.set(lang, "zh-Hans")

    def href(path: str) -> str:
        return feed_module._href(base, path)

    item = feed_item(a)
    entry = ET.Element("entry")
    el(entry, "id", f"urn:newsdesk:{quote(a.article.id, safe='-._~')}")
    el(entry, "title", a.en.title, type="text")
    zh(el(entry, "newsdesk:title", a.zh.title))
    el(entry, "updated", rfc3339(item.updated))
    if item.published is not None:
        el(entry, "published", rfc3339(item.published))
    page = f"articles/{quote(a.article.id, safe='-._~')}/article.html"
    el(entry, "link", rel="alternate", type="text/html", href=href(page))
    source = safe_href(a.article.url)
    if source is not None:
        el(entry, "link", rel="via", href=source, title=a.article.source or a.article.title)
    author = el(entry, "author")
    el(author, "name", f"{site.name} (AI-generated)")
    if base:
        el(author, "uri", base)
    el(entry, "summary", a.en.summary, type="text")
    div = el(el(entry, "content", type="xhtml"), "div", xmlns="http://www.w3.org/1999/xhtml")
    zh(el(div, "h1", a.zh.title))
    el(div, "p", a.en.summary)
    zh(el(div, "p", a.zh.summary))
    el(div, "p", f"Disclaimer: {a.disclaimer.en}")
    zh(el(div, "p", a.disclaimer.zh))
    for tag in a.tags:
        if xml_text(tag.en).strip():
            el(entry, "category", term=tag.en, scheme="urn:newsdesk:tag", label=f"{tag.en} · {tag.zh}")
    el(entry, "category", term="ai-generated", scheme="urn:newsdesk:ai", label="AI-generated · AI 生成")
    el(entry, "newsdesk:generation", **{
        "ai-generated": "true", "model": a.generation.model,
        "prompt-version": a.generation.prompt_version, "created": a.generation.created_at,
    })  # fmt: skip
    ET.indent(entry, space="  ", level=1)
    return f"  {ET.tostring(entry, encoding='unicode').strip()}\n"


def recorded_document() -> dict[str, Any]:
    def answer(call: str) -> dict[str, Any]:
        document = json.loads((RECORDINGS / ARTICLE_ID / f"{call}-0.json").read_text(encoding="utf-8"))
        parsed: dict[str, Any] = json.loads(document["response"]["choices"][0]["message"]["content"])
        return parsed

    en, zh = answer("en"), answer("zh")
    return {
        "schema_version": 1,
        "article": {"id": ARTICLE_ID, "title": "Original headline", "source": "Example Wire",
                    "url": "https://example.com/story", "published_at": "2026-03-18", "language": "en",
                    "content_sha256": "0" * 64},
        "scores": en["scores"], "tags": en["tags"], "en": en["en"], "zh": zh["zh"],
        "disclaimer": {"en": DEFAULT_DISCLAIMER_EN, "zh": DEFAULT_DISCLAIMER_ZH},
        "generation": {"model": "gpt-4.1-mini", "prompt_version": "pv-test",
                       "created_at": "2026-03-19T08:00:00Z",
                       "usage": {"prompt_tokens": 1, "cached_tokens": 0, "completion_tokens": 1},
                       "calls": 2, "attempts": 2},
    }  # fmt: skip


def hostile_analyses(count: int = 150) -> list[Analysis]:
    """The recorded analysis with its text replaced, field by field, by runs of ATOMS (lone
    surrogates left out: no analysis can hold one), and its dates and links varied."""
    rng = random.Random(11)
    atoms = [a for a in ATOMS if a != "\ud800"]
    urls = [None, "https://ok.example/x?a=1&b=2", "javascript:alert(1)", "https://x.example/\t"]
    dates = [None, "2026-03-17", "2026-03-17T08:30:00+08:00", "Spring 2026", "\x01"]
    analyses = []
    for _ in range(count):
        document = recorded_document()

        def vary(value: Any) -> Any:  # 38 characters fit every field
            if isinstance(value, dict):
                return {k: vary(v) for k, v in value.items()}
            if isinstance(value, list):
                return [vary(v) for v in value]
            if isinstance(value, str) and rng.random() < 0.5:
                return "".join(rng.choice(atoms) for _ in range(rng.randint(1, 6)))[:38] or "x"
            return value

        for key in ("en", "zh", "tags", "disclaimer"):
            document[key] = vary(document[key])
        document["article"].update(
            source=rng.choice([None, "Wire & <Co>", "\t\x0b"]), url=rng.choice(urls),
            published_at=rng.choice(dates), title=rng.choice(["Plain", 'A "quoted"\ntitle'])
        )  # fmt: skip
        document["generation"]["model"] = rng.choice(['m"<&>\x01', "gpt\t4", "gpt-4.1-mini"])
        try:
            analyses.append(Analysis.model_validate(document))
        except ValueError:
            continue
    return analyses


@pytest.mark.parametrize("url", [None, "https://news.example/site"])
def test_feed_entries_are_what_elementtree_writes(url: str | None) -> None:
    site = SiteInfo(name='Desk "&" <b>', url=url)
    base = feed_base(site.url)
    analyses = [Analysis.model_validate(recorded_document()), *hostile_analyses()]
    assert len(analyses) > 100
    for analysis in analyses:
        assert feed_entry_xml(analysis, site, base) == elementtree_entry(analysis, site, base)


# --- analysis.json and the files -----------------------------------------------------------------


def test_remove_temporaries_removes_the_leftovers_of_the_names_given(tmp_path: Path) -> None:
    names = [".article.html.k3j_x9q2.tmp", ".article.md.0123456789ab.tmp", ".analysis.json.x.tmp",
             ".feed.xml.x.tmp", ".article.html.tmp", "article.html", "x.article.html.a.tmp"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_text("x", encoding="utf-8")
    remove_temporaries(tmp_path, ("article.html", "article.md"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])
    remove_temporaries(tmp_path)  # ".*.*.tmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["article.html", "x.article.html.a.tmp"]
    remove_temporaries(tmp_path / "missing", ("article.html",))
    remove_temporaries(tmp_path / "article.html", ("article.html",))  # a file, not a folder
