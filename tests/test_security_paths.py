"""Security pass (issue 6), item 4: paths.

Article ids and output paths never leave the output folder, whatever the title or a saved
analysis.json says; symlinks and loops in the input folder are handled (no hang, each file once);
an unreadable or special file fails alone with a clear reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import DEFAULT_DISCLAIMER_EN, DEFAULT_DISCLAIMER_ZH
from pipeline.emit.output import article_dir
from pipeline.ingest import InputFailure, load_articles
from pipeline.ingest.article import Article, content_hash, make_article_id
from tests.conftest import ARTICLES, RECORDINGS, ROOT, cli_env

HOSTILE = ROOT / "tests" / "hostile"
SAFE_ID = r"[a-z0-9-]{1,80}"
GOOD_FILE = "energy-iron-air-storage.txt"  # has a recording; its id comes from its title
ZH_FILE = "zh-rrr-cut.txt"  # has a recording; its id comes from its file name (Chinese title)
RRR_ID = "zh-rrr-cut-c355db2d2c"

HOSTILE_TITLES = [
    "../../etc/passwd",
    "/etc/shadow",
    "..\\..\\Windows\\System32\\config\\SAM",
    "nul\x00byte/../../x",
    "A" * 5000,
    "word " * 1000,
    "\u202etxt.exe",
    "\uff0e\uff0e\uff0fetc\uff0fpasswd",  # fullwidth ../etc/passwd
    "\u2024\u2024\u2215\u2024\u2024\u2215root",  # one-dot leaders and division slashes
    "\u0430dmin \u0440\u0430ypal",  # Cyrillic look-alikes
    "\u200b\u200d\ufeff",
    "..",
    ".",
    "",
    "CON",
    "~/.ssh/id_rsa",
    "$(rm -rf ~) `id` ; | & > <",
    "全中文标题没有拉丁字母",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "file:///etc/passwd",
]
HOSTILE_NAMES = ["story", "../../up", "x" * 250, "\u202egnp.exe", "нет-латиницы", "...", "a\x00b"]


# --- ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("title", HOSTILE_TITLES)
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_an_id_from_a_hostile_title_or_file_name_is_a_safe_folder_name(
    tmp_path: Path, title: str, name: str
) -> None:
    sha = content_hash(title, "text")
    article_id = make_article_id(title, name, sha)
    assert re.fullmatch(SAFE_ID, article_id), article_id
    out = tmp_path / "out"
    folder = article_dir(out, article_id)
    assert folder.parent == out / "articles"
    assert folder.resolve().is_relative_to((out / "articles").resolve())


def test_ids_of_the_hostile_corpus_are_safe_and_distinct(tmp_path: Path) -> None:
    articles = [a for a in load_articles([HOSTILE]) if isinstance(a, Article)]
    assert len(articles) >= 10
    ids = [a.id for a in articles]
    assert len(set(ids)) == len(ids)
    out = tmp_path / "out"
    for article in articles:
        assert re.fullmatch(SAFE_ID, article.id), (article.input_path, article.id)
        assert article_dir(out, article.id).resolve().parent == (out / "articles").resolve()
    titles = {a.title for a in articles}
    assert "../../etc/passwd" in titles and "/etc/shadow" in titles, "hostile titles are kept as titles"


# --- newsdesk render with a hostile article id --------------------------------------------------------


def recorded_answer(article_id: str, call: str) -> dict[str, Any]:
    document = json.loads((RECORDINGS / article_id / f"{call}-0.json").read_text(encoding="utf-8"))
    answer: dict[str, Any] = json.loads(document["response"]["choices"][0]["message"]["content"])
    return answer


def analysis_with_id(article_id: str) -> dict[str, Any]:
    en, zh = recorded_answer(RRR_ID, "en"), recorded_answer(RRR_ID, "zh")
    return {
        "schema_version": 1,
        "article": {"id": article_id, "title": "降准0.5个百分点", "source": "金融观察", "url": None,
                    "published_at": "2026-06-06", "language": "zh", "content_sha256": "0" * 64},
        "scores": en["scores"], "tags": en["tags"], "en": en["en"], "zh": zh["zh"],
        "disclaimer": {"en": DEFAULT_DISCLAIMER_EN, "zh": DEFAULT_DISCLAIMER_ZH},
        "generation": {"model": "gpt-4.1-mini", "prompt_version": "test",
                       "created_at": "2026-06-06T08:00:00+00:00",
                       "usage": {"prompt_tokens": 1, "cached_tokens": 0, "completion_tokens": 1},
                       "calls": 2, "attempts": 2},
    }  # fmt: skip


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def render(tmp_path: Path, article_id: str) -> tuple[Any, Path, set[Path]]:
    """`newsdesk render` of an analysis.json with `article_id`: result, OUT, files written outside OUT."""
    work = tmp_path / "work"
    out = work / "deep" / "er" / "out"
    out.mkdir(parents=True)
    source = work / "analysis.json"
    source.write_text(json.dumps(analysis_with_id(article_id)), encoding="utf-8")
    before = files_under(tmp_path)
    result = CliRunner().invoke(app, ["render", str(source), "--out", str(out)])
    created = files_under(tmp_path) - before
    outside = {p for p in created if not p.resolve().is_relative_to(out.resolve())}
    return result, out, outside


ESCAPING_IDS = ["../../escape", "../../../../srv/escape", "..", ".", "", "a/b", "articles/../../x",
                "nul\x00byte", "..\\..\\escape"]  # fmt: skip


@pytest.mark.parametrize("article_id", ESCAPING_IDS)
def test_render_never_writes_outside_out_for_a_hostile_id(tmp_path: Path, article_id: str) -> None:
    result, out, outside = render(tmp_path, article_id)
    assert outside == set(), f"written outside --out: {sorted(map(str, outside))}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    layout = {str(p.relative_to(out)) for p in files_under(out)}
    articles = {p for p in layout if p.startswith("articles/")}
    if result.exit_code == 2:  # refused: one error line naming the id, no article written
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        named = ("article.id", repr(article_id)) + ((article_id,) if article_id.strip(".") else ())
        assert any(name in lines[0] for name in named), f"the error names the id: {lines[0]}"
        assert articles == set()
    else:  # sanitised: the article lands in one safe folder under OUT/articles
        assert result.exit_code == 0, result.output
        folders = {Path(p).parts[1] for p in articles}
        assert len(folders) == 1 and re.fullmatch(SAFE_ID, folders.pop())
        assert all(len(Path(p).parts) == 3 for p in articles), articles
    assert layout - articles <= {"index.html", "feed.xml"}


def test_render_of_an_absolute_id_stays_inside_out(tmp_path: Path) -> None:
    target = tmp_path / "absolute-escape"  # absolute, yet inside tmp_path so that a bug stays contained
    result, _, outside = render(tmp_path, str(target))
    assert outside == set(), f"written outside --out: {sorted(map(str, outside))}"
    assert not target.exists()
    assert result.exit_code in (0, 2) and "Traceback" not in result.output


def test_render_of_a_safe_id_writes_the_article_folder(tmp_path: Path) -> None:
    result, out, outside = render(tmp_path, RRR_ID)
    assert result.exit_code == 0, result.output
    assert outside == set()
    assert {p.name for p in (out / "articles" / RRR_ID).iterdir()} == {
        "article.html",
        "article.md",
        "analysis.json",
    }


# --- symlinks, loops and special files in the input folder --------------------------------------------


def replay_run(inputs: list[Path], out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`newsdesk run --replay` in a subprocess with a timeout, so that a hang fails the test."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", *map(str, inputs), "--out", str(out),
         "--replay", str(RECORDINGS)],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    report: dict[str, Any] = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    return result, report


def linked_folder(tmp_path: Path) -> tuple[Path, Path]:
    """An input folder with a real article, links to it, a link out of the folder and link loops."""
    inputs, outside = tmp_path / "in", tmp_path / "elsewhere"
    (inputs / "sub").mkdir(parents=True)
    outside.mkdir()
    shutil.copyfile(ARTICLES / GOOD_FILE, inputs / GOOD_FILE)
    shutil.copyfile(ARTICLES / ZH_FILE, outside / ZH_FILE)
    (inputs / "again.txt").symlink_to(inputs / GOOD_FILE)  # the same file under another name
    (inputs / "sub" / "relative.txt").symlink_to(Path("..") / GOOD_FILE)
    (inputs / ZH_FILE).symlink_to(outside / ZH_FILE)  # a file outside the input folder
    (inputs / "self").symlink_to(inputs)  # a folder loop
    (inputs / "sub" / "up").symlink_to(Path(".."))  # another folder loop
    (inputs / "elsewhere").symlink_to(outside)  # a folder outside, which also holds the linked file
    return inputs, outside


def test_symlinks_and_loops_do_not_hang_and_each_file_is_read_once(tmp_path: Path) -> None:
    inputs, _ = linked_folder(tmp_path)
    result, report = replay_run([inputs, inputs / "again.txt", inputs], tmp_path / "out")
    assert "Traceback" not in result.stderr
    statuses = [(e["id"], e["status"]) for e in report["articles"]]
    good_id = next(a.id for a in load_articles([ARTICLES / GOOD_FILE]) if isinstance(a, Article))
    processed = [article_id for article_id, status in statuses if status in ("ok", "failed")]
    assert processed.count(good_id) == 1, statuses
    assert processed.count(RRR_ID) <= 1, statuses
    assert [s for _, s in statuses if s == "duplicate"] == [], "a file reached twice is not read twice"


def test_a_symlink_to_a_file_outside_the_folder_is_read_once_or_reported(tmp_path: Path) -> None:
    inputs, _ = linked_folder(tmp_path)
    loaded = list(load_articles([inputs]))
    about = [item for item in loaded if Path(item.input_path).name == ZH_FILE]
    assert len(about) == 1
    item = about[0]
    assert isinstance(item, Article) or item.reason.strip(), "either read, or failed with a reason"


def test_a_linked_folder_is_searched_once_and_a_link_back_up_is_no_loop(tmp_path: Path) -> None:
    inputs, outside = linked_folder(tmp_path)
    (outside / "deeper").mkdir()
    shutil.copyfile(ARTICLES / "central-bank-rate-decision.md", outside / "deeper" / "ecb.md")
    loaded = list(load_articles([inputs]))
    assert [Path(i.input_path).name for i in loaded].count("ecb.md") == 1, "reached through the link"
    assert all(isinstance(i, Article) for i in loaded), loaded


def test_a_link_into_the_output_folder_is_not_read_as_input(tmp_path: Path) -> None:
    """An archive link to OUT/articles in the inbox: the run must not read its own pages."""
    inputs, out = tmp_path / "in", tmp_path / "site"
    inputs.mkdir()
    shutil.copyfile(ARTICLES / GOOD_FILE, inputs / GOOD_FILE)
    args = ["run", str(inputs), "--replay", str(RECORDINGS), "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    (inputs / "archive").symlink_to(out / "articles")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    assert [e["status"] for e in report["articles"]] == ["skipped"], "no page of OUT read as an article"


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names of folders this user may not list and of files in folders it may not enter. The tests
    run as root, whom chmod 000 does not stop, so the system calls fail as they would for another."""
    names: set[str] = set()
    scandir, is_file = os.scandir, Path.is_file

    def guarded_scandir(path: Any = ".") -> Any:
        if Path(path).name in names:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    def guarded_is_file(self: Path) -> bool:
        if self.name in names:
            raise PermissionError(13, "Permission denied", str(self))
        return is_file(self)

    monkeypatch.setattr(os, "scandir", guarded_scandir)
    monkeypatch.setattr(Path, "is_file", guarded_is_file)
    return names


def test_a_folder_that_cannot_be_listed_is_a_failure_naming_it(tmp_path: Path, closed: set[str]) -> None:
    inputs = tmp_path / "in"
    (inputs / "closed").mkdir(parents=True)
    shutil.copyfile(ARTICLES / GOOD_FILE, inputs / GOOD_FILE)
    shutil.copyfile(ARTICLES / ZH_FILE, inputs / "closed" / ZH_FILE)
    closed.add("closed")
    loaded = list(load_articles([inputs]))
    failures = [(i.input_path, i.reason) for i in loaded if isinstance(i, InputFailure)]
    assert failures == [(str(inputs / "closed"), "folder cannot be read: Permission denied")]
    assert [Path(i.input_path).name for i in loaded if isinstance(i, Article)] == [GOOD_FILE]


def test_a_file_that_cannot_be_reached_fails_alone_and_the_run_goes_on(
    tmp_path: Path, closed: set[str]
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copyfile(ARTICLES / GOOD_FILE, inputs / GOOD_FILE)
    shutil.copyfile(ARTICLES / ZH_FILE, inputs / "behind-a-closed-folder.txt")
    closed.add("behind-a-closed-folder.txt")
    given = [str(inputs / "behind-a-closed-folder.txt"), str(inputs / GOOD_FILE)]
    result = CliRunner().invoke(app, ["run", *given, "--out", str(out), "--replay", str(RECORDINGS)])
    assert result.exit_code == 1, result.output
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    by_name = {Path(e["source"]).name: (e["status"], e["error"]) for e in report["articles"]}
    assert by_name == {"behind-a-closed-folder.txt": ("failed", "cannot be read: Permission denied"),
                       GOOD_FILE: ("ok", None)}  # fmt: skip


def special_folder(tmp_path: Path) -> Path:
    inputs = tmp_path / "special"
    inputs.mkdir()
    shutil.copyfile(ARTICLES / GOOD_FILE, inputs / GOOD_FILE)
    os.mkfifo(inputs / "pipe.txt")
    (inputs / "loop.txt").symlink_to(inputs / "loop.txt")
    (inputs / "ping.md").symlink_to(inputs / "pong.md")
    (inputs / "pong.md").symlink_to(inputs / "ping.md")
    (inputs / "dangling.json").symlink_to(inputs / "missing.json")
    return inputs


SPECIAL = ("pipe.txt", "loop.txt", "ping.md", "pong.md", "dangling.json")


def test_special_files_do_not_hang_the_run_and_the_good_file_finishes(tmp_path: Path) -> None:
    inputs = special_folder(tmp_path)
    result, report = replay_run([inputs], tmp_path / "out")
    assert "Traceback" not in result.stderr
    ok = [Path(e["source"]).name for e in report["articles"] if e["status"] == "ok"]
    assert ok == [GOOD_FILE]


def test_special_files_in_a_folder_are_each_reported_with_a_reason(tmp_path: Path) -> None:
    inputs = special_folder(tmp_path)
    result, report = replay_run([inputs], tmp_path / "out")
    failed = {Path(e["source"]).name: e["error"] for e in report["articles"] if e["status"] == "failed"}
    assert set(failed) == set(SPECIAL), f"silently skipped: {sorted(set(SPECIAL) - set(failed))}"
    assert all(reason and "\n" not in reason for reason in failed.values())
    assert result.returncode == 1


@pytest.mark.parametrize("name", ["pipe.txt", "loop.txt", "ping.md"])
def test_a_special_file_given_by_name_fails_with_a_true_reason(tmp_path: Path, name: str) -> None:
    inputs = special_folder(tmp_path)
    [failure] = list(load_articles([inputs / name]))
    assert isinstance(failure, InputFailure)
    assert failure.input_path == str(inputs / name)
    assert "no such file" not in failure.reason.lower(), f"{name} exists: {failure.reason!r}"


def test_a_folder_named_like_an_article_is_searched_not_read(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    (inputs / "x.txt").mkdir(parents=True)
    shutil.copyfile(ARTICLES / GOOD_FILE, inputs / "x.txt" / GOOD_FILE)
    loaded = list(load_articles([inputs]))
    assert [(type(i).__name__, Path(i.input_path).name) for i in loaded] == [("Article", GOOD_FILE)]


# --- unreadable files ---------------------------------------------------------------------------------


@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """File names whose reading raises PermissionError (chmod 000 does not stop root)."""
    names: set[str] = set()
    read_bytes, open_ = Path.read_bytes, Path.open

    def guarded_read_bytes(self: Path) -> bytes:
        if self.name in names:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    def guarded_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name in names:
            raise PermissionError(13, "Permission denied", str(self))
        return open_(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", guarded_read_bytes)
    monkeypatch.setattr(Path, "open", guarded_open)
    return names


@pytest.mark.parametrize("locked", ["secret.txt", "secret.jsonl"])
def test_an_unreadable_file_fails_alone_with_a_reason(
    tmp_path: Path, unreadable: set[str], locked: str
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copyfile(ARTICLES / GOOD_FILE, inputs / GOOD_FILE)
    shutil.copyfile(ARTICLES / ZH_FILE, inputs / ZH_FILE)
    (inputs / locked).write_text(json.dumps({"title": "Locked", "text": "x" * 200}) + "\n", encoding="utf-8")
    unreadable.add(locked)
    loaded = list(load_articles([inputs]))
    failures = [i for i in loaded if isinstance(i, InputFailure)]
    assert [(Path(f.input_path).name, f.reason) for f in failures] == [(locked, "Permission denied")]
    assert sorted(Path(a.input_path).name for a in loaded if isinstance(a, Article)) == [GOOD_FILE, ZH_FILE]


def test_an_unreadable_file_is_a_failed_entry_in_the_run_report(tmp_path: Path, unreadable: set[str]) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copyfile(ARTICLES / GOOD_FILE, inputs / GOOD_FILE)
    shutil.copyfile(ARTICLES / GOOD_FILE, inputs / "locked.txt")
    unreadable.add("locked.txt")
    result = CliRunner().invoke(app, ["run", str(inputs), "--out", str(out), "--replay", str(RECORDINGS)])
    assert result.exit_code == 1, result.output
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    by_name = {Path(e["source"]).name: e for e in report["articles"]}
    assert by_name["locked.txt"]["status"] == "failed"
    assert by_name["locked.txt"]["error"] == "Permission denied"
    assert by_name[GOOD_FILE]["status"] == "ok"
