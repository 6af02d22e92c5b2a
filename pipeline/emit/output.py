"""The thin step that writes rendered outputs into the output folder (atomically)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from pipeline.emit.feed import feed_base, feed_entry_xml
from pipeline.emit.render import (
    SiteInfo,
    index_entry_html,
    render_analysis_json,
    render_article_html,
    render_article_markdown,
)
from pipeline.emit.write import atomic_write_text, remove_temporaries
from pipeline.schema import Analysis

ARTICLE_FILES = ("article.html", "article.md", "analysis.json")


_SAFE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,119}")


def is_article_id(name: str) -> bool:
    """Whether `name` is a plain slug, as every article id is."""
    return _SAFE_ID.fullmatch(name) is not None


def article_dir(out: Path, article_id: str) -> Path:
    """The folder of one article; an id that is not a plain slug never becomes a path."""
    if not is_article_id(article_id):
        raise ValueError(f"unsafe article id {article_id!r}")
    return out / "articles" / article_id


@dataclass(frozen=True)
class WrittenArticle:
    """Where one article's files are, and its entries on the index page and in the feed."""

    outputs: list[str]
    index_entry: str
    feed_entry: str


def publish_article(out: Path, analysis: Analysis, site: SiteInfo, *, durable: bool = True) -> WrittenArticle:
    """Write the three files of one article, analysis.json last, so it marks a complete set; and
    render its index and feed entries while the analysis is at hand (a run does this in its worker
    processes, and the index at the end of the run need not read the analysis again).

    Not `durable`: the files are flushed to disk by the caller (a run does it for many articles at
    once, see ``pipeline.checkpoints``)."""
    folder = article_dir(out, analysis.article.id)
    remove_temporaries(folder, ARTICLE_FILES)  # of a write killed mid-way: the article is redone now
    html, md, json_path = paths = [folder / name for name in ARTICLE_FILES]
    atomic_write_text(html, render_article_html(analysis, site), durable=durable)
    atomic_write_text(md, render_article_markdown(analysis), durable=durable)
    atomic_write_text(json_path, render_analysis_json(analysis), durable=durable)
    outputs = [str(path) for path in paths]
    return WrittenArticle(
        outputs, str(index_entry_html(analysis)), feed_entry_xml(analysis, site, feed_base(site.url))
    )


def write_article(out: Path, analysis: Analysis, site: SiteInfo) -> list[str]:
    """Render and write one article."""
    return publish_article(out, analysis, site).outputs


def pages_whole(folder: Path) -> bool:
    """Whether the article's page and Markdown file end as they are written. A power cut before a
    run flushed them to disk can leave a file empty, cut short or filled with zeros; such a page
    lacks its closing ``</html>``, such a Markdown file its last line's newline. (analysis.json is
    read whole: torn, it does not parse.)"""
    return _ends_with(folder / "article.html", b"</html>", strip=True) and _ends_with(
        folder / "article.md", b"\n"
    )


def _ends_with(path: Path, ending: bytes, *, strip: bool = False) -> bool:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 64))
            tail = handle.read()
    except OSError:  # missing, or a folder in its place
        return False
    return (tail.rstrip() if strip else tail).endswith(ending)


def read_analysis(path: Path) -> Analysis | None:
    try:
        return Analysis.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, json.JSONDecodeError):
        return None


def iter_analyses(out: Path) -> Iterator[Analysis]:
    """Every readable analysis in the output folder, one at a time (memory stays flat)."""
    for path in sorted((out / "articles").glob("*/analysis.json")):
        analysis = read_analysis(path)
        if analysis is not None:
            yield analysis
