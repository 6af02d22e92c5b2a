"""The thin step that writes rendered outputs into the output folder (atomically)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from pipeline.emit.render import (
    SiteInfo,
    render_analysis_json,
    render_article_html,
    render_article_markdown,
)
from pipeline.emit.write import atomic_write_text
from pipeline.schema import Analysis

if TYPE_CHECKING:
    from pipeline.emit.index import IndexSpool

ARTICLE_FILES = ("article.html", "article.md", "analysis.json")


_SAFE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,119}")


def article_dir(out: Path, article_id: str) -> Path:
    """The folder of one article; an id that is not a plain slug never becomes a path."""
    if not _SAFE_ID.fullmatch(article_id):
        raise ValueError(f"unsafe article id {article_id!r}")
    return out / "articles" / article_id


def write_article(
    out: Path, analysis: Analysis, site: SiteInfo, index: IndexSpool | None = None
) -> list[str]:
    """Write the three files of one article; analysis.json last, so it marks a complete set.

    With `index`, the article's index and feed entries are rendered now, while the analysis is at
    hand, so that rebuilding the index at the end of the run need not read it again.
    """
    folder = article_dir(out, analysis.article.id)
    atomic_write_text(folder / "article.html", render_article_html(analysis, site))
    atomic_write_text(folder / "article.md", render_article_markdown(analysis))
    atomic_write_text(folder / "analysis.json", render_analysis_json(analysis))
    if index is not None:
        index.add(folder / "analysis.json", analysis)
    return [str(folder / name) for name in ARTICLE_FILES]


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
