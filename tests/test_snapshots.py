"""Snapshots of the published outputs (HTML, Markdown, analysis.json) of three fixture articles,
replayed from their recordings. Volatile values (the generation time) are masked.

To accept an intended change of the output, rewrite the snapshots and review the diff:

    NEWSDESK_UPDATE_SNAPSHOTS=1 python -m pytest -q tests/test_snapshots.py
"""

from __future__ import annotations

import asyncio
import difflib
import io
import json
import os
import re
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.console import PlainProgress
from pipeline.model.replay import ReplayModel
from pipeline.prompts import PromptBook
from pipeline.runner import Runner, RunOptions
from tests.conftest import ARTICLES, RECORDINGS

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
UPDATE = os.environ.get("NEWSDESK_UPDATE_SNAPSHOTS") == "1"
HOW_TO_UPDATE = (
    "If the change is intended, rewrite the snapshots with\n"
    "    NEWSDESK_UPDATE_SNAPSHOTS=1 python -m pytest -q tests/test_snapshots.py\n"
    "and review the diff of tests/snapshots/ before committing."
)
CREATED_AT = "<created_at>"
PROMPT_VERSION = "<prompt_version>"
USAGE = "<usage>"
FILES = {"html": "article.html", "md": "article.md", "json": "analysis.json"}
# One English .txt, one Chinese GBK .txt, and line 2 of the JSON Lines file.
INPUTS = {
    "en-txt": ("energy-iron-air-storage.txt", "energy-iron-air-storage.txt"),
    "zh-gbk-txt": ("zh-rrr-cut.txt", "zh-rrr-cut.txt"),
    "jsonl-line-2": ("wire-briefs.jsonl", "wire-briefs.jsonl:2"),
}


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folder of each snapshot article's outputs, by INPUTS key."""
    out = tmp_path_factory.mktemp("snapshots-run")
    settings = Settings()
    runner = Runner(settings, ReplayModel(RECORDINGS), PromptBook(settings), PlainProgress(io.StringIO()))
    paths = sorted({ARTICLES / name for name, _ in INPUTS.values()})
    report = asyncio.run(runner.run(paths, RunOptions(out=out, mode="replay")))
    folders = {}
    for key, (_, source) in INPUTS.items():
        entry = next(e for e in report.articles if e.source.endswith(source))
        assert entry.status == "ok", entry
        folders[key] = out / "articles" / str(entry.id)
    return folders


def mask(text: str, created_at: str, prompt_version: str) -> str:
    """Replace the volatile values: the generation time (the JSON field and the "Generated" date in
    the page header), and what changes with every edit of prompts/ while the replayed answers, and
    so the page, stay the same: the prompt version (a hash of the prompts) and the token usage
    (estimated from the recorded requests)."""
    escaped = "&lt;created_at&gt;"
    masked = text.replace(f'"created_at": "{created_at}"', f'"created_at": "{CREATED_AT}"')
    masked = masked.replace(
        f'<time datetime="{created_at}">{created_at[:10]}</time>',
        f'<time datetime="{escaped}">{escaped}</time>',
    )
    masked = masked.replace(f'"prompt_version": "{prompt_version}"', f'"prompt_version": "{PROMPT_VERSION}"')
    masked = masked.replace(f"prompt_version={prompt_version}", "prompt_version=&lt;prompt_version&gt;")
    masked = re.sub(r'"usage": \{[^{}]*\}', f'"usage": "{USAGE}"', masked)
    assert created_at not in masked, "every occurrence of the generation time is masked"
    assert prompt_version not in masked, "every occurrence of the prompt version is masked"
    return masked


def check_snapshot(actual: str, path: Path) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8", newline="\n")
        return
    if not path.is_file():
        pytest.fail(f"snapshot {path.name} does not exist.\n{HOW_TO_UPDATE}")
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(),
            actual.splitlines(),
            f"snapshots/{path.name}",
            "current output",
            lineterm="",
        )
        shown = [line[:300] for line in diff][:60]
        pytest.fail(
            f"output differs from snapshot {path.name}:\n" + "\n".join(shown) + f"\n\n{HOW_TO_UPDATE}"
        )


def masked_output(folder: Path, name: str) -> str:
    generation = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))["generation"]
    text = (folder / name).read_text(encoding="utf-8")
    return mask(text, generation["created_at"], generation["prompt_version"])


@pytest.mark.parametrize("kind", list(FILES))
@pytest.mark.parametrize("article", list(INPUTS))
def test_output_matches_snapshot(replayed: dict[str, Path], article: str, kind: str) -> None:
    folder = replayed[article]
    check_snapshot(masked_output(folder, FILES[kind]), SNAPSHOTS / f"{folder.name}.{kind}")


def test_masking_hides_only_the_volatile_values(replayed: dict[str, Path]) -> None:
    folder = replayed["en-txt"]
    analysis = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))
    masked = json.loads(masked_output(folder, "analysis.json"))
    assert masked["generation"]["created_at"] == CREATED_AT
    assert masked["generation"]["prompt_version"] == PROMPT_VERSION
    assert masked["generation"]["usage"] == USAGE
    volatile = ("created_at", "prompt_version", "usage")
    masked["generation"] |= {k: analysis["generation"][k] for k in volatile}
    assert masked == analysis
    html = masked_output(folder, "article.html")
    stamp = '<time datetime="&lt;created_at&gt;">&lt;created_at&gt;</time>'
    assert f'Generated <span lang="zh-Hans">生成于</span> {stamp}' in html
    assert f'<time datetime="{analysis["article"]["published_at"]}">' in html
    assert 'content="newsdesk; model=gpt-4.1-mini; prompt_version=&lt;prompt_version&gt;"' in html
    assert masked_output(folder, "article.md") == (folder / "article.md").read_text(encoding="utf-8")
