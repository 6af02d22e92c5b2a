"""Shared test fixtures. No test can reach a real model: the environment is scrubbed and
NEWSDESK_OFFLINE=1 makes the live model refuse any endpoint that is not on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.ingest import load_articles
from pipeline.ingest.article import Article
from pipeline.prompts import PromptBook

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
ARTICLES = FIXTURES / "articles"
RECORDINGS = FIXTURES / "recordings"


@pytest.fixture(autouse=True)
def offline_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NEWSDESK_MODEL", "NEWSDESK_CONCURRENCY",
                 "NEWSDESK_OUTPUT_MODE", "NEWSDESK_DEBUG"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEWSDESK_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def fixture_articles() -> list[Article]:
    loaded = list(load_articles([ARTICLES]))
    articles = [a for a in loaded if isinstance(a, Article)]
    assert len(articles) == len(loaded), "every fixture article loads"
    return articles


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def book(settings: Settings) -> PromptBook:
    return PromptBook(settings)


def cli_env(api_key: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a `newsdesk` subprocess: no inherited OPENAI_/NEWSDESK_ settings, offline."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "NEWSDESK_"))}
    environment.update({"NEWSDESK_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"})
    if api_key is not None:
        environment["OPENAI_API_KEY"] = api_key
    environment.update(env or {})
    return environment


def run_newsdesk(
    *args: str | Path, api_key: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline ARGS` from the repository root, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        cwd=ROOT, env=cli_env(api_key, env), capture_output=True, text=True, encoding="utf-8",
        timeout=timeout, check=False,
    )  # fmt: skip


DUKE_ID = "duke-energy-orders-8-5-gwh-of-iron-air-batteries-in-largest-7f7822e172"


def plant_parity_gap(recordings: Path) -> None:
    """Give Duke's Chinese answer a source figure the English leaves out (the 20 MW site): the
    checks warn of it, and the article is still published. The bundled answers carry no warning,
    so tests of how warnings travel plant one."""
    path = recordings / DUKE_ID / "zh-0.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    message = document["response"]["choices"][0]["message"]
    answer = json.loads(message["content"])
    answer["zh"]["tldr"][1] += "另一站点规模为20兆瓦。"
    message["content"] = json.dumps(answer, ensure_ascii=False)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")


@pytest.fixture(scope="session")
def warned_recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled recordings, Duke's answer with a parity warning planted."""
    folder = tmp_path_factory.mktemp("warned") / "recordings"
    shutil.copytree(RECORDINGS, folder)
    plant_parity_gap(folder)
    return folder
