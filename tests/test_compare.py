"""`newsdesk diff`: what changed between two runs, section by section and language by language."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pipeline.compare import (
    ItemChange,
    RunDiff,
    ScoreChange,
    Segment,
    diff_runs,
    inline_diff,
    render_diff_html,
    render_diff_text,
    write_diff_html,
)
from pipeline.config import Settings
from pipeline.console import PlainProgress
from pipeline.errors import ConfigError
from pipeline.model.replay import ReplayModel
from pipeline.prompts import PromptBook
from pipeline.runner import Runner, RunOptions
from pipeline.schema import Tag
from tests.conftest import ARTICLES, RECORDINGS

DUKE = "duke-energy-orders-8-5-gwh-of-iron-air-batteries-in-largest-7f7822e172"
RRR = "zh-rrr-cut-c355db2d2c"
INPUTS = ("energy-iron-air-storage.txt", "zh-rrr-cut.txt")
SCRIPT = "<script>alert(1)</script>"
NEW_TAG = {"en": "Liquidity", "zh": "流动性"}
ZH_INSERT = "此外，"

Document = dict[str, Any]


def run_pipeline(out: Path) -> None:
    settings = Settings()
    runner = Runner(settings, ReplayModel(RECORDINGS), PromptBook(settings), PlainProgress(io.StringIO()))
    report = asyncio.run(runner.run([ARTICLES / name for name in INPUTS], RunOptions(out=out, mode="replay")))
    assert report.counts["ok"] == len(INPUTS), report.model_dump_json(indent=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    a, b = tmp_path_factory.mktemp("run-a"), tmp_path_factory.mktemp("run-b")
    run_pipeline(a)
    run_pipeline(b)
    return a, b


@pytest.fixture
def run_b(runs: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of run B, for a test to edit."""
    return Path(shutil.copytree(runs[1], tmp_path / "b"))


def analysis_path(out: Path, article_id: str) -> Path:
    return out / "articles" / article_id / "analysis.json"


def read(out: Path, article_id: str) -> Document:
    document: Document = json.loads(analysis_path(out, article_id).read_text(encoding="utf-8"))
    return document


def edit(out: Path, article_id: str, change: Callable[[Document], None]) -> None:
    document = read(out, article_id)
    change(document)
    analysis_path(out, article_id).write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


def five_edits(document: Document) -> None:
    """A changed TL;DR bullet, a removed insight, an added tag, a changed score, a changed zh paragraph."""
    document["en"]["tldr"][1] = document["en"]["tldr"][1].replace("15 billion", "18 billion")
    del document["en"]["insights"][1]
    document["tags"].append(NEW_TAG)
    document["scores"]["hot"] += 7
    paragraph = document["zh"]["analysis"][0]
    document["zh"]["analysis"][0] = paragraph[:30] + ZH_INSERT + paragraph[30:]


@pytest.fixture
def edited(runs: tuple[Path, Path], run_b: Path) -> tuple[Document, Document, RunDiff]:
    edit(run_b, RRR, five_edits)
    return read(runs[0], RRR), read(run_b, RRR), diff_runs(runs[0], run_b)


def sides(segments: list[Segment]) -> tuple[str, str]:
    old = "".join(s.text for s in segments if s.op != "insert")
    new = "".join(s.text for s in segments if s.op != "delete")
    return old, new


# --- identical runs ---------------------------------------------------------------------------


def test_identical_runs_give_an_empty_diff(runs: tuple[Path, Path]) -> None:
    diff = diff_runs(*runs)
    assert diff.is_empty
    assert diff.articles == [] and diff.only_in_a == [] and diff.only_in_b == []
    assert diff.unchanged == sorted([DUKE, RRR])
    counts = diff.counts()
    assert (counts.compared, counts.changed, counts.added, counts.removed, counts.changed_items) == (
        2,
        0,
        0,
        0,
        0,
    )
    assert "No differences." in render_diff_text(diff)
    assert "No differences." in render_diff_html(diff)


# --- the planted edits ------------------------------------------------------------------------


def test_exactly_the_edits_are_reported(edited: tuple[Document, Document, RunDiff]) -> None:
    old, _, diff = edited
    assert [d.article.id for d in diff.articles] == [RRR]
    assert diff.unchanged == [DUKE]
    article = diff.articles[0]
    assert article.scores == [ScoreChange(name="hot", old=old["scores"]["hot"], new=old["scores"]["hot"] + 7)]
    assert article.tags_added == [Tag(**NEW_TAG)] and article.tags_removed == []
    assert article.notes == []
    assert [(s.lang, s.section) for s in article.sections] == [
        ("en", "tldr"),
        ("en", "insights"),
        ("zh", "analysis"),
    ]
    counts = diff.counts()
    assert (counts.added, counts.removed, counts.changed_items, counts.scores, counts.tags_added) == (
        0,
        1,
        2,
        1,
        1,
    )


def test_changed_bullet_keeps_old_and_new(edited: tuple[Document, Document, RunDiff]) -> None:
    old, new, diff = edited
    article = diff.articles[0]
    tldr = article.section("en", "tldr")
    assert tldr is not None and len(tldr.changes) == 1
    change = tldr.changes[0]
    assert (change.kind, change.label) == ("changed", "#2")
    assert (change.old, change.new) == (old["en"]["tldr"][1], new["en"]["tldr"][1])
    assert change.inline is not None, "a long text carries an inline diff"
    assert [s for s in change.inline if s.op != "equal"] == [
        Segment(op="delete", text="15"),
        Segment(op="insert", text="18"),
    ]


def test_removed_insight_is_reported_removed(edited: tuple[Document, Document, RunDiff]) -> None:
    old, _, diff = edited
    insights = diff.articles[0].section("en", "insights")
    assert insights is not None
    assert insights.changes == [ItemChange(kind="removed", label="#2", old=old["en"]["insights"][1])]


def test_changed_chinese_paragraph_is_diffed_by_character(edited: tuple[Document, Document, RunDiff]) -> None:
    old, new, diff = edited
    analysis = diff.articles[0].section("zh", "analysis")
    assert analysis is not None and len(analysis.changes) == 1
    change = analysis.changes[0]
    assert (change.kind, change.label) == ("changed", "#1")
    assert change.inline is not None
    assert [s for s in change.inline if s.op != "equal"] == [Segment(op="insert", text=ZH_INSERT)]
    assert sides(change.inline) == (old["zh"]["analysis"][0], new["zh"]["analysis"][0])
    assert diff.articles[0].section("en", "analysis") is None, "the English analysis did not change"


def test_text_is_grouped_by_article_language_and_section(edited: tuple[Document, Document, RunDiff]) -> None:
    old, _, diff = edited
    lines = render_diff_text(diff).splitlines()
    assert "items: 0 added, 1 removed, 2 changed; 1 score change(s); tags: 1 added, 0 removed" in lines
    expected = [
        f"== {RRR}: {old['article']['title']}",
        "  scores",
        f"    ~ hot: {old['scores']['hot']} -> {old['scores']['hot'] + 7}",
        "  tags",
        "    + Liquidity / 流动性",
        "  en",
        "    tldr",
        "    insights",
        f"      - #2: {old['en']['insights'][1]}",
        "  zh",
        "    analysis",
    ]
    positions = [lines.index(line) for line in expected]
    assert positions == sorted(positions), "article > language > section, in order"
    tldr_line = lines[lines.index("    tldr") + 1]
    assert tldr_line.startswith("      ~ #2: The cut lowers") and "[-15-]{+18+}" in tldr_line
    zh_line = lines[lines.index("    analysis") + 1]
    assert zh_line.startswith("      ~ #1: ") and f"{{+{ZH_INSERT}+}}" in zh_line
    assert not any(line.strip().startswith(("+ ", "- ", "~ ")) for line in lines if DUKE in line)


# --- matching keyed items ---------------------------------------------------------------------


def test_key_data_rows_and_faq_are_matched_by_key(runs: tuple[Path, Path], run_b: Path) -> None:
    row = {"entity": "State Council", "info": "Approved the reserve requirement cut", "metric": None}

    def change(document: Document) -> None:
        document["en"]["key_data"].insert(0, row)  # every later row moves down one place
        document["en"]["faq"][2]["answer"] = "A different answer."

    edit(run_b, RRR, change)
    old = read(runs[0], RRR)
    article = diff_runs(runs[0], run_b).articles[0]
    key_data, faq = article.section("en", "key_data"), article.section("en", "faq")
    assert key_data is not None and faq is not None
    added = ItemChange(
        kind="added", label="#1", new="State Council | Approved the reserve requirement cut | —"
    )
    assert key_data.changes == [added]
    assert len(faq.changes) == 1
    assert (faq.changes[0].kind, faq.changes[0].label) == ("changed", "#3")
    question = old["en"]["faq"][2]["question"]
    assert faq.changes[0].new == f"Q: {question} A: A different answer."


def test_word_and_character_level_inline_diffs() -> None:
    english = inline_diff(
        "deliveries in the fourth quarter of 2028", "deliveries in the first quarter of 2029", "en"
    )
    assert [s for s in english if s.op != "equal"] == [
        Segment(op="delete", text="fourth"),
        Segment(op="insert", text="first"),
        Segment(op="delete", text="2028"),
        Segment(op="insert", text="2029"),
    ]
    assert [
        s for s in inline_diff("ratio cut by 0.5 point", "ratio cut by 0.25 point", "en") if s.op != "equal"
    ] == [
        Segment(op="delete", text="0.5"),
        Segment(op="insert", text="0.25"),
    ]
    chinese = inline_diff("央行宣布降准0.5个百分点", "央行决定降准0.25个百分点", "zh")
    assert [s for s in chinese if s.op != "equal"] == [
        Segment(op="delete", text="宣布"),
        Segment(op="insert", text="决定"),
        Segment(op="delete", text="0.5"),
        Segment(op="insert", text="0.25"),
    ]


# --- articles in one run only, unreadable files -----------------------------------------------


def test_articles_in_one_run_only(runs: tuple[Path, Path], run_b: Path) -> None:
    shutil.rmtree(run_b / "articles" / DUKE)
    diff = diff_runs(runs[0], run_b)
    assert [r.id for r in diff.only_in_a] == [DUKE] and diff.only_in_b == []
    assert not diff.is_empty and diff.articles == []
    assert f"  - {DUKE}: " in render_diff_text(diff)
    assert [r.id for r in diff_runs(run_b, runs[0]).only_in_b] == [DUKE]


def test_unreadable_analysis_is_listed(runs: tuple[Path, Path], run_b: Path) -> None:
    analysis_path(run_b, DUKE).write_text("{not json", encoding="utf-8")
    diff = diff_runs(runs[0], run_b)
    assert diff.unreadable == [str(analysis_path(run_b, DUKE))]
    assert "Unreadable (1):" in render_diff_text(diff)


def test_a_folder_that_is_not_an_output_folder(tmp_path: Path, runs: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="not a newsdesk output folder"):
        diff_runs(tmp_path, runs[1])


# --- the HTML page ----------------------------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "input", "link"}


class Page(HTMLParser):
    """Each piece of text with the tags around it and the nearest lang attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[tuple[str, list[str], str | None]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        lang = next((attrs["lang"] for _, attrs in reversed(self.stack) if "lang" in attrs), None)
        self.texts.append((data, [tag for tag, _ in self.stack], lang))

    def find(self, text: str, *, exact: bool = True) -> tuple[list[str], str | None]:
        found = [(tags, lang) for data, tags, lang in self.texts if (data == text if exact else text in data)]
        assert len(found) == 1, f"{text!r} found {len(found)} times"
        return found[0]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def test_html_escapes_model_text(runs: tuple[Path, Path], run_b: Path) -> None:
    edit(run_b, RRR, lambda d: d["en"]["tldr"].__setitem__(1, d["en"]["tldr"][1] + " " + SCRIPT))
    html = render_diff_html(diff_runs(runs[0], run_b))
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = parse(html)
    assert "script" not in page.tags
    tags, lang = page.find(SCRIPT, exact=False)
    assert tags[-1] == "ins" and lang == "en"


def test_html_marks_languages_and_changes(edited: tuple[Document, Document, RunDiff]) -> None:
    old, _, diff = edited
    html = render_diff_html(diff)
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    page = parse(html)
    tags, lang = page.find(ZH_INSERT)
    assert tags[-1] == "ins" and lang == "zh-Hans"
    tags, lang = page.find(old["en"]["insights"][1])
    assert tags[-1] == "del" and lang == "en"
    tags, lang = page.find(NEW_TAG["zh"])
    assert "ins" in tags and lang == "zh-Hans"
    _, lang = page.find(old["article"]["title"])
    assert lang == "zh-Hans", "a Chinese article's title is marked Chinese"
    assert page.find("深度解读")[1] == "zh-Hans", "section headings are in the section's language"
    summary = html.index('class="summary"')
    assert summary < html.index("<article"), "the counts come first"
    assert "1 removed, 2 changed" in html[summary : html.index("<article")]


def test_html_is_written_to_a_file(edited: tuple[Document, Document, RunDiff], tmp_path: Path) -> None:
    _, _, diff = edited
    path = tmp_path / "report" / "diff.html"
    write_diff_html(diff, path)
    assert path.read_text(encoding="utf-8") == render_diff_html(diff)
