"""The index page and the Atom feed of the output folder, rebuilt (atomically) at the end of a run.

Memory stays flat in the number of articles: each article's two entries (its block on the index
page and its feed entry) are rendered once and kept, with the dates that order them, in a
private temporary SQLite database (on disk, deleted when closed); the pages are streamed from it
in their order, and SQLite sorts on disk when it must. A run renders the entries of the articles
it writes as it writes them (see ``publish_article``); at the end only the analyses it did not write
are read.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from markupsafe import Markup

from pipeline.emit.feed import EPOCH, atom_feed_chunks, feed_base, feed_entry_xml, feed_item
from pipeline.emit.output import read_analysis
from pipeline.emit.render import IndexHead, SiteInfo, index_entry_html, index_html_chunks, index_instant
from pipeline.emit.write import atomic_write_chunks
from pipeline.schema import Analysis, Disclaimer

_SCHEMA = """
CREATE TABLE entry (
    path TEXT PRIMARY KEY,      -- the analysis.json the entries were rendered from
    folder TEXT,                -- its folder's name: the order of ties
    seen INTEGER,               -- found in the folder by the latest catalogue
    mtime_ns INTEGER, size INTEGER,  -- its stamp then: a changed file is read again
    page_order REAL,            -- published, else generated (the index page, newest first)
    article_id TEXT,
    feed_order REAL,            -- the same for the feed
    updated REAL,               -- the latest of the dates: which of one article's entries the feed keeps
    tags TEXT,                  -- the English tag labels, one per line
    disclaimer_en TEXT, disclaimer_zh TEXT,
    index_entry TEXT, feed_entry TEXT
);
"""


class IndexSpool:
    """Rendered entries by analysis.json path, on disk. Safe to add to from several threads."""

    def __init__(self, site: SiteInfo) -> None:
        self.site = site
        self._base = feed_base(site.url)
        self._lock = threading.Lock()
        with _as_os_error():
            self._db = sqlite3.connect("", check_same_thread=False)  # "": private, on disk, gone when closed
            try:
                self._db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + _SCHEMA)
            except BaseException:
                self._db.close()
                raise

    def __enter__(self) -> IndexSpool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def add(self, path: Path, analysis: Analysis, rendered: tuple[str, str] | None = None) -> None:
        """Keep the entries of `analysis`, read from or written to `path`: `rendered` (index entry,
        feed entry) when they were rendered already, as the article was written."""
        if rendered is None:
            rendered = str(index_entry_html(analysis)), feed_entry_xml(analysis, self.site, self._base)
        index_entry, feed_entry = rendered
        placed = feed_item(analysis)
        row = (
            str(path), path.parent.name, 1, *_stamp(path), _seconds(index_instant(analysis)),
            placed.article_id, _seconds(placed.sort_key), _seconds(placed.updated),
            "\n".join(t.en for t in analysis.tags),
            analysis.disclaimer.en, analysis.disclaimer.zh, index_entry, feed_entry,
        )  # fmt: skip
        with self._locked():
            self._db.execute(
                "INSERT OR REPLACE INTO entry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row
            )

    def start_catalogue(self) -> None:
        with self._locked():
            self._db.execute("UPDATE entry SET seen = 0")

    def still_current(self, path: Path) -> bool:
        """Whether entries were rendered for `path` and the file has not changed since (it is then
        marked as seen by the catalogue)."""
        with self._locked():
            found = self._db.execute(
                "SELECT mtime_ns, size FROM entry WHERE path = ?", (str(path),)
            ).fetchone()
            current = found is not None and tuple(found) == _stamp(path)
            if current:
                self._db.execute("UPDATE entry SET seen = 1 WHERE path = ?", (str(path),))
        return current

    def end_catalogue(self) -> None:
        """Drop the entries of files the catalogue did not find (removed, or no longer readable)."""
        with self._locked():
            self._db.execute("DELETE FROM entry WHERE seen = 0")

    def head(self) -> IndexHead:
        with self._locked():
            count = self._db.execute("SELECT count(*) FROM entry").fetchone()[0]
            tags: set[str] = set()
            for (lines,) in self._db.execute("SELECT DISTINCT tags FROM entry"):
                tags.update(t for t in lines.split("\n") if t)
            first = self._db.execute("SELECT disclaimer_en, disclaimer_zh FROM entry ORDER BY folder LIMIT 1")
            row = first.fetchone()
        disclaimer = Disclaimer(en=row[0], zh=row[1]) if row else None
        return IndexHead(count, sorted(tags), disclaimer)

    def newest_updated(self) -> datetime:
        with self._locked():
            (latest,) = self._db.execute("SELECT max(updated) FROM entry").fetchone()
        return EPOCH if latest is None else datetime.fromtimestamp(latest, UTC)

    def page_entries(self) -> Iterator[str]:
        """Index entries, newest first; ties in folder order."""
        yield from self._column("SELECT index_entry FROM entry ORDER BY page_order DESC, folder")

    def feed_entries(self) -> Iterator[str]:
        """Feed entries, one per article id (its latest generation), newest first, ties by id."""
        yield from self._column(
            "SELECT feed_entry FROM (SELECT feed_entry, feed_order, article_id, row_number() OVER ("
            "  PARTITION BY article_id ORDER BY updated DESC, folder DESC) AS rank FROM entry)"
            " WHERE rank = 1 ORDER BY feed_order DESC, article_id"
        )

    def index_page(self) -> Iterator[str]:
        """index.html, piece by piece."""
        entries = (Markup(entry) for entry in self.page_entries())  # rendered by us: escaped
        return index_html_chunks(entries, self.head(), self.site)

    def atom_feed(self) -> Iterator[str]:
        """feed.xml, piece by piece."""
        return atom_feed_chunks(self.feed_entries(), self.newest_updated(), self.site, self._base)

    def _column(self, query: str) -> Iterator[str]:
        cursor = self._db.cursor()  # rows are fetched as the page is written, not all at once
        try:
            with _as_os_error():
                for (value,) in cursor.execute(query):
                    yield value
        finally:
            cursor.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, _as_os_error():
            yield


@contextmanager
def _as_os_error() -> Iterator[None]:
    """SQLite's errors as the OSError they are (a full or unwritable temporary folder), so that the
    runner reports them as it reports any other write failure."""
    try:
        yield
    except sqlite3.Error as exc:
        where = "SQLite keeps it in $SQLITE_TMPDIR, else $TMPDIR, else /var/tmp or /tmp"
        raise OSError(f"the index's temporary database failed: {exc} ({where})") from exc


def _stamp(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except OSError:
        return (-1, -1)
    return info.st_mtime_ns, info.st_size


def _seconds(moment: datetime) -> float:
    return (moment - EPOCH).total_seconds()


def write_index(out: Path, site: SiteInfo, spool: IndexSpool | None = None) -> Path:
    """Rebuild index.html and feed.xml from every analysis in the folder (each atomically).

    `spool` holds the entries rendered while this run wrote its articles; the others are read now.
    """
    if spool is None:
        with IndexSpool(site) as fresh:
            return write_index(out, site, fresh)
    _catalogue(out, spool)
    path = out / "index.html"
    atomic_write_chunks(path, spool.index_page())
    atomic_write_chunks(out / "feed.xml", spool.atom_feed())
    return path


def render_index_html(analyses: Iterable[Analysis], site: SiteInfo | None = None) -> str:
    """The index page of `analyses`, newest first (ties keep their order)."""
    with _spool_of(analyses, site or SiteInfo()) as spool:
        return "".join(spool.index_page())


def render_atom_feed(analyses: Iterable[Analysis], site: SiteInfo, base_url: str | None = None) -> str:
    """The Atom feed of `analyses`, newest first, one entry per article (the latest generation);
    entry links are relative unless `base_url` is given. Raises ValueError when `base_url` is not
    an absolute http(s) URL."""
    with _spool_of(analyses, replace(site, url=base_url)) as spool:
        return "".join(spool.atom_feed())


def _spool_of(analyses: Iterable[Analysis], site: SiteInfo) -> IndexSpool:
    """A spool of `analyses`, ordered as given (they stand for folders in that order)."""
    spool = IndexSpool(site)
    try:
        for i, analysis in enumerate(analyses):
            spool.add(Path(f"{i:09d}") / "analysis.json", analysis)
    except BaseException:
        spool.close()
        raise
    return spool


def _catalogue(out: Path, spool: IndexSpool) -> None:
    """Bring `spool` up to date with the folder (every ``articles/*/analysis.json``, as a glob
    finds them, listed as they come): read the analyses it lacks or that changed, and drop the
    entries of files that are gone or no longer readable."""
    spool.start_catalogue()
    for path in _analysis_files(out / "articles"):
        if not spool.still_current(path):
            analysis = read_analysis(path)
            if analysis is not None:
                spool.add(path, analysis)
    spool.end_catalogue()


def _analysis_files(articles: Path) -> Iterator[Path]:
    try:
        folders = os.scandir(articles)
    except OSError:  # no articles yet
        return
    with folders:
        for folder in folders:
            path = Path(folder.path) / "analysis.json"
            if not folder.name.startswith(".") and folder.is_dir() and path.is_file():
                yield path
