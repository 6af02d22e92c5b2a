"""The index page and the Atom feed of the output folder, rebuilt (atomically) at the end of a run.

Memory stays flat in the number of articles: each article's two entries (its block on the index
page and its feed entry) are rendered once and spooled to a temporary file, memory keeps only its
dates and the entries' offsets, and the pages are streamed from the spool in their order. A run
renders the entries of the articles it writes as it writes them (see ``write_article``); at the end
only the analyses it did not write are read.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from markupsafe import Markup

from pipeline.emit.feed import (
    EPOCH,
    FeedItem,
    atom_feed_chunks,
    feed_base,
    feed_entry_xml,
    feed_item,
    feed_order,
)
from pipeline.emit.output import read_analysis
from pipeline.emit.render import IndexHead, SiteInfo, index_entry_html, index_html_chunks, index_instant
from pipeline.emit.write import atomic_write_chunks
from pipeline.schema import Analysis, Disclaimer

Stamp = tuple[int, int]  # a file's (mtime_ns, size): whether it changed since its entries were rendered


@dataclass(frozen=True)
class _Listed:
    """What memory keeps of one article: its place, its tags, where its entries lie in the spool."""

    stamp: Stamp
    when: datetime  # the index page's order
    feed: FeedItem
    tags: tuple[str, ...]
    disclaimer: Disclaimer  # shared among the articles that have the same one
    index_entry: tuple[int, int]  # (offset, length) in the spool
    feed_entry: tuple[int, int]


class IndexSpool:
    """Rendered entries on disk, by analysis.json path. Safe to add to from several threads."""

    def __init__(self, out: Path, site: SiteInfo) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.site = site
        self._base = feed_base(site.url)
        self._file = tempfile.TemporaryFile(dir=out)  # noqa: SIM115 -- closed by close(); unnamed on Linux
        self._lock = threading.Lock()
        self._listed: dict[Path, _Listed] = {}
        self._disclaimers: dict[tuple[str, str], Disclaimer] = {}

    def __enter__(self) -> IndexSpool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def add(self, path: Path, analysis: Analysis) -> _Listed:
        """Render the entries of `analysis`, read from or written to `path`."""
        index_entry = index_entry_html(analysis)
        feed_entry = feed_entry_xml(analysis, self.site, self._base)
        tags = tuple(t.en for t in analysis.tags)
        with self._lock:
            key = (analysis.disclaimer.en, analysis.disclaimer.zh)
            disclaimer = self._disclaimers.setdefault(key, analysis.disclaimer)
            listed = _Listed(_stamp(path), index_instant(analysis), feed_item(analysis), tags, disclaimer,
                             self._put(index_entry), self._put(feed_entry))  # fmt: skip
            self._listed[path] = listed
        return listed

    def current(self, path: Path) -> _Listed | None:
        """The entries rendered for `path`, if the file has not changed since."""
        listed = self._listed.get(path)
        return listed if listed is not None and listed.stamp == _stamp(path) else None

    def get(self, where: tuple[int, int]) -> str:
        with self._lock:
            self._file.seek(where[0])
            return self._file.read(where[1]).decode("utf-8")

    def _put(self, text: str) -> tuple[int, int]:
        data = text.encode("utf-8")
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(data)
        return offset, len(data)


def _stamp(path: Path) -> Stamp:
    try:
        info = path.stat()
    except OSError:
        return (-1, -1)
    return info.st_mtime_ns, info.st_size


def write_index(out: Path, site: SiteInfo, spool: IndexSpool | None = None) -> Path:
    """Rebuild index.html and feed.xml from every analysis in the folder (each atomically).

    `spool` holds the entries rendered while this run wrote its articles; the others are read now.
    """
    if spool is None:
        with IndexSpool(out, site) as fresh:
            return write_index(out, site, fresh)
    listed = _catalogue(out, spool)
    tags = sorted({tag for item in listed for tag in item.tags})
    head = IndexHead(len(listed), tags, listed[0].disclaimer if listed else None)
    by_date = sorted(listed, key=lambda item: item.when, reverse=True)  # ties: by folder
    path = out / "index.html"
    entries = (Markup(spool.get(item.index_entry)) for item in by_date)  # rendered by us: escaped
    atomic_write_chunks(path, index_html_chunks(entries, head, site))
    in_feed = feed_order(listed, lambda item: item.feed)
    updated = max((item.feed.updated for item in in_feed), default=EPOCH)
    feed = (spool.get(item.feed_entry) for item in in_feed)
    atomic_write_chunks(out / "feed.xml", atom_feed_chunks(feed, updated, site, feed_base(site.url)))
    return path


def _catalogue(out: Path, spool: IndexSpool) -> list[_Listed]:
    """Every readable analysis in the folder, in folder order; only those not in `spool` are read."""
    listed: list[_Listed] = []
    for path in sorted((out / "articles").glob("*/analysis.json")):
        known = spool.current(path)
        if known is None:
            analysis = read_analysis(path)
            if analysis is None:
                continue
            known = spool.add(path, analysis)
        listed.append(known)
    return listed
