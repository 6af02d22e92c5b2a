"""Security pass (issue 6), item 3: escaping everywhere, through the real `newsdesk render` command.

A saved analysis.json carries hostile model text and article metadata in every field (script
tags, quotes that would break attributes, javascript:/data:/vbscript: URLs, event handlers in
tags, ']]>' and control characters). The article page, the index, the Markdown and the Atom feed
must stay inert: no element or attribute the templates do not write themselves, no unsafe link,
no raw HTML in Markdown, a feed that parses as XML.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import DEFAULT_DISCLAIMER_EN, DEFAULT_DISCLAIMER_ZH, Settings
from pipeline.console import RichProgress, entry_line
from pipeline.emit.feed import xml_text
from pipeline.model.replay import ReplayModel
from pipeline.prompts import PromptBook
from pipeline.report import ArticleEntry
from pipeline.runner import Runner, RunOptions
from tests.conftest import ARTICLES, RECORDINGS

ARTICLE_ID = "duke-energy-orders-8-5-gwh-of-iron-air-batteries-in-largest-7f7822e172"
SCRIPT = "<script>alert(1)</script>"
PAYLOADS = [
    SCRIPT,
    '"><img src=x onerror=alert(1)>',
    "' onmouseover='alert(1)' x='",
    "javascript:alert(1)",
    "]]><x/>",
    "<![CDATA[x]]>",
    "<!-- c --><svg onload=alert(1)>",
    "[link](javascript:alert(1)) <javascript:alert(1)>",
    "\x01\x08\x0b\x1b\x7f",
    "&lt;script&gt;",
    "</textarea></title></style>",
]
HOSTILE = " ".join(PAYLOADS)
SHORT = ['"onmouseover=alert(1)', "<script>x</script>", "javascript:x", "]]>\x01", "x' onfocus='y"]
UNSAFE_URLS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "  javascript:alert(1)",
    "java\tscript:alert(1)",
    "javascript&colon;alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "//evil.example/x",
    'https://ok.example/" onmouseover="alert(1)',
    "https://ok.example/a?b=<script>",
    "file:///etc/passwd",
]
URL_ATTRIBUTES = ("href", "src", "action", "formaction", "poster", "cite", "srcset", "background", "data")


# --- documents ----------------------------------------------------------------------------------------


def recorded_answer(call: str) -> dict[str, Any]:
    document = json.loads((RECORDINGS / ARTICLE_ID / f"{call}-0.json").read_text(encoding="utf-8"))
    answer: dict[str, Any] = json.loads(document["response"]["choices"][0]["message"]["content"])
    return answer


def benign_document() -> dict[str, Any]:
    en, zh = recorded_answer("en"), recorded_answer("zh")
    return {
        "schema_version": 1,
        "article": {"id": ARTICLE_ID, "title": "Duke Energy orders iron-air batteries",
                    "source": "Grid Weekly", "url": "https://grid.example/duke", "published_at": "2026-03-18",
                    "language": "en", "content_sha256": "0" * 64},
        "scores": en["scores"], "tags": en["tags"], "en": en["en"], "zh": zh["zh"],
        "disclaimer": {"en": DEFAULT_DISCLAIMER_EN, "zh": DEFAULT_DISCLAIMER_ZH},
        "generation": {"model": "gpt-4.1-mini", "prompt_version": "abc123",
                       "created_at": "2026-03-19T08:00:00+00:00",
                       "usage": {"prompt_tokens": 10, "cached_tokens": 0, "completion_tokens": 20},
                       "calls": 2, "attempts": 2},
    }  # fmt: skip


def hostile_section(index: int) -> dict[str, Any]:
    def text(limit: int, k: int = 0) -> str:
        return f"{k} {HOSTILE}"[:limit]

    return {
        "title": text(200, index),
        "summary": text(1200, index),
        "tldr": [text(400, k) for k in range(3)],
        "key_data": [
            {"entity": text(100, k), "info": text(400, k), "metric": text(200, k)} for k in range(3)
        ],
        "analysis": [text(3000, k) for k in range(3)],
        "insights": [text(800, k) for k in range(3)],
        "faq": [{"question": text(300, k), "answer": text(1500, k)} for k in range(3)],
    }


def hostile_document(url: str = "javascript:alert(1)") -> dict[str, Any]:
    document = benign_document()
    document["article"].update(title=HOSTILE, source=HOSTILE, url=url,
                               published_at='2026-01-01"><script>alert(1)</script>')  # fmt: skip
    document["en"], document["zh"] = hostile_section(1), hostile_section(2)
    document["tags"] = [{"en": label, "zh": f"标签{label}"[:40]} for label in SHORT]
    document["disclaimer"] = {"en": HOSTILE, "zh": HOSTILE}
    document["generation"].update(
        model=HOSTILE, prompt_version=SCRIPT, created_at='"><script>alert(1)</script>'
    )
    return document


def render(tmp_path: Path, document: dict[str, Any], name: str) -> Path:
    """`newsdesk render` of `document` into a fresh OUT; the folder."""
    source = tmp_path / f"{name}.json"
    source.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / name
    result = CliRunner().invoke(app, ["render", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "articles" / ARTICLE_ID / "article.html").is_file()
    return out


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("benign"), benign_document(), "out")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("hostile"), hostile_document(), "out")


# --- HTML ---------------------------------------------------------------------------------------------


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str]]]] = []
        self.raw_text: dict[str, list[str]] = {"script": [], "style": []}
        self.h1: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, [(k, v or "") for k, v in attrs]))
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        where = self._open[-1] if self._open else ""
        if where in self.raw_text:
            self.raw_text[where].append(data)
        if where == "h1":
            self.h1.append(data)

    @property
    def tags(self) -> set[str]:
        return {tag for tag, _ in self.elements}

    @property
    def attribute_names(self) -> set[str]:
        return {name for _, attrs in self.elements for name, _ in attrs}


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def unsafe_links(page: Page) -> list[tuple[str, str, str]]:
    """Every URL attribute whose value is not an http(s) URL or a plain relative path."""
    found = []
    for tag, attrs in page.elements:
        for name, value in attrs:
            if name not in URL_ATTRIBUTES:
                continue
            compact = re.sub(r"[\x00-\x20\x7f]", "", value).lower()
            scheme = re.match(r"([a-z][a-z0-9+.-]*):", compact)
            if (scheme and scheme.group(1) not in ("http", "https")) or compact.startswith("//"):
                found.append((tag, name, value))
    return found


@pytest.mark.parametrize("page_name", ["article", "index"])
def test_hostile_text_adds_no_element_and_no_attribute(benign: Path, hostile: Path, page_name: str) -> None:
    relative = f"articles/{ARTICLE_ID}/article.html" if page_name == "article" else "index.html"
    clean, dirty = parse(benign / relative), parse(hostile / relative)
    assert dirty.tags <= clean.tags, f"new elements: {dirty.tags - clean.tags}"
    assert dirty.attribute_names <= clean.attribute_names, (
        f"new attributes: {dirty.attribute_names - clean.attribute_names}"
    )
    assert not [n for n in dirty.attribute_names if n.startswith("on")], "no event-handler attribute"
    assert dirty.raw_text["style"] == clean.raw_text["style"], "nothing reaches the stylesheet"
    assert dirty.raw_text["script"] == clean.raw_text["script"], "nothing reaches a script"


def test_the_article_page_has_no_script_element(hostile: Path) -> None:
    page = parse(hostile / "articles" / ARTICLE_ID / "article.html")
    assert "script" not in page.tags
    assert "<script" not in (hostile / "articles" / ARTICLE_ID / "article.html").read_text(encoding="utf-8")


def test_the_index_has_only_its_own_script(hostile: Path) -> None:
    page = parse(hostile / "index.html")
    assert [tag for tag, _ in page.elements].count("script") == 1
    assert "alert" not in "".join(page.raw_text["script"])


@pytest.mark.parametrize("page_name", ["article", "index"])
def test_no_attribute_carries_an_unsafe_url(hostile: Path, page_name: str) -> None:
    relative = f"articles/{ARTICLE_ID}/article.html" if page_name == "article" else "index.html"
    page = parse(hostile / relative)
    assert unsafe_links(page) == []
    for tag, attrs in page.elements:
        if tag == "meta":
            assert ("http-equiv", "refresh") not in [(k.lower(), v.lower()) for k, v in attrs]


def test_hostile_text_is_shown_as_text(hostile: Path) -> None:
    """Escaped, not stripped: the reader sees exactly what the model wrote."""
    page = parse(hostile / "articles" / ARTICLE_ID / "article.html")
    document = hostile_document()
    assert page.h1 == [document["en"]["title"], document["zh"]["title"]]


@pytest.mark.parametrize("url", UNSAFE_URLS)
def test_an_unsafe_source_url_is_never_a_link(tmp_path: Path, url: str) -> None:
    out = render(tmp_path, hostile_document(url), "out")
    page = parse(out / "articles" / ARTICLE_ID / "article.html")
    assert "a" not in page.tags, "only an absolute http(s) URL becomes a link"
    assert unsafe_links(page) == []
    markdown = (out / "articles" / ARTICLE_ID / "article.md").read_text(encoding="utf-8")
    assert "](" not in markdown.replace("\\]\\(", ""), "no Markdown link"
    for link in ET.fromstring((out / "feed.xml").read_text(encoding="utf-8")).iter(
        "{http://www.w3.org/2005/Atom}link"
    ):
        assert link.get("rel") != "via", "no source link in the feed"


def test_a_safe_source_url_is_a_link_with_escaped_attributes(tmp_path: Path) -> None:
    url = "https://grid.example/duke?a=1&b=2"
    out = render(tmp_path, hostile_document(url), "out")
    page = parse(out / "articles" / ARTICLE_ID / "article.html")
    hrefs = [dict(attrs)["href"] for tag, attrs in page.elements if tag == "a"]
    assert hrefs == [url]
    assert 'href="https://grid.example/duke?a=1&amp;b=2"' in (
        out / "articles" / ARTICLE_ID / "article.html"
    ).read_text(encoding="utf-8")


# --- Markdown -----------------------------------------------------------------------------------------


def test_markdown_cannot_smuggle_raw_html_or_links(hostile: Path) -> None:
    markdown = (hostile / "articles" / ARTICLE_ID / "article.md").read_text(encoding="utf-8")
    assert not re.search(r"<\s*[A-Za-z/!?]", markdown), "no raw tag, comment or CDATA"
    assert not re.search(r"(?<!\\)\]\(", markdown), "no link: every ] before ( is escaped"
    assert "\\[link\\]\\(javascript:alert\\(1\\)\\)" in markdown
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in markdown
    assert "&amp;lt;script&amp;gt;" in markdown, "an entity in the text is not decoded into markup"


# --- the Atom feed ------------------------------------------------------------------------------------


ATOM = "{http://www.w3.org/2005/Atom}"


def test_the_feed_parses_and_carries_no_markup_or_unsafe_link(hostile: Path) -> None:
    text = (hostile / "feed.xml").read_text(encoding="utf-8")
    feed = ET.fromstring(text)
    for element in feed.iter():
        local = element.tag.rsplit("}", 1)[-1]
        assert local not in ("script", "img", "svg", "iframe", "x"), local
        for name, value in element.attrib.items():
            assert not name.rsplit("}", 1)[-1].startswith("on"), name
            if name in ("href", "src", "uri"):
                assert re.match(r"(https?://|articles/|index\.html$)", value), value
    [entry] = feed.findall(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}title") == xml_text(hostile_document()["en"]["title"])
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", text), "control characters are removed"
    assert "]]>" not in text.replace("]]&gt;", ""), "']]>' never appears unescaped"


def test_the_feed_carries_hostile_tags_as_attribute_values(hostile: Path) -> None:
    feed = ET.fromstring((hostile / "feed.xml").read_text(encoding="utf-8"))
    terms = [c.get("term") for c in feed.iter(f"{ATOM}category") if c.get("scheme") == "urn:newsdesk:tag"]
    assert terms == [xml_text(label) for label in SHORT]


# --- control characters -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["article.html", "article.md"])
def test_pages_carry_no_control_characters(hostile: Path, name: str) -> None:
    """C0 controls (ESC included) are HTML parse errors and terminal escape sequences in a .md: removed."""
    text = (hostile / "articles" / ARTICLE_ID / name).read_text(encoding="utf-8")
    found = sorted({f"U+{ord(ch):04X}" for ch in re.findall(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text)})
    assert found == [], f"control characters in {name}: {found}"


# --- the terminal --------------------------------------------------------------------------------------

# "a[" is a folder: its file's path reads "a[/b].txt", a closing tag to rich's markup
HOSTILE_NAMES = ("a[/b].txt", "c[blink]d.txt", "e\nf.txt", "g\x1b[2Jh.txt")


def test_a_terminal_run_shows_hostile_file_names_as_plain_text_on_one_line(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "good.txt").write_bytes((ARTICLES / "energy-iron-air-storage.txt").read_bytes())
    (inbox / "a[").mkdir()
    for name in HOSTILE_NAMES:
        (inbox / name).write_bytes(b"\x00\x01 not text")
    stream = io.StringIO()
    progress = RichProgress(Console(file=stream, force_terminal=True, width=250))
    settings = Settings(check_processes=1)
    runner = Runner(settings, ReplayModel(RECORDINGS), PromptBook(settings), progress)
    report = asyncio.run(runner.run([inbox], RunOptions(out=tmp_path / "out", mode="replay")))
    assert (report.counts["ok"], report.counts["failed"]) == (1, 4), "markup in a name never stops the run"
    shown = stream.getvalue()
    for name in ("a[/b].txt", "c[blink]d.txt", "e\\nf.txt", "g[2Jh.txt"):  # as written, one line each
        assert shown.count(name) == 2, f"{name!r}: its failure line and its row in the summary table"
    assert "\x1b[2J" not in shown and "\x1b[5m" not in shown, "no terminal escape from a name"


def test_a_plain_line_keeps_a_hostile_name_on_one_line() -> None:
    entry = ArticleEntry(
        id=None, source="in/e\nf\r.txt\x1b[2J", status="failed", error="binary file, not text"
    )
    assert entry_line(entry) == "failed    in/e\\nf\\r.txt[2J: binary file, not text"


def test_a_terminal_run_sums_up_with_the_articles_that_need_attention_only(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    for article in ARTICLES.iterdir():
        (inbox / article.name).write_bytes(article.read_bytes())
    for number in range(RichProgress.ATTENTION_ROWS + 5):
        (inbox / f"zz-broken-{number:02d}.txt").write_bytes(b"\x00\x01 not text")
    stream = io.StringIO()
    settings = Settings(check_processes=1)
    runner = Runner(
        settings, ReplayModel(RECORDINGS), PromptBook(settings), RichProgress(Console(file=stream, width=250))
    )
    report = asyncio.run(runner.run([inbox], RunOptions(out=tmp_path / "out", mode="replay")))
    assert (report.counts["ok"], report.counts["failed"]) == (13, 35)
    summary = stream.getvalue().split("articles that need attention")[1]
    assert summary.count("zz-broken-") == RichProgress.ATTENTION_ROWS
    assert "... and 5 more: run-report.json in the output folder lists all" in summary
    assert not any(entry.id and entry.id in summary for entry in report.articles if entry.status == "ok")
    assert summary.rstrip().splitlines()[-1].startswith(f"run {report.run_id}: 13 ok, 35 failed")
