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
from pipeline.testing.fixtures import build, export, first_request, restamp
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
    assert out.splitlines()[-1].endswith(": 26 current, 0 stale, 0 missing, 0 unreadable, 0 orphaned")


def test_status_names_each_stale_missing_unreadable_and_orphaned_recording(
    tmp_path: Path, book: PromptBook
) -> None:
    articles, recordings = tmp_path / "articles", tmp_path / "recordings"
    shutil.copytree(ARTICLES, articles)
    shutil.copytree(RECORDINGS, recordings)
    first, second, third = sorted(path for path in recordings.iterdir() if path.is_dir())[:3]
    stale = first / "en-0.json"
    document = json.loads(stale.read_text(encoding="utf-8"))
    stale.write_text(json.dumps({**document, "prompt_version": "0123456789ab", "request_sha256": "0" * 64}))
    (second / "zh-0.json").unlink()
    (third / "en-0.json").write_bytes(b"\xff\xfe not text")
    orphan = recordings / "no-such-article-0000000000" / "en-0.json"
    orphan.parent.mkdir()
    orphan.write_text("[1, 2]", encoding="utf-8")  # unreadable too: it is still listed
    (articles / "broken-new.json").write_text('{"title": "x", "text": ', encoding="utf-8")

    code, out, _ = status(articles, "--recordings", recordings, "--check")
    assert code == 1, "--check fails unless every recording is current"
    lines = out.splitlines()
    assert (
        lines[-1]
        == f"prompt version {book.version}: 23 current, 1 stale, 1 missing, 2 unreadable, 1 orphaned"
    )
    assert any(
        line.startswith("stale") and line.endswith(" en (recorded with 0123456789ab)") for line in lines
    )
    assert any(line.startswith("missing") and line.endswith(" zh") for line in lines)
    assert f"unreadable {third / 'en-0.json'} is not UTF-8 text; record it again" in [
        line.replace("recording ", "", 1) for line in lines
    ]
    assert any(line.startswith(f"unreadable {articles / 'broken-new.json'}: ") for line in lines)
    assert f"orphaned   {orphan}" in lines

    code, out, _ = status(articles, "--recordings", recordings, "--json")
    assert code == 0, "without --check the listing itself succeeds"
    states = json.loads(out)["recordings"]
    assert sorted(s["state"] for s in states if s["state"] != "current") == [
        "missing", "orphaned", "stale", "unreadable", "unreadable"
    ]  # fmt: skip


def test_status_lists_a_looping_link_among_the_inputs_as_unreadable(tmp_path: Path) -> None:
    articles = tmp_path / "articles"
    articles.mkdir()
    shutil.copyfile(ARTICLES / "zh-rrr-cut.txt", articles / "zh-rrr-cut.txt")
    (articles / "ping.txt").symlink_to(articles / "pong.txt")
    (articles / "pong.txt").symlink_to(articles / "ping.txt")
    code, out, _ = status(articles, "--recordings", RECORDINGS)
    assert code == 0, out
    assert f"unreadable {articles / 'ping.txt'}: a broken or looping symbolic link" in out.splitlines()
    assert out.splitlines()[-1].endswith(": 2 current, 0 stale, 0 missing, 2 unreadable, 24 orphaned")


def test_status_and_restamp_follow_re_asks(tmp_path: Path, book: PromptBook) -> None:
    """A call whose answer fails its checks is asked again: the re-ask's recording is judged like
    any other, and restamp gives it the request a run sends."""
    recordings = tmp_path / "recordings"
    shutil.copytree(RECORDINGS, recordings)
    folder = sorted(path for path in recordings.iterdir() if path.is_dir())[0]
    first = folder / "zh-0.json"
    good = json.loads(first.read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(good))
    broken["response"]["choices"][0]["message"]["content"] = "Sorry, no JSON today."
    first.write_text(json.dumps(broken, ensure_ascii=False), encoding="utf-8")

    code, out, _ = status(ARTICLES, "--recordings", recordings, "--check")
    assert code == 1 and any(
        line.startswith("missing") and line.endswith(" zh re-ask 1") for line in out.splitlines()
    )

    again = folder / "zh-1.json"  # the good answer, recorded for the first request: stale as a re-ask
    again.write_text(json.dumps({**good, "key": {**good["key"], "attempt": 1}}, ensure_ascii=False))
    code, out, _ = status(ARTICLES, "--recordings", recordings, "--check")
    assert code == 1 and any(line.startswith("stale") and " zh re-ask 1" in line for line in out.splitlines())

    assert restamp(ARTICLES, recordings) == 27
    code, out, _ = status(ARTICLES, "--recordings", recordings, "--check")
    assert code == 0, out
    assert out.splitlines()[-1].endswith(": 27 current, 0 stale, 0 missing, 0 unreadable, 0 orphaned")
    restamped = json.loads(again.read_text(encoding="utf-8"))
    assert restamped["request"]["messages"][-2:][0]["content"] == "Sorry, no JSON today."
    assert (
        restamped["response"]["choices"][0]["message"]["content"]
        == good["response"]["choices"][0]["message"]["content"]
    )


def test_build_writes_nothing_when_an_answer_is_missing(tmp_path: Path) -> None:
    answers, recordings = tmp_path / "answers", tmp_path / "recordings"
    shutil.copytree(RECORDINGS, recordings)
    export(ARTICLES, RECORDINGS, answers)
    missing = sorted(answers.iterdir())[5]
    missing.unlink()
    before = {path: path.read_bytes() for path in recordings.rglob("*.json")}
    (answers / sorted(answers.iterdir())[0].name).write_text("{", encoding="utf-8")
    with pytest.raises(SystemExit, match=f"nothing was written; fix these first:(.|\n)*{missing.name}"):
        build(ARTICLES, answers, recordings)
    assert {path: path.read_bytes() for path in recordings.rglob("*.json")} == before


@pytest.mark.parametrize("which", ["articles", "recordings"])
def test_status_of_a_folder_that_does_not_exist_is_an_error(tmp_path: Path, which: str) -> None:
    gone = tmp_path / "gone"
    args = [gone, "--recordings", RECORDINGS] if which == "articles" else [ARTICLES, "--recordings", gone]
    code, out, err = status(*args)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"Error: {gone}: no such {'file or folder' if which == 'articles' else 'recordings folder'}"
    ]


def test_outputs_replayed_from_stale_recordings_are_not_taken_as_done(tmp_path: Path) -> None:
    """The README's sequence: a replay flags stale articles, and --strict-replay then fails them
    rather than skipping the outputs the first replay wrote from stale answers."""
    recordings, out = tmp_path / "recordings", tmp_path / "out"
    shutil.copytree(RECORDINGS, recordings)
    stale = sorted(path for path in recordings.iterdir() if path.is_dir())[0] / "zh-0.json"
    document = json.loads(stale.read_text(encoding="utf-8"))
    stale.write_text(
        json.dumps({**document, "request_sha256": "0" * 64}, ensure_ascii=False), encoding="utf-8"
    )
    run = ["run", str(ARTICLES), "--replay", str(recordings), "--out", str(out)]

    first = CliRunner().invoke(app, run)
    assert first.exit_code == 0, first.output
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    assert report["counts"]["ok"] == 13 and report["counts"].get("skipped", 0) == 0

    strict = CliRunner().invoke(app, [*run, "--strict-replay"])
    assert strict.exit_code == 1, strict.output
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    assert (report["counts"]["failed"], report["counts"]["skipped"]) == (1, 12)
    [failed] = [a for a in report["articles"] if a["status"] == "failed"]
    assert failed["id"] == stale.parent.name and "was made for another request" in failed["error"]
