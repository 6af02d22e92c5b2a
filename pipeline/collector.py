"""The cyclic garbage collector during a run: by count of work done, not of allocations.

CPython's collector runs after every 700 net allocations of container objects and traverses
every young one still alive, and every tenth time the older ones too. A run keeps thousands of
objects alive per article in flight (parsed recordings, answers, their figures, the rendered
pages), so it traversed the same live objects over and over: a replay run of 1,000 articles took
8% more CPU and time with it than with this. During a run the objects made before it (modules,
templates, tables) are frozen, never to be traversed again, and a full collection runs once every
so many articles or jobs instead. Reference cycles (asyncio's tasks and exceptions make some) are
still freed, so memory stays flat.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

ARTICLES_PER_COLLECTION = 100  # a full collection takes a few milliseconds: under 0.1 ms an article


class Collector:
    """Counts work done and collects garbage every `every` units of it."""

    def __init__(self, every: int) -> None:
        self.every = every
        self._done = 0

    def tick(self) -> None:
        self._done += 1
        if self._done % self.every == 0:
            gc.collect()


@contextmanager
def collecting_every(every: int = ARTICLES_PER_COLLECTION) -> Iterator[Collector]:
    """Collect garbage only when the returned Collector's `tick` has been called `every` times,
    with everything made so far frozen; the collector is as it was afterwards."""
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        yield Collector(every)
    finally:
        gc.collect()  # what the run left in cycles, now rather than at some later allocation
        gc.unfreeze()
        if enabled:
            gc.enable()


def collect_by_work(every: int) -> Collector:
    """For a worker process, which keeps this until it exits: as `collecting_every`, for good."""
    gc.freeze()
    gc.disable()
    return Collector(every)
