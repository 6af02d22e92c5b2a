"""A run's article files reach the disk in groups, and only then are their answers let go.

Each article's three files are written without an fsync each (still atomically: a crash or
``kill -9`` leaves the old file or the new one, never a torn one). On the machine we measured,
those three fsyncs took 1.5 to 4 ms of CPU per article, as much as rendering it or more, swinging
with the load of the host's disks. Instead, the files written since the last checkpoint are
flushed to disk together (one syncfs on Linux) once `articles` of them are waiting or the oldest
has waited `seconds`, and at the end of the run; only after that are the articles' journaled
answers dropped. A power cut can tear the files of the articles written since the last
checkpoint; the next run redoes every article whose answers are still journaled from those
answers, without a model call, so a file torn in any way is rewritten (see ``Runner._settled``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.emit.write import flush_to_disk

CHECKPOINT_ARTICLES = 100
CHECKPOINT_SECONDS = 2.0

Flush = Callable[[Iterable[str | Path]], None]


Written = list[tuple[str, list[str]]]  # (article id, its files)


class Checkpoints:
    """Articles written but not yet flushed, and what to do for each once it is (`on_disk`)."""

    def __init__(
        self,
        on_disk: Callable[[str], None],
        *,
        articles: int | None = None,
        seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        flush: Flush | None = None,
    ) -> None:
        self._on_disk = on_disk
        self._articles = CHECKPOINT_ARTICLES if articles is None else articles
        self._seconds = CHECKPOINT_SECONDS if seconds is None else seconds
        self._clock = clock
        self._flush = flush or flush_to_disk
        self._waiting: Written = []
        self._oldest = 0.0  # when the first article now waiting was written
        self._flushing = False  # a checkpoint's flush is under way

    def written(self, article_id: str, paths: list[str]) -> None:
        if not self._waiting:
            self._oldest = self._clock()
        self._waiting.append((article_id, paths))

    def due(self) -> bool:
        if not self._waiting:
            return False
        return len(self._waiting) >= self._articles or self._clock() - self._oldest >= self._seconds

    async def flush_if_due(self) -> None:
        """A checkpoint when one is due and none is under way; the flush runs in a thread while
        the event loop goes on (articles written meanwhile wait for the next checkpoint; on a disk
        that other programs keep busy, a flush can take seconds, and flushes never pile up)."""
        if self._flushing or not self.due():
            return
        oldest, batch = self._oldest, self._take()
        self._flushing = True
        try:
            await asyncio.to_thread(self._flush, _files(batch))
        except BaseException:
            self._put_back(oldest, batch)
            raise
        finally:
            self._flushing = False
        self._done(batch)

    def flush(self) -> None:
        """A checkpoint now, whatever is waiting (the end of a run)."""
        oldest, batch = self._oldest, self._take()
        if not batch:
            return
        try:
            self._flush(_files(batch))
        except BaseException:
            self._put_back(oldest, batch)
            raise
        self._done(batch)

    def _take(self) -> Written:
        batch, self._waiting = self._waiting, []
        return batch

    def _put_back(self, oldest: float, batch: Written) -> None:
        """A flush that failed: its articles are not known to be on disk, they wait for the next."""
        self._waiting[:0] = batch
        self._oldest = oldest

    def _done(self, batch: Written) -> None:
        for article_id, _ in batch:
            self._on_disk(article_id)


def _files(batch: Written) -> list[str]:
    return [path for _, paths in batch for path in paths]
