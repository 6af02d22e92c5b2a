"""The thin step that writes rendered outputs into the output folder (atomically)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from pipeline.emit.feed import EPOCH, FeedItem, atom_feed_chunks, feed_item, feed_order
from pipeline.emit.render import (
    IndexHead,
    SiteInfo,
    index_html_chunks,
    index_instant,
    render_analysis_json,
    render_article_html,
    render_article_markdown,
)
from pipeline.emit.write import atomic_write_chunks, atomic_write_text
from pipeline.schema import Analysis

ARTICLE_FILES = ("article.html", "article.md", "analysis.json")


_SAFE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,119}")


def article_dir(out: Path, article_id: str) -> Path:
    """The folder of one article; an id that is not a plain slug never becomes a path."""
    if not _SAFE_ID.fullmatch(article_id):
        raise ValueError(f"unsafe article id {article_id!r}")
    return out / "articles" / article_id


def write_article(out: Path, analysis: Analysis, site: SiteInfo) -> list[str]:
    """Write the three files of one article; analysis.json last, so it marks a complete set."""
    folder = article_dir(out, analysis.article.id)
    atomic_write_text(folder / "article.html", render_article_html(analysis, site))
    atomic_write_text(folder / "article.md", render_article_markdown(analysis))
    atomic_write_text(folder / "analysis.json", render_analysis_json(analysis))
    return [str(folder / name) for name in ARTICLE_FILES]


def read_analysis(path: Path) -> Analysis | None:
    try:
        return Analysis.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, json.JSONDecodeError):
        return None


def iter_analyses(out: Path) -> Iterator[Analysis]:
    """Every readable analysis in the output folder, one at a time (memory stays flat)."""
    for path in _analysis_paths(out):
        analysis = read_analysis(path)
        if analysis is not None:
            yield analysis


def _analysis_paths(out: Path) -> list[Path]:
    return sorted((out / "articles").glob("*/analysis.json"))


@dataclass(frozen=True)
class _Listed:
    """What the first pass keeps of one article: enough to place it, nothing to render."""

    path: Path
    when: datetime  # the index page's order
    feed: FeedItem


@dataclass
class _Catalogue:
    listed: list[_Listed]
    head: IndexHead


def _catalogue(out: Path) -> _Catalogue:
    listed: list[_Listed] = []
    tags: set[str] = set()
    disclaimer = None
    for path in _analysis_paths(out):
        analysis = read_analysis(path)
        if analysis is None:
            continue
        listed.append(_Listed(path, index_instant(analysis), feed_item(analysis)))
        tags.update(tag.en for tag in analysis.tags)
        disclaimer = disclaimer or analysis.disclaimer
    return _Catalogue(listed, IndexHead(len(listed), sorted(tags), disclaimer))


def _reread(listed: Iterable[_Listed]) -> Iterator[Analysis]:
    for item in listed:
        analysis = read_analysis(item.path)
        if analysis is not None:  # removed or spoiled since the first pass: left out
            yield analysis


def write_index(out: Path, site: SiteInfo) -> Path:
    """Rebuild the index page and the Atom feed from every analysis in the folder (atomically).

    Two passes keep memory flat in the number of articles: the first keeps only each article's
    place (path and dates), the second reads the analyses again in page order and streams them out.
    """
    catalogue = _catalogue(out)
    by_date = sorted(catalogue.listed, key=lambda item: item.when, reverse=True)  # ties: by folder
    path = out / "index.html"
    atomic_write_chunks(path, index_html_chunks(_reread(by_date), catalogue.head, site))
    in_feed = feed_order(catalogue.listed, lambda item: item.feed)
    updated = max((item.feed.updated for item in in_feed), default=EPOCH)
    atomic_write_chunks(out / "feed.xml", atom_feed_chunks(_reread(in_feed), updated, site, site.url))
    return path
