"""Synthetic corpora for the benchmarks: the fixture articles copied N times, each copy unique.

Each copy gets a distinct closing line (no figures in it), so it has its own content hash and id,
while the fixture answers stay faithful to it. Replay recordings are copied per id.
"""

from __future__ import annotations

import io
import json
import shutil
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.console import PlainProgress
from pipeline.ingest import load_articles
from pipeline.ingest.article import Article
from pipeline.model.live import LiveModel
from pipeline.prompts import PromptBook
from pipeline.report import RunReport
from pipeline.runner import Runner, RunOptions
from pipeline.testing.server import Reply

ROOT = Path(__file__).resolve().parent.parent
ARTICLES = ROOT / "fixtures" / "articles"
RECORDINGS = ROOT / "fixtures" / "recordings"


def tag(n: int) -> str:
    """A figure-free, unique word for copy n ("ba", "bb", ...)."""
    letters = string.ascii_lowercase
    word = ""
    n += len(letters)
    while n:
        n, r = divmod(n, len(letters))
        word = letters[r] + word
    return word


def fixture_articles() -> list[Article]:
    return [a for a in load_articles([ARTICLES]) if isinstance(a, Article)]


def write_corpus(folder: Path, count: int, recordings: Path | None = None) -> list[Path]:
    """`count` .json articles in `folder` (and their recordings, when asked)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = fixture_articles()
    written = []
    for n in range(count):
        source = base[n % len(base)]
        text = f"{source.text}\n\nArchive reference {tag(n)}."
        path = folder / f"article-{n:05d}.json"
        document = {"title": source.title, "text": text, "source": source.source, "url": source.url,
                    "published_at": source.published_at, "language": source.language}  # fmt: skip
        path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        written.append(path)
    if recordings is not None:
        copy_recordings(folder, recordings, base)
    return written


def copy_recordings(folder: Path, recordings: Path, base: list[Article]) -> None:
    by_title = {a.title: a.id for a in base}
    for article in load_articles([folder]):
        if not isinstance(article, Article):
            continue
        source_id = by_title[article.title]
        target = recordings / article.id
        target.mkdir(parents=True, exist_ok=True)
        for call in ("en", "zh"):
            shutil.copyfile(RECORDINGS / source_id / f"{call}-0.json", target / f"{call}-0.json")


def fixture_script() -> Callable[[dict[str, Any]], Reply]:
    """A loopback-server script answering any corpus article with its fixture's recorded answer."""
    answers: dict[tuple[str, str], str] = {}
    for article in fixture_articles():
        for call in ("en", "zh"):
            document = json.loads((RECORDINGS / article.id / f"{call}-0.json").read_text(encoding="utf-8"))
            answers[(article.title, call)] = document["response"]["choices"][0]["message"]["content"]

    def answer(body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        title = messages[1]["content"].split("\nTitle: ", 1)[1].split("\n", 1)[0]
        call = "zh" if 'single key "zh"' in messages[2]["content"] else "en"
        return Reply.chat(body, answers[(title, call)], prompt_tokens=3000, completion_tokens=2000)

    return answer


async def timed_live_run(base_url: str, corpus: Path, out: Path, **settings: Any) -> tuple[float, RunReport]:
    """Run the live path (openai SDK over HTTP) over `corpus`; the wall time and the report."""
    config = Settings(base_url=base_url, **settings)
    model = LiveModel(config, "bench-key")
    runner = Runner(config, model, PromptBook(config), PlainProgress(io.StringIO()))
    started = time.perf_counter()
    try:
        report = await runner.run([corpus], RunOptions(out=out))
    finally:
        await model.aclose()
    return time.perf_counter() - started, report
