"""The pages as a real browser renders them: headless Chromium driven over the DevTools Protocol.

The fixtures are rendered in replay into a temporary folder, served over http://127.0.0.1, and
loaded in Chromium: the text the browser shows, the key-data tables, the Chinese markup and fonts,
console errors and exceptions, the index's tag filter and sort, and full-page screenshots (written to
$NEWSDESK_SCREENSHOTS when set, else to a temporary folder).

Needs the Debian package `chromium` (/usr/bin/chromium, or $NEWSDESK_CHROMIUM); without it the tests
are skipped, except under CI (the CI environment variable set), where test_chromium_is_available fails.
Run them alone with `pytest -m browser`, or leave them out with `pytest -m "not browser"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.console import PlainProgress
from pipeline.emit.index import render_index_html
from pipeline.emit.output import iter_analyses
from pipeline.model.replay import ReplayModel
from pipeline.prompts import PromptBook
from pipeline.runner import Runner, RunOptions
from pipeline.schema import Analysis, Tag
from tests.cdp import CDP, Tab, chromium
from tests.conftest import ARTICLES, RECORDINGS

pytestmark = pytest.mark.browser

MIN_PNG_BYTES = 20_000
SECTION_LABELS = [
    "TL;DR",
    "Key Data",
    "Deep Analysis",
    "Industry Insights",
    "核心数据",
    "深度解读",
    "行业启示",
]
CJK_FONT = ("CJK", "Source Han", "PingFang", "YaHei", "Hiragino", "WenQuanYi", "Droid Sans Fallback")
# The title links of the entries the index shows (hidden ones have no client rects).
VISIBLE_TITLES = """(() => { const titles = new Set(%s);
  return [...document.querySelectorAll('a[href$="article.html"]')]
    .filter(a => a.getClientRects().length > 0 && titles.has(a.innerText.trim()))
    .map(a => a.innerText.trim()); })()"""
# Sets the <select> that offers `value` to it and fires 'change', as a reader's choice would.
CHOOSE = """(() => { const value = %s;
  const select = [...document.querySelectorAll('select')]
    .find(s => [...s.options].some(o => o.value === value));
  select.value = value; select.dispatchEvent(new Event('change', {bubbles: true}));
  return select.value; })()"""
TABLES = """[...document.querySelectorAll('table')].map(t =>
  [t.closest('[lang]').lang, (t.tBodies[0] || t).rows.length, t.getBoundingClientRect().width])"""
HEADINGS = "[...document.querySelectorAll('h1')].map(h => [h.innerText.trim(), h.closest('[lang]').lang])"


def chromium_binary() -> str | None:
    for candidate in (os.environ.get("NEWSDESK_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


MISSING = "headless Chromium not found: install the Debian package `chromium` or set NEWSDESK_CHROMIUM"


def test_chromium_is_available() -> None:
    if chromium_binary() is None:
        if os.environ.get("CI"):
            pytest.fail(f"{MISSING} (required under CI)")
        pytest.skip(MISSING)


# --- fixtures: the rendered site, a server, the browser ------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Analysis]]:
    out = tmp_path_factory.mktemp("site")
    settings = Settings()
    runner = Runner(settings, ReplayModel(RECORDINGS), PromptBook(settings), PlainProgress(io.StringIO()))
    report = asyncio.run(runner.run([ARTICLES], RunOptions(out=out, mode="replay")))
    analyses = {a.article.id: a for a in iter_analyses(out)}
    assert analyses and len(analyses) == len(report.articles), "every fixture article is rendered"
    return out, analyses


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves the output folder; /favicon.ico (not part of the output) is an empty 204."""

    def do_GET(self) -> None:
        if self.path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server(site: tuple[Path, dict[str, Analysis]]) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(site[0]))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CDP]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip(MISSING)
    with chromium(binary, tmp_path_factory.mktemp("chromium") / "profile") as url:
        cdp = CDP(url)
        try:
            yield cdp
        finally:
            with contextlib.suppress(OSError, TimeoutError):  # else the context manager stops it
                cdp.call("Browser.close")
            cdp.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("NEWSDESK_SCREENSHOTS")
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def tab(browser: CDP) -> Iterator[Tab]:
    page = Tab(browser)
    try:
        yield page
    finally:
        page.close()


def first_article(analyses: dict[str, Analysis], language: str) -> Analysis:
    return next(a for _, a in sorted(analyses.items()) if a.article.language == language)


def flat(text: str) -> str:
    return " ".join(text.split())


def save_screenshot(tab: Tab, shots: Path, name: str) -> None:
    size = tab.screenshot(shots / name)
    assert size > MIN_PNG_BYTES, f"{name} is only {size} bytes"


# --- the article pages ---------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "zh"])
def test_article_page_as_rendered(
    site: tuple[Path, dict[str, Analysis]], server: str, tab: Tab, shots: Path, language: str
) -> None:
    a = first_article(site[1], language)
    tab.goto(f"{server}articles/{a.article.id}/article.html")
    shown = flat(tab.evaluate("document.body.innerText"))
    for expected in [a.en.title, a.zh.title, *SECTION_LABELS, a.disclaimer.en, a.disclaimer.zh]:
        assert flat(expected) in shown, f"the page does not show {expected!r}"
    assert [flat(a.en.title), "en"] in tab.evaluate(HEADINGS)
    assert [flat(a.zh.title), "zh-Hans"] in tab.evaluate(HEADINGS)
    tables = tab.evaluate(TABLES)
    assert [(lang, rows) for lang, rows, _ in tables] == [
        ("en", len(a.en.key_data)),
        ("zh-Hans", len(a.zh.key_data)),
    ]
    assert all(width > 0 for _, _, width in tables), "the key-data tables are laid out"
    assert tab.evaluate("document.querySelectorAll('[lang=\"zh-Hans\"]').length") > 0
    assert tab.problems() == [], "no console error and no exception"
    save_screenshot(tab, shots, f"article-{language}.png")


def cjk_fonts_installed() -> bool:
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return False
    listing = subprocess.run([fc_list, ":lang=zh"], capture_output=True, text=True, check=False).stdout
    return bool(listing.strip())


def test_chinese_text_is_drawn_with_a_chinese_font(
    site: tuple[Path, dict[str, Analysis]], server: str, tab: Tab
) -> None:
    if not cjk_fonts_installed():
        pytest.skip("no Chinese font installed (Debian: fonts-noto-cjk)")
    a = first_article(site[1], "zh")
    tab.goto(f"{server}articles/{a.article.id}/article.html")
    for selector in ('h1[lang="zh-Hans"]', 'section[lang="zh-Hans"] td', 'section[lang="zh-Hans"] p'):
        fonts = tab.fonts(selector)
        assert any(name in font for font in fonts for name in CJK_FONT), f"{selector} drawn with {fonts}"


# --- the index -----------------------------------------------------------------------------------


def shared_tag(analyses: dict[str, Analysis]) -> str:
    """The most common tag that some, but not all, articles carry."""
    counts = Counter(tag.en for a in analyses.values() for tag in a.tags)
    return min((t for t, n in counts.items() if 1 < n < len(analyses)), key=lambda t: (-counts[t], t))


def test_index_filters_by_tag_and_sorts_by_hot(
    site: tuple[Path, dict[str, Analysis]], server: str, tab: Tab, shots: Path
) -> None:
    analyses = site[1]
    titles = {a.en.title: a for a in analyses.values()}
    visible = VISIBLE_TITLES % json.dumps(sorted(titles))
    tab.goto(f"{server}index.html")
    shown = flat(tab.evaluate("document.body.innerText"))
    assert all(flat(a.en.title) in shown and flat(a.zh.title) in shown for a in analyses.values())
    newest_first = tab.evaluate(visible)
    assert sorted(newest_first) == sorted(titles), "every article is listed once"
    save_screenshot(tab, shots, "index.png")

    tag = shared_tag(analyses)
    assert tab.evaluate(CHOOSE % json.dumps(tag)) == tag
    tagged = tab.evaluate(visible)
    assert sorted(tagged) == sorted(a.en.title for a in analyses.values() if tag in [t.en for t in a.tags])
    assert tab.evaluate(CHOOSE % json.dumps("")) == ""
    assert tab.evaluate(visible) == newest_first, "clearing the filter shows every article again"

    assert tab.evaluate(CHOOSE % json.dumps("hot")) == "hot"
    by_hot = tab.evaluate(visible)
    hot = [titles[title].scores.hot for title in by_hot]
    assert sorted(by_hot) == sorted(newest_first) and by_hot != newest_first, "sorting reorders the entries"
    assert hot == sorted(hot, reverse=True), "hottest first"
    assert tab.problems() == [], "no console error and no exception"


def test_the_tag_filter_keeps_an_article_whose_tag_has_a_separator_or_a_quote(
    site: tuple[Path, dict[str, Analysis]], server: str, tab: Tab
) -> None:
    """Tags are listed in the entry as JSON, so no character of a label can split it."""
    odd = ["Tag|pipe", 'Say "hi" & <b>', "a,b"]
    first, second = list(site[1].values())[:2]
    tagged = first.model_copy(update={"tags": [Tag(en=label, zh="标签") for label in odd]})
    page = site[0] / "odd-tags.html"
    page.write_text(render_index_html([tagged, second]), encoding="utf-8")
    try:
        tab.goto(f"{server}odd-tags.html")
        visible = VISIBLE_TITLES % json.dumps([first.en.title, second.en.title])
        for label in odd:
            assert tab.evaluate(CHOOSE % json.dumps(label)) == label
            assert tab.evaluate(visible) == [first.en.title], label
        assert tab.problems() == [], "no console error and no exception"
    finally:
        page.unlink()
