"""The garbage collector during a run: collected by work done, and left as it was found."""

from __future__ import annotations

import asyncio
import gc
import io
import weakref
from pathlib import Path

from pipeline.collector import collecting_every
from pipeline.config import Settings
from pipeline.console import PlainProgress
from pipeline.model.base import ModelReply, ModelRequest
from pipeline.model.replay import ReplayModel
from pipeline.prompts import PromptBook
from pipeline.runner import Runner, RunOptions
from tests.conftest import FIXTURES


class _Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def _cycle() -> weakref.ref[_Node]:
    return weakref.ref(_Node())


def test_cycles_are_freed_every_so_many_ticks_and_not_in_between() -> None:
    with collecting_every(3) as garbage:
        assert not gc.isenabled()
        made = _cycle()
        allocated = [[] for _ in range(10_000)]  # enough for a dozen automatic collections
        garbage.tick()
        garbage.tick()
        assert made() is not None  # no collection yet
        garbage.tick()
        assert made() is None  # the third tick collected it
        assert len(allocated) == 10_000


def test_objects_made_before_are_frozen_during_the_run_and_the_collector_is_restored() -> None:
    before = _cycle()
    assert gc.isenabled()
    with collecting_every(100):
        assert gc.get_freeze_count() > 0
        left = _cycle()  # never ticked: the end of the run frees it
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert left() is None
    gc.collect()
    assert before() is None  # unfrozen: collected as usual again


def test_a_disabled_collector_stays_disabled_after_a_run() -> None:
    gc.disable()
    try:
        with collecting_every(5):
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


class _Watching(ReplayModel):
    """Replay that notes whether the automatic collector was on at each call."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.collector_on: list[bool] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.collector_on.append(gc.isenabled())
        return await super().complete(request)


def test_a_run_collects_by_articles_done_and_restores_the_collector(tmp_path: Path) -> None:
    settings = Settings()
    model = _Watching(FIXTURES / "recordings")
    runner = Runner(settings, model, PromptBook(settings), PlainProgress(io.StringIO()))
    report = asyncio.run(runner.run([FIXTURES / "articles"], RunOptions(out=tmp_path / "out", mode="replay")))
    assert report.counts["ok"] == 13
    assert len(model.collector_on) == 26 and not any(model.collector_on)
    assert gc.isenabled() and gc.get_freeze_count() == 0
