"""The emit step: the article page, the Markdown, analysis.json, the index, atomic writes, and
the batch runner's output folder (skip, force, duplicates)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NoReturn

import pytest
from markdown_it import MarkdownIt
from markupsafe import escape

from pipeline import runner as runner_module
from pipeline.config import DEFAULT_DISCLAIMER_EN, DEFAULT_DISCLAIMER_ZH, Settings
from pipeline.console import PlainProgress
from pipeline.emit.index import render_atom_feed, render_index_html, write_index
from pipeline.emit.output import ARTICLE_FILES, iter_analyses
from pipeline.emit.render import (
    SiteInfo,
    md_escape,
    parse_instant,
    render_analysis_json,
    render_article_html,
    render_article_markdown,
    safe_href,
)
from pipeline.emit.write import atomic_write_chunks, atomic_write_text
from pipeline.model.base import ChatModel, ModelReply, ModelRequest
from pipeline.model.fake import ScriptedModel
from pipeline.model.replay import ReplayModel
from pipeline.prompts import PromptBook
from pipeline.report import RunReport
from pipeline.runner import Runner, RunOptions
from pipeline.schema import Analysis
from tests.conftest import ARTICLES, RECORDINGS

# An article whose answers have a key-data row with a null metric in both languages.
STORAGE_ID = "zh-energy-storage-tender-d12ceb608b"
EN_HEADINGS = ["TL;DR", "Key Data", "Deep Analysis", "Industry Insights", "FAQ"]
ZH_HEADINGS = ["TL;DR", "核心数据", "深度解读", "行业启示", "FAQ"]
CJK = re.compile(r"[\u3400-\u9fff]")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

PAYLOADS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '"><svg onload=alert(1)>']
HOSTILE = " ".join(PAYLOADS)  # fits every field but entity (100) and tag labels (40)
MD_LINK = "[click](javascript:alert(1)) <javascript:alert(1)>"


# --- a small DOM over html.parser -------------------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    parent: Node | None = None
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator[Node]:
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def all(self, tag: str, **attrs: str) -> list[Node]:
        return [n for n in self.iter() if n.tag == tag and n.matches(attrs)]

    def matches(self, attrs: dict[str, str]) -> bool:
        return all(self.cls(v) if k == "class_" else self.attrs.get(k) == v for k, v in attrs.items())

    def one(self, tag: str, **attrs: str) -> Node:
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]

    def cls(self, name: str) -> bool:
        return name in (self.attrs.get("class") or "").split()

    def ancestors(self) -> Iterator[Node]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def lang(self) -> str | None:
        node: Node | None = self
        while node is not None:
            if "lang" in node.attrs:
                return node.attrs["lang"]
            node = node.parent
        return None


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.current = self.root
        self.start_tags: list[tuple[str, dict[str, str | None]]] = []
        self.doctype: str | None = None

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), self.current)
        self.start_tags.append((tag, node.attrs))
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse(html: str) -> _Builder:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder


# --- analyses ---------------------------------------------------------------------------------


def recorded_answer(article_id: str, call: str) -> dict[str, Any]:
    document = json.loads((RECORDINGS / article_id / f"{call}-0.json").read_text(encoding="utf-8"))
    answer: dict[str, Any] = json.loads(document["response"]["choices"][0]["message"]["content"])
    return answer


def analysis_document(article_id: str = STORAGE_ID, **article: Any) -> dict[str, Any]:
    en, zh = recorded_answer(article_id, "en"), recorded_answer(article_id, "zh")
    meta = {
        "id": article_id,
        "title": "华电集团12GWh储能集采",
        "source": "能源观察周刊",
        "url": "https://example.com/storage",
        "published_at": "2026-03-18",
        "language": "zh",
        "content_sha256": "0" * 64,
    } | article
    return {
        "schema_version": 1,
        "article": meta,
        "scores": en["scores"],
        "tags": en["tags"],
        "en": en["en"],
        "zh": zh["zh"],
        "disclaimer": {"en": DEFAULT_DISCLAIMER_EN, "zh": DEFAULT_DISCLAIMER_ZH},
        "generation": {
            "model": "gpt-4.1-mini",
            "prompt_version": "test",
            "created_at": "2026-03-19T08:00:00+00:00",
            "usage": {"prompt_tokens": 10, "cached_tokens": 0, "completion_tokens": 20},
            "calls": 2,
            "attempts": 2,
        },
    }


def make_analysis(article_id: str = STORAGE_ID, **article: Any) -> Analysis:
    return Analysis.model_validate(analysis_document(article_id, **article))


def hostile_section(short: list[str]) -> dict[str, Any]:
    long = f"{HOSTILE} {MD_LINK}"
    return {
        "title": long,
        "summary": long,
        "tldr": [long] * 3,
        "key_data": [{"entity": short[i % len(short)], "info": long, "metric": long} for i in range(3)],
        "analysis": [long] * 3,
        "insights": [long] * 3,
        "faq": [{"question": long, "answer": long}] * 3,
    }


@pytest.fixture(scope="module")
def storage() -> Analysis:
    return make_analysis()


@pytest.fixture(scope="module")
def hostile() -> Analysis:
    document = analysis_document(
        title=HOSTILE,
        source=HOSTILE,
        url="javascript:alert(1)",
        published_at='2026-01-01"><script>alert(1)</script>',
    )
    document["en"] = hostile_section(PAYLOADS)
    document["zh"] = hostile_section(PAYLOADS)
    document["tags"] = [{"en": p, "zh": p} for p in PAYLOADS]
    document["generation"]["model"] = HOSTILE
    return Analysis.model_validate(document)


# --- the batch runner -------------------------------------------------------------------------


def run_pipeline(
    paths: list[Path],
    out: Path,
    model: ChatModel | None = None,
    *,
    force: bool = False,
    settings: Settings | None = None,
) -> RunReport:
    settings = settings or Settings()
    runner = Runner(
        settings, model or ReplayModel(RECORDINGS), PromptBook(settings), PlainProgress(io.StringIO())
    )
    return asyncio.run(runner.run(paths, RunOptions(out=out, mode="replay", force=force)))


class CountingModel:
    """Replays recordings and counts the calls."""

    def __init__(self) -> None:
        self.inner = ReplayModel(RECORDINGS)
        self.calls: list[str] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls.append(f"{request.key.article_id}/{request.key.filename}")
        return await self.inner.complete(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def must_not_be_called(request: ModelRequest) -> NoReturn:
    pytest.fail(f"unexpected model call {request.key}")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunReport]:
    out = tmp_path_factory.mktemp("full-run")
    return out, run_pipeline([ARTICLES], out)


def small_inputs(folder: Path) -> list[Path]:
    folder.mkdir()
    for name in ("energy-iron-air-storage.txt", "zh-rrr-cut.txt"):
        shutil.copyfile(ARTICLES / name, folder / name)
    return [folder]


def article_bytes(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "articles").rglob("*")) if p.is_file()
    }


# --- the article page -------------------------------------------------------------------------


def test_article_page_is_standalone(storage: Analysis) -> None:
    html = render_article_html(storage)
    page = parse(html)
    assert html.startswith("<!DOCTYPE html>")
    head = page.root.one("head")
    assert head.one("style").text().strip(), "the CSS is inline"
    assert not page.root.all("script"), "the article page runs no script"
    assert not page.root.all("link"), "no external stylesheet"
    assert not [t for t, a in page.start_tags if "src" in a]
    head_html = html[: html.index("</head>")]
    assert not re.search(r"""<(link|script)[^>]*(https?:)?//""", head_html)


@pytest.mark.parametrize("page", ["article", "index"])
def test_inline_css_is_raw_text_not_html_escaped(storage: Analysis, page: str) -> None:
    # <style> is a raw-text element: a character reference in it reaches the CSS parser verbatim,
    # so `font-family:&#34;PingFang SC&#34;` would drop the declaration.
    html = render_article_html(storage) if page == "article" else render_index_html([storage])
    css = parse(html).root.one("style").text()
    assert not re.findall(r"&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);", css)


def test_ai_generated_meta_is_present(storage: Analysis) -> None:
    head = parse(render_article_html(storage)).root.one("head")
    assert head.one("meta", name="ai-generated").attrs.get("content") == "true"


def test_titles_and_summaries_in_both_languages(storage: Analysis) -> None:
    root = parse(render_article_html(storage)).root
    titles = root.all("h1")
    assert [t.text() for t in titles] == [storage.en.title, storage.zh.title]
    assert [t.lang() for t in titles] == ["en", "zh-Hans"]
    summaries = root.all("p", class_="summary")
    assert [s.text() for s in summaries] == [storage.en.summary, storage.zh.summary]
    assert [s.lang() for s in summaries] == ["en", "zh-Hans"]


def test_three_scores_with_bilingual_labels(storage: Analysis) -> None:
    badges = parse(render_article_html(storage)).root.all("div", class_="badge")
    got = [(b.one("b").text(), b.all("span")[0].text()) for b in badges]
    s = storage.scores
    assert got == [
        (str(s.hot), "Hot 热度"),
        (str(s.quality), "Quality 质量"),
        (str(s.impact), "Impact 影响力"),
    ]
    for badge, label in zip(badges, ["热度", "质量", "影响力"], strict=True):
        assert [n.lang() for n in badge.all("span") if n.text() == label] == ["zh-Hans"]


def test_page_follows_the_reference_order(storage: Analysis) -> None:
    html = render_article_html(storage)
    markers = [
        f"<h1>{escape(storage.en.title)}</h1>",
        f">{escape(storage.zh.title)}</h1>",
        f">{escape(storage.en.summary)}</p>",
        f">{escape(storage.zh.summary)}</p>",
        "Hot <span",
        "Quality <span",
        "Impact <span",
        *[f"<h3>{h}</h3>" for h in EN_HEADINGS],
        *[f"<h3>{h}</h3>" for h in ZH_HEADINGS],
        f"<strong>Disclaimer:</strong> {DEFAULT_DISCLAIMER_EN}</p>",
        f">{DEFAULT_DISCLAIMER_ZH}</p>",
        f"<span>{escape(storage.tags[0].en)}</span>",
        f">{escape(storage.tags[-1].zh)}</span>",
    ]
    position = 0
    for marker in markers:
        found = html.find(marker, position)
        assert found >= position, f"{marker!r} missing or out of order"
        position = found + len(marker)


def test_sections_hold_their_language_content(storage: Analysis) -> None:
    sections = parse(render_article_html(storage)).root.all("section", class_="lang")
    assert [s.attrs.get("lang") for s in sections] == ["en", "zh-Hans"]
    for node, section, headings in zip(
        sections, (storage.en, storage.zh), (EN_HEADINGS, ZH_HEADINGS), strict=True
    ):
        assert [h.text() for h in node.all("h3")] == headings
        assert [li.text() for li in node.one("ul").all("li")] == section.tldr
        assert [p.text() for p in node.all("p") if p.attrs.get("class") != "edition"] == section.analysis
        assert [li.text() for li in node.one("ol").all("li")] == section.insights
        assert [dt.text() for dt in node.all("dt")] == [f"Q: {f.question}" for f in section.faq]
        assert [dd.text() for dd in node.all("dd")] == [f"A: {f.answer}" for f in section.faq]


def test_disclaimer_exact_then_tags(storage: Analysis) -> None:
    root = parse(render_article_html(storage)).root
    footer = root.one("footer")
    children = [c.tag for c in footer.children if isinstance(c, Node)]
    assert children == ["div", "ul"], "disclaimer, then tags"
    paragraphs = footer.one("div", class_="disclaimer").all("p")
    assert [p.text() for p in paragraphs] == [f"Disclaimer: {DEFAULT_DISCLAIMER_EN}", DEFAULT_DISCLAIMER_ZH]
    assert paragraphs[1].lang() == "zh-Hans"
    tags = footer.one("ul", class_="tags").all("li")
    assert [li.text() for li in tags] == [f"{t.en} {t.zh}" for t in storage.tags]
    assert [li.all("span")[1].lang() for li in tags] == ["zh-Hans"] * len(storage.tags)


def test_chinese_text_is_marked_zh_hans(storage: Analysis) -> None:
    root = parse(render_article_html(storage)).root
    body = root.one("body")
    wrong = []
    for node in [body, *body.iter()]:
        if any(n.cls("source") for n in [node, *node.ancestors()]):
            continue  # article metadata, in the source's own language
        for child in node.children:
            if isinstance(child, str) and CJK.search(child) and node.lang() != "zh-Hans":
                wrong.append((node.tag, node.attrs, child[:40]))
    assert not wrong
    assert any(CJK.search(n.text()) for n in body.all("section", lang="zh-Hans"))


@pytest.mark.parametrize("lang", ["en", "zh-Hans"])
def test_key_data_table(storage: Analysis, lang: str) -> None:
    section = storage.en if lang == "en" else storage.zh
    table = parse(render_article_html(storage)).root.one("section", lang=lang).one("table")
    header = table.one("thead").all("th")
    assert [th.attrs.get("scope") for th in header] == ["col"] * 3
    expected_header = (
        ["Entity", "Key Info", "Data/Metrics"] if lang == "en" else ["实体", "关键信息", "数据/指标"]
    )
    assert [th.text() for th in header] == expected_header
    rows = table.one("tbody").all("tr")
    assert len(rows) == len(section.key_data)
    for tr, row in zip(rows, section.key_data, strict=True):
        cells = [c for c in tr.children if isinstance(c, Node)]
        assert [c.text() for c in cells] == [
            row.entity,
            row.info,
            row.metric if row.metric is not None else "-",
        ]
        assert cells[0].tag == "th" and cells[0].attrs.get("scope") == "row"
    assert any(row.metric is None for row in section.key_data), "the fixture has a null metric"


@pytest.mark.parametrize(
    ("url", "linked"),
    [
        ("https://example.com/story?id=1", True),
        ("http://example.com/story", True),
        ("javascript:alert(1)", False),
        ("data:text/html,<b>x</b>", False),
        ("/relative/story", False),
        (None, False),
    ],
)
def test_source_is_a_link_only_for_http_urls(url: str | None, linked: bool) -> None:
    analysis = make_analysis(url=url, source="能源观察周刊")
    source = parse(render_article_html(analysis)).root.one("p", class_="source")
    assert source.text() == "Source: 能源观察周刊"
    links = source.all("a")
    assert [a.attrs.get("href") for a in links] == ([url] if linked else [])


@pytest.mark.parametrize(
    ("source", "title", "shown", "lang"),
    [
        ("能源观察周刊", "Storage tender", "能源观察周刊", "zh-Hans"),
        ("Grid Weekly", "华电集团12GWh储能集采", "Grid Weekly", "en"),
        (None, "华电集团12GWh储能集采", "华电集团12GWh储能集采", "zh-Hans"),  # the title stands in
        (None, "Storage tender", "Storage tender", "en"),
    ],
)
def test_the_source_line_has_the_language_of_what_it_shows(
    source: str | None, title: str, shown: str, lang: str
) -> None:
    page = parse(render_article_html(make_analysis(source=source, title=title)))
    [span] = page.root.one("p", class_="source").all("span")
    assert (span.text(), span.attrs.get("lang")) == (shown, lang)


# --- escaping ---------------------------------------------------------------------------------


def assert_no_live_markup(html: str, scripts: int) -> None:
    lowered = html.lower()
    assert "<script>alert" not in lowered
    assert "<img" not in lowered and "<svg" not in lowered
    assert 'href="javascript:' not in lowered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    page = parse(html)
    tags = [t for t, _ in page.start_tags]
    assert "img" not in tags and "svg" not in tags
    assert tags.count("script") == scripts
    for tag, attrs in page.start_tags:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name, value in attrs.items():
            assert not (value or "").strip().lower().startswith(("javascript:", "data:")), (tag, name, value)
    for script in page.root.all("script"):
        assert "src" not in script.attrs and "alert" not in script.text()


def test_article_html_escapes_every_field(hostile: Analysis) -> None:
    html = render_article_html(hostile)
    assert_no_live_markup(html, scripts=0)
    root = parse(html).root
    assert [h.text() for h in root.all("h1")] == [hostile.en.title, hostile.zh.title]
    assert root.one("p", class_="source").text() == f"Source: {HOSTILE}"
    assert not root.all("a"), "a javascript: URL is not a link"
    assert [li.text() for li in root.one("ul", class_="tags").all("li")] == [f"{p} {p}" for p in PAYLOADS]


def test_index_html_escapes_every_field(hostile: Analysis, storage: Analysis) -> None:
    dated = hostile.model_copy(
        update={"article": hostile.article.model_copy(update={"published_at": "2026-01-01"})}
    )
    html = render_index_html([dated, storage])
    assert_no_live_markup(html, scripts=1)
    options = parse(html).root.one("select", id="tag").all("option")
    assert {o.attrs.get("value") for o in options} >= set(PAYLOADS)


def test_markdown_escapes_every_field(hostile: Analysis) -> None:
    md = render_article_markdown(hostile)
    assert "<script" not in md.lower() and "<img" not in md.lower() and "<svg" not in md.lower()
    assert "&lt;script&gt;" in md and "&lt;img src=x onerror=alert\\(1\\)&gt;" in md
    targets = re.findall(r"(?<!\\)\]\(\s*<?\s*([^\s)>]*)", md)
    assert all(t.startswith(("http://", "https://")) for t in targets), targets
    assert not re.search(r"(?<!\\)\]\(\s*<?\s*javascript:", md, re.IGNORECASE)
    assert not re.search(r"<\s*javascript:", md, re.IGNORECASE)
    source = next(line for line in md.splitlines() if line.startswith("Source:"))
    assert source == f"Source: {md_escape(HOSTILE)}"


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com/path?q=1&r=2#frag",
        "https://例子.中国/新闻",
        "HTTPS://EXAMPLE.COM/A",
    ],
)
def test_safe_href_accepts_http_urls(url: str) -> None:
    assert safe_href(url) == url


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "  javascript:alert(1)",
        "java\nscript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "mailto:desk@example.com",
        "ftp://example.com/file",
        "/relative/path",
        "relative/path.html",
        "../up.html",
        "//evil.com",
        "//evil.com/path",
        "https:evil.com",
        "http:///path",
        'https://example.com/"onmouseover="alert(1)',
        "https://example.com/'onmouseover='alert(1)",
        "https://example.com/a b",
        "https://example.com/a\nb",
        "https://example.com/a\rb",
        "https://example.com/a\tb",
        "https://example.com/<script>",
        "https://example.com/`x`",
        "https://example.com/\x00",
    ],
)
def test_safe_href_rejects_everything_else(url: str | None) -> None:
    assert safe_href(url) is None


# --- Markdown ---------------------------------------------------------------------------------


def md_cells(line: str) -> list[str]:
    """Split a GFM table row the way GFM does: a backslash escapes the next character."""
    assert line.startswith("|") and line.endswith("|"), line
    cells, current, i = [], "", 1
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            current += line[i : i + 2]
            i += 2
            continue
        if ch == "|":
            cells.append(current.strip())
            current = ""
        else:
            current += ch
        i += 1
    return cells


def md_table(md: str, heading: str) -> list[list[str]]:
    lines = md.splitlines()
    start = lines.index(f"### {heading}") + 2
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(md_cells(line))
    return rows


def test_markdown_has_both_sections_in_order(storage: Analysis) -> None:
    md = render_article_markdown(storage)
    lines = md.splitlines()
    assert [line for line in lines if line.startswith("# ")] == [
        f"# {md_escape(storage.en.title)}",
        f"# {md_escape(storage.zh.title)}",
    ]
    assert [line[4:] for line in lines if line.startswith("### ")] == EN_HEADINGS + ZH_HEADINGS
    assert md_escape(storage.en.summary) in lines and md_escape(storage.zh.summary) in lines
    s = storage.scores
    assert f"**Hot 热度** {s.hot} · **Quality 质量** {s.quality} · **Impact 影响力** {s.impact}" in lines
    zh_start = [i for i, line in enumerate(lines) if line == "### TL;DR"][1]
    for section, part in ((storage.en, lines[:zh_start]), (storage.zh, lines[zh_start:])):
        assert [line for line in part if line.startswith("- ")] == [f"- {md_escape(t)}" for t in section.tldr]
        for paragraph in section.analysis:
            assert md_escape(paragraph) in part
        for item in section.faq:
            assert f"**Q: {md_escape(item.question)}**" in part and f"A: {md_escape(item.answer)}" in part


@pytest.mark.parametrize(("lang", "heading"), [("en", "Key Data"), ("zh", "核心数据")])
def test_markdown_key_data_table(storage: Analysis, lang: str, heading: str) -> None:
    section = storage.en if lang == "en" else storage.zh
    rows = md_table(render_article_markdown(storage), heading)
    header = ["Entity", "Key Info", "Data/Metrics"] if lang == "en" else ["实体", "关键信息", "数据/指标"]
    assert rows[0] == header
    assert rows[1] == ["---"] * 3
    body = rows[2:]
    assert len(body) == len(section.key_data)
    for cells, row in zip(body, section.key_data, strict=True):
        metric = md_escape(row.metric) if row.metric is not None else "-"
        assert cells == [md_escape(row.entity), md_escape(row.info), metric]
    assert ["-"] in [cells[2:] for cells in body], "a null metric shows as '-'"


def test_markdown_pipe_in_a_cell_keeps_three_columns() -> None:
    document = analysis_document()
    document["en"]["key_data"][0] = {"entity": "A|B", "info": "x | y || z", "metric": "1|2 \\|3"}
    rows = md_table(render_article_markdown(Analysis.model_validate(document)), "Key Data")
    assert all(len(cells) == 3 for cells in rows), rows
    assert rows[2] == ["A\\|B", "x \\| y \\|\\| z", "1\\|2 \\\\\\|3"]


LIST_LIKE = ["1. Reserve cuts free up cash", "- a dash first", "---", "2026. A year and a full stop",
             "12) numbered", "+ plus", "* star", "# hash", "> quote", "=== under"]  # fmt: skip


def test_markdown_text_that_looks_like_a_list_or_a_rule_stays_text() -> None:
    """Parsed by a CommonMark parser: one flat list per TL;DR and insights, no rule but the one
    before the disclaimer, and every field reads back as the model wrote it."""
    document = analysis_document()
    for lang in ("en", "zh"):
        section = document[lang]
        section["tldr"] = LIST_LIKE[:4]
        section["insights"] = LIST_LIKE[4:8]
        section["analysis"] = LIST_LIKE[:3] + LIST_LIKE[8:]
        section["faq"][0]["answer"] = "1. First, the answer."
    section["summary"] = "- starts with a dash"
    tokens = MarkdownIt("commonmark").parse(render_article_markdown(Analysis.model_validate(document)))
    opened = [t.type for t in tokens if t.type in ("bullet_list_open", "ordered_list_open", "hr")]
    assert opened == ["bullet_list_open", "ordered_list_open"] * 2 + ["hr"], opened  # the rule: disclaimer
    ordered = [t for t in tokens if t.type == "ordered_list_open"]
    assert all(t.attrs.get("start", 1) == 1 for t in ordered), "insights are numbered from 1"
    texts = ["".join(child.content for child in t.children or []) for t in tokens if t.type == "inline"]
    assert all(texts.count(text) >= 2 for text in LIST_LIKE), texts  # as written, in both sections
    assert "A: 1. First, the answer." in texts and "- starts with a dash" in texts


def test_markdown_ends_with_the_disclaimer_then_the_tags_as_the_page(storage: Analysis) -> None:
    lines = [line for line in render_article_markdown(storage).splitlines() if line.strip()]
    assert lines[-4:-1] == ["---", f"Disclaimer: {DEFAULT_DISCLAIMER_EN}", DEFAULT_DISCLAIMER_ZH]
    assert lines[-1] == "Tags: " + ", ".join(f"{md_escape(t.en)} {md_escape(t.zh)}" for t in storage.tags)
    html = render_article_html(storage)
    assert html.index("Disclaimer:") < html.index('class="tags"')


# --- analysis.json ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["storage", "hostile"])
def test_analysis_json_round_trips(request: pytest.FixtureRequest, kind: str) -> None:
    analysis: Analysis = request.getfixturevalue(kind)
    text = render_analysis_json(analysis)
    assert Analysis.model_validate_json(text) == analysis
    assert render_analysis_json(Analysis.model_validate_json(text)) == text


def assert_section_contract(section: dict[str, Any]) -> None:
    assert set(section) == {"title", "summary", "tldr", "key_data", "analysis", "insights", "faq"}
    assert isinstance(section["title"], str) and isinstance(section["summary"], str)
    for key in ("tldr", "analysis", "insights"):
        assert section[key] and all(isinstance(item, str) for item in section[key])
    for row in section["key_data"]:
        assert set(row) == {"entity", "info", "metric"}
        assert row["metric"] is None or isinstance(row["metric"], str)
    for item in section["faq"]:
        assert set(item) == {"question", "answer"}


def test_analysis_json_contract(full_run: tuple[Path, RunReport]) -> None:
    out, _ = full_run
    path = out / "articles" / STORAGE_ID / "analysis.json"
    text = path.read_text(encoding="utf-8")
    analysis = Analysis.model_validate_json(text)
    data = json.loads(text)
    assert set(data) == {
        "schema_version",
        "article",
        "scores",
        "tags",
        "en",
        "zh",
        "disclaimer",
        "generation",
    }
    assert data["schema_version"] == 1
    assert set(data["article"]) == {
        "id",
        "title",
        "source",
        "url",
        "published_at",
        "language",
        "content_sha256",
    }
    assert data["article"]["id"] == STORAGE_ID == path.parent.name
    assert re.fullmatch(r"[0-9a-f]{64}", data["article"]["content_sha256"])
    assert set(data["scores"]) == {"hot", "quality", "impact"}
    assert all(isinstance(v, int) and 0 <= v <= 100 for v in data["scores"].values())
    assert data["tags"] and all(set(tag) == {"en", "zh"} for tag in data["tags"])
    assert_section_contract(data["en"])
    assert_section_contract(data["zh"])
    assert data["disclaimer"] == {"en": DEFAULT_DISCLAIMER_EN, "zh": DEFAULT_DISCLAIMER_ZH}
    assert {"model", "prompt_version", "created_at", "usage"} <= set(data["generation"])
    assert data["generation"]["model"] == Settings().model
    assert set(data["generation"]["usage"]) == {"prompt_tokens", "cached_tokens", "completion_tokens"}
    assert render_analysis_json(analysis) == text


# --- atomic writes ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_published_files_get_the_mode_the_umask_gives_new_files(tmp_path: Path, umask: int) -> None:
    """Not the owner-only mode of the temporary file: a web server running as another user must
    be able to read the site."""
    out = tmp_path / "out"
    script = (
        f"import os, sys; os.umask({umask:#o}); sys.argv = ['newsdesk'] + sys.argv[1:];"
        "from pipeline.cli import main; main()"
    )
    args = ["run", str(ARTICLES / "zh-rrr-cut.txt"), "--replay", str(RECORDINGS), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    files = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".html", ".md", ".json", ".xml")]
    assert len(files) >= 6
    modes = {p.relative_to(out).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_atomic_write_leaves_only_the_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "article.html"
    atomic_write_text(target, "新的内容\n")
    assert target.read_text(encoding="utf-8") == "新的内容\n"
    assert [p.name for p in target.parent.iterdir()] == ["article.html"]


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "analysis.json"
    target.write_text("x" * 10_000, encoding="utf-8")
    atomic_write_text(target, "short")
    assert target.read_text(encoding="utf-8") == "short"
    assert [p.name for p in tmp_path.iterdir()] == ["analysis.json"]


@pytest.mark.parametrize("step", ["replace", "fsync"])
@pytest.mark.parametrize("existed", [True, False])
def test_failed_atomic_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, existed: bool
) -> None:
    target = tmp_path / "article.md"
    if existed:
        target.write_text("old content\n", encoding="utf-8")

    def boom(*args: object) -> NoReturn:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, step, boom)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new content that never lands\n")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["article.md"] if existed else [])
    if existed:
        assert target.read_text(encoding="utf-8") == "old content\n"


def test_a_failing_stream_of_pieces_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "index.html"
    target.write_text("old page\n", encoding="utf-8")

    def pieces() -> Iterator[str]:
        yield "<!DOCTYPE html>\n"
        raise ValueError("an analysis could not be rendered")

    with pytest.raises(ValueError, match="could not be rendered"):
        atomic_write_chunks(target, pieces())
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]
    assert target.read_text(encoding="utf-8") == "old page\n"


# --- index.html -------------------------------------------------------------------------------


def index_entries(html: str) -> list[Node]:
    return parse(html).root.one("div", id="list").all("div", class_="entry")


def test_index_lists_every_article_with_tags_and_scores(full_run: tuple[Path, RunReport]) -> None:
    out, _ = full_run
    analyses = {a.article.id: a for a in list(iter_analyses(out))}
    assert len(analyses) == 13
    entries = index_entries((out / "index.html").read_text(encoding="utf-8"))
    hrefs = [e.one("h2").one("a").attrs.get("href") for e in entries]
    assert sorted(hrefs) == sorted(f"articles/{i}/article.html" for i in analyses)
    for entry, href in zip(entries, hrefs, strict=True):
        assert href is not None and (out / href).is_file()
        a = analyses[href.split("/")[1]]
        assert entry.one("h2").text() == a.en.title
        assert (
            entry.one("p", class_="zh").text() == a.zh.title
            and entry.one("p", class_="zh").lang() == "zh-Hans"
        )
        s = a.scores
        data = [entry.attrs[f"data-{k}"] for k in ("hot", "quality", "impact")]
        assert data == [str(s.hot), str(s.quality), str(s.impact)]
        meta = entry.one("p", class_="meta").text()
        assert f"Hot {s.hot} · Quality {s.quality} · Impact {s.impact}" in meta
        for tag in a.tags:
            assert f"{tag.en} {tag.zh}" in meta
        chinese = [
            span.text() for span in entry.one("p", class_="meta").all("span") if span.lang() == "zh-Hans"
        ]
        assert [t.zh for t in a.tags] == chinese[-len(a.tags) :]
        assert json.loads(str(entry.attrs["data-tags"])) == [t.en for t in a.tags]
        if a.article.published_at:
            assert meta.startswith(f"{a.article.published_at[:10]} · ")
        else:
            assert meta.startswith(f"Generated 生成于 {a.generation.created_at[:10]} · ")


def test_index_is_newest_first(full_run: tuple[Path, RunReport]) -> None:
    out, _ = full_run
    analyses = {a.article.id: a for a in list(iter_analyses(out))}
    entries = index_entries((out / "index.html").read_text(encoding="utf-8"))
    ids = [str(e.one("h2").one("a").attrs["href"]).split("/")[1] for e in entries]
    dates = [analyses[i].article.published_at for i in ids]
    dated = [d[:10] for d in dates if d is not None]
    assert len(dated) >= 10
    assert dated == sorted(dated, reverse=True)


@pytest.mark.parametrize(
    ("published", "shown", "attribute"),
    [
        ("2026-06-06T10:30", "2026-06-06", "2026-06-06T10:30"),
        ("2026-06-06", "2026-06-06", "2026-06-06"),
        ("Spring 2026", "Spring 2026", None),  # what ingest could not read is shown whole, without datetime=
        # instants past either end of what UTC can be written in: shown as written, not an error
        ("9999-12-31T23:59:59-12:00", "9999-12-31T23:59:59-12:00", None),
        ("0001-01-01T00:30:00+01:00", "0001-01-01T00:30:00+01:00", None),
    ],
)
def test_the_publication_date_on_the_page_the_index_and_the_feed(
    published: str, shown: str, attribute: str | None
) -> None:
    analysis = make_analysis(published_at=published)
    header = parse(render_article_html(analysis)).root.one("header")
    times = {t.text(): t.attrs.get("datetime") for t in header.all("time")}
    assert shown in header.text()
    assert times.get(shown) == attribute
    assert all(value is None or parse_instant(value) is not None for value in times.values())
    [entry] = index_entries(render_index_html([analysis]))
    assert entry.one("p", class_="meta").text().startswith(f"{shown} · ")
    feed = ET.fromstring(render_atom_feed([analysis], SiteInfo()))
    [entry_xml] = feed.findall("{http://www.w3.org/2005/Atom}entry")
    stamp = entry_xml.findtext("{http://www.w3.org/2005/Atom}published")
    assert (stamp is not None) == (attribute is not None)


def test_index_orders_by_hand_made_dates() -> None:
    dates = ["2026-01-02", "2026-03-01", "2025-12-31", "2026-02-15"]
    analyses = [make_analysis(published_at=d, id=f"a-{d}") for d in dates]
    entries = index_entries(render_index_html(analyses))
    assert [e.attrs["data-date"][:10] for e in entries] == sorted(dates, reverse=True)
    assert [e.one("h2").one("a").attrs["href"] for e in entries] == [
        f"articles/a-{d}/article.html" for d in sorted(dates, reverse=True)
    ]


def test_index_orders_by_instant_across_time_zones() -> None:
    # 08:00 in Beijing on the 14th is 00:00 UTC; 21:00 in New York on the 13th is 02:00 UTC on the 14th.
    beijing = make_analysis(id="beijing", published_at="2026-05-14T08:00:00+08:00")
    new_york = make_analysis(id="new-york", published_at="2026-05-13T21:00:00-05:00")
    entries = index_entries(render_index_html([beijing, new_york]))
    assert [e.one("h2").one("a").attrs["href"] for e in entries] == [
        "articles/new-york/article.html",
        "articles/beijing/article.html",
    ]


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source / "articles", target / "articles")
    return target


def test_streamed_index_and_feed_are_the_pages_of_every_analysis(
    full_run: tuple[Path, RunReport], tmp_path: Path
) -> None:
    """write_index reads the folder twice and streams; the pages are those of the pure renderers."""
    out = copy_run(full_run[0], tmp_path)
    folders = sorted((out / "articles").iterdir())
    (folders[0] / "analysis.json").write_text("{ not json", encoding="utf-8")  # a spoiled one is left out
    again = json.loads((folders[1] / "analysis.json").read_text(encoding="utf-8"))
    again["generation"]["created_at"] = "2030-01-01T00:00:00Z"  # the same article id, generated later
    (out / "articles" / "zz-regenerated").mkdir()
    (out / "articles" / "zz-regenerated" / "analysis.json").write_text(json.dumps(again), encoding="utf-8")
    site = SiteInfo(url="https://news.example/desk/")
    write_index(out, site)
    analyses = list(iter_analyses(out))
    assert len(analyses) == len(folders)
    index = (out / "index.html").read_text(encoding="utf-8")
    assert index == render_index_html(analyses, site)
    assert len(index_entries(index)) == len(analyses)
    assert f"{len(analyses)} articles" in index
    feed = (out / "feed.xml").read_text(encoding="utf-8")
    assert feed == render_atom_feed(analyses, site, site.url)
    assert feed.count("<entry>") == len(analyses) - 1, "the regenerated article is one entry"
    assert "2030-01-01T00:00:00Z" in feed


def test_index_of_an_empty_folder(tmp_path: Path) -> None:
    write_index(tmp_path, SiteInfo())
    assert index_entries((tmp_path / "index.html").read_text(encoding="utf-8")) == []
    assert "<entry>" not in (tmp_path / "feed.xml").read_text(encoding="utf-8")


def test_index_has_sort_and_filter_controls(full_run: tuple[Path, RunReport]) -> None:
    out, _ = full_run
    html = (out / "index.html").read_text(encoding="utf-8")
    root = parse(html).root
    sort = root.one("select", id="sort")
    assert [o.attrs.get("value") for o in sort.all("option")] == ["date", "hot", "quality", "impact"]
    tag = root.one("select", id="tag")
    all_tags = sorted({t.en for a in list(iter_analyses(out)) for t in a.tags})
    assert [o.attrs.get("value") for o in tag.all("option")] == ["", *all_tags]
    script = root.one("script")
    assert "getElementById('sort')" in script.text() and "getElementById('tag')" in script.text()
    assert "src" not in script.attrs
    assert root.one("meta", name="ai-generated").attrs.get("content") == "true"


# --- the runner's output folder ---------------------------------------------------------------


def test_a_big_run_keeps_its_entries_on_disk_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "IN_MEMORY_ENTRIES", 1)
    report = run_pipeline(small_inputs(tmp_path / "in"), tmp_path / "out")
    assert report.counts["ok"] == sum(report.counts.values()) == 2
    assert report.articles == [], "beyond the limit the returned report holds counts, not entries"
    data = json.loads((tmp_path / "out" / "run-report.json").read_text(encoding="utf-8"))
    assert sorted(entry["status"] for entry in data["articles"]) == ["ok", "ok"]


def test_replay_run_writes_three_files_per_article_and_a_report(full_run: tuple[Path, RunReport]) -> None:
    out, report = full_run
    data = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    assert data["counts"]["ok"] == 13 and data["counts"]["failed"] == 0
    assert sum(data["counts"].values()) == len(data["articles"]) == 13
    assert data["counts"] == report.counts
    for entry in data["articles"]:
        assert entry["status"] == "ok", entry
        folder = out / "articles" / entry["id"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(ARTICLE_FILES)
        assert sorted(Path(p).name for p in entry["outputs"]) == sorted(ARTICLE_FILES)
        assert all(Path(p).is_file() for p in entry["outputs"])
        written = Analysis.model_validate_json((folder / "analysis.json").read_text(encoding="utf-8"))
        assert written.article.id == entry["id"]
    leftovers = [
        p
        for p in out.rglob("*")
        if (p.name.startswith(".") and p.name != ".newsdesk.lock") or p.suffix == ".tmp"
    ]
    assert not leftovers


def test_second_run_skips_without_calling_the_model(tmp_path: Path) -> None:
    inputs, out = small_inputs(tmp_path / "in"), tmp_path / "out"
    first = run_pipeline(inputs, out)
    assert first.counts["ok"] == 2
    before = article_bytes(out)
    model = ScriptedModel(must_not_be_called)
    second = run_pipeline(inputs, out, model)
    assert model.requests == []
    assert [e.status for e in second.articles] == ["skipped", "skipped"]
    assert second.counts["skipped"] == 2 and second.counts["ok"] == 0
    assert second.exit_code == 0
    assert article_bytes(out) == before
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    assert report["counts"]["skipped"] == 2


def test_a_renamed_file_or_a_shifted_jsonl_line_is_skipped_as_the_article_it_was(tmp_path: Path) -> None:
    """An id falls back to the file name (or name and line) when the title gives no slug, as a
    Chinese title does: renaming the file, or adding a line above, must not pay for the article
    again nor publish it twice."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(ARTICLES / "zh-rrr-cut.txt", inputs / "zh-rrr-cut.txt")
    shutil.copy(ARTICLES / "wire-briefs.jsonl", inputs / "wire-briefs.jsonl")
    first = run_pipeline([inputs], out)
    assert first.counts["ok"] == sum(first.counts.values()) >= 3
    folders = sorted(p.name for p in (out / "articles").iterdir())

    (inputs / "zh-rrr-cut.txt").rename(inputs / "央行降准.txt")
    lines = (inputs / "wire-briefs.jsonl").read_text(encoding="utf-8")
    (inputs / "wire-briefs.jsonl").write_text("\n" + lines, encoding="utf-8")  # every line moves down one
    model = ScriptedModel(must_not_be_called)
    second = run_pipeline([inputs], out, model)
    assert model.requests == []
    assert [e.status for e in second.articles] == ["skipped"] * len(first.articles)
    assert sorted(e.id for e in second.articles) == folders, "reported under the ids their outputs have"
    assert any(
        note.startswith("outputs exist") and ", as " in note for e in second.articles for note in e.notes
    )
    assert sorted(p.name for p in (out / "articles").iterdir()) == folders, "nothing published twice"

    odd = out / "articles" / "Copied By Hand"  # a folder no run made: its name is no article id
    shutil.copytree(out / "articles" / folders[0], odd)
    shutil.rmtree(out / "articles" / folders[0])
    third = run_pipeline([inputs], out)  # the odd folder is passed over, not taken as an article's
    assert sorted(e.status for e in third.articles) == ["ok"] + ["skipped"] * (len(folders) - 1)


def test_force_redoes_every_article(tmp_path: Path) -> None:
    inputs, out = small_inputs(tmp_path / "in"), tmp_path / "out"
    run_pipeline(inputs, out)
    model = CountingModel()
    report = run_pipeline(inputs, out, model, force=True)
    assert [e.status for e in report.articles] == ["ok", "ok"]
    assert sorted(model.calls) == sorted(f"{e.id}/{c}-0.json" for e in report.articles for c in ("en", "zh"))


@pytest.mark.parametrize("change", ["remove-html", "corrupt-json", "other-model"])
def test_incomplete_or_different_outputs_are_redone(tmp_path: Path, change: str) -> None:
    inputs, out = small_inputs(tmp_path / "in"), tmp_path / "out"
    first = run_pipeline(inputs, out)
    folder = out / "articles" / str(first.articles[0].id)
    settings = Settings()
    if change == "remove-html":
        (folder / "article.html").unlink()
    elif change == "corrupt-json":
        (folder / "analysis.json").write_text("{", encoding="utf-8")
    else:
        settings = Settings(model="another-model")
    model = CountingModel()
    report = run_pipeline(inputs, out, model, settings=settings)
    statuses = {e.id: e.status for e in report.articles}
    redone = {first.articles[0].id} if change != "other-model" else set(statuses)
    assert {i for i, s in statuses.items() if s == "ok"} == redone
    assert len(model.calls) == 2 * len(redone)
    assert sorted(p.name for p in folder.iterdir()) == sorted(ARTICLE_FILES)


def test_identical_inputs_in_one_run_are_processed_once(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.txt", "b.txt"):
        shutil.copyfile(ARTICLES / "energy-iron-air-storage.txt", inputs / name)
    model = CountingModel()
    report = run_pipeline([inputs], tmp_path / "out", model)
    assert report.counts["ok"] == 1 and report.counts["duplicate"] == 1
    by_status = {e.status: e for e in report.articles}
    assert Path(by_status["ok"].source).name == "a.txt"
    assert Path(by_status["duplicate"].source).name == "b.txt"
    assert by_status["duplicate"].duplicate_of == by_status["ok"].source
    assert len(model.calls) == 2
    assert len(list((tmp_path / "out" / "articles").iterdir())) == 1
    data = json.loads((tmp_path / "out" / "run-report.json").read_text(encoding="utf-8"))
    dup = next(e for e in data["articles"] if e["status"] == "duplicate")
    assert dup["duplicate_of"] == by_status["ok"].source
