"""The bundled recordings are current: each holds the exact request the pipeline sends today; and
`newsdesk fixtures status` tells current, stale, missing and orphaned recordings apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
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


# --- newsdesk fixtures status -----------------------------------------------------------------------


def status(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["fixtures", "status", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_status_of_the_bundled_fixtures_is_all_current() -> None:
    code, out, _ = status(ARTICLES, "--recordings", RECORDINGS, "--check")
    assert code == 0, out
    assert out.splitlines()[-1].endswith(": 26 current, 0 stale, 0 missing, 0 orphaned")


def test_status_names_each_stale_missing_and_orphaned_recording(tmp_path: Path, book: PromptBook) -> None:
    recordings = tmp_path / "recordings"
    shutil.copytree(RECORDINGS, recordings)
    first, second = sorted(path for path in recordings.iterdir() if path.is_dir())[:2]
    stale = first / "en-0.json"
    document = json.loads(stale.read_text(encoding="utf-8"))
    stale.write_text(json.dumps({**document, "prompt_version": "0123456789ab"}), encoding="utf-8")
    (second / "zh-0.json").unlink()
    orphan = recordings / "no-such-article-0000000000" / "en-0.json"
    orphan.parent.mkdir()
    orphan.write_text("[1, 2]", encoding="utf-8")  # unreadable too: it is still listed

    code, out, _ = status(ARTICLES, "--recordings", recordings, "--check")
    assert code == 1, "--check fails unless every recording is current"
    lines = out.splitlines()
    assert lines[-1] == f"prompt version {book.version}: 24 current, 1 stale, 1 missing, 1 orphaned"
    assert any(
        line.startswith("stale") and line.endswith(" en (recorded with 0123456789ab)") for line in lines
    )
    assert any(line.startswith("missing") and line.endswith(" zh") for line in lines)
    assert f"orphaned  {orphan}" in lines

    code, out, _ = status(ARTICLES, "--recordings", recordings, "--json")
    assert code == 0, "without --check the listing itself succeeds"
    states = json.loads(out)["recordings"]
    assert sorted(s["state"] for s in states if s["state"] != "current") == ["missing", "orphaned", "stale"]


@pytest.mark.parametrize("which", ["articles", "recordings"])
def test_status_of_a_folder_that_does_not_exist_is_an_error(tmp_path: Path, which: str) -> None:
    gone = tmp_path / "gone"
    args = [gone, "--recordings", RECORDINGS] if which == "articles" else [ARTICLES, "--recordings", gone]
    code, out, err = status(*args)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"Error: {gone}: no such {'file or folder' if which == 'articles' else 'recordings folder'}"
    ]
