"""The bundled recordings are current: each holds the exact request the pipeline sends today."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.ingest.article import Article
from pipeline.model.replay import recording_path, request_sha256
from pipeline.prompts import PromptBook
from pipeline.schema import LANGS
from pipeline.testing.fixtures import build, export, first_request
from tests.conftest import ARTICLES, RECORDINGS


def test_every_fixture_has_current_recordings(fixture_articles: list[Article], book: PromptBook) -> None:
    for article in fixture_articles:
        for call in LANGS:
            request = first_request(book, article, call)
            document = json.loads(recording_path(RECORDINGS, request).read_text(encoding="utf-8"))
            assert document["request"] == request.body, f"{article.input_path} {call}: run the restamp tool"
            assert document["prompt_version"] == book.version
            assert document["request_sha256"] == request_sha256(request.body)


def test_no_recording_is_orphaned(fixture_articles: list[Article]) -> None:
    ids = {article.id for article in fixture_articles}
    folders = {path.name for path in RECORDINGS.iterdir() if path.is_dir()}
    assert folders == ids


def test_recordings_carry_no_credentials() -> None:
    for path in RECORDINGS.rglob("*.json"):
        text = path.read_text(encoding="utf-8").lower()
        assert "authorization" not in text and "api_key" not in text and "bearer" not in text, path


def test_export_then_build_reproduces_the_recordings_byte_for_byte(tmp_path: Path) -> None:
    answers, rebuilt = tmp_path / "answers", tmp_path / "recordings"
    assert export(ARTICLES, RECORDINGS, answers) == 26
    assert build(ARTICLES, answers, rebuilt) == 26
    for path in RECORDINGS.rglob("*.json"):
        assert (rebuilt / path.relative_to(RECORDINGS)).read_bytes() == path.read_bytes(), path
