"""Size and shape (issue 6, item 5): enormous files, deep or huge HTML, million-line JSON, broken
.jsonl lines, mixed encodings. Every input either loads or fails alone with a one-line reason, in
bounded time and memory, and the rest of the batch is unaffected.

Caps are kept small (`Limits(max_input_bytes=...)`) so that the tests stay fast; memory is measured
with tracemalloc and asserted generously: what is checked is that input is streamed, not how much a
parser allocates.
"""

from __future__ import annotations

import codecs
import json
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ingest import InputFailure, Limits, load_articles, load_file
from pipeline.ingest.article import Article
from tests.conftest import run_newsdesk

ROOT = Path(__file__).resolve().parent.parent
ARTICLES = ROOT / "fixtures" / "articles"
RECORDINGS = ROOT / "fixtures" / "recordings"

TITLE = "Council approves the budget for the new river bridge"
PARAGRAPH = (
    "The city council approved the budget for the new river bridge after a long debate on Tuesday "
    "night, and construction is expected to start in the spring."
)
BODY = f"{PARAGRAPH}\n\n{PARAGRAPH}"
SMALL = Limits(max_input_bytes=100_000, max_input_tokens=2_000)
MB = 1_000_000


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def sparse(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (and is slow and huge to read)."""
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def load(path: Path, limits: Limits) -> list[Article | InputFailure]:
    return list(load_file(path, limits))


def only(path: Path, limits: Limits) -> Article | InputFailure:
    loaded = load(path, limits)
    assert len(loaded) == 1, loaded
    return loaded[0]


def assert_one_line(reason: str) -> None:
    assert reason.strip(), "a failure has a reason"
    assert len(reason.splitlines()) == 1, reason


def timed(load_it: Callable[[], list[Article | InputFailure]]) -> tuple[list[Article | InputFailure], float]:
    started = time.perf_counter()
    loaded = load_it()
    return loaded, time.perf_counter() - started


@contextmanager
def traced_peak() -> Iterator[list[int]]:
    """Yields a list that holds, after the block, the peak of traced memory in bytes."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def good_txt(folder: Path, name: str = "z-good.txt") -> Path:
    return write(folder / name, f"{TITLE}\n\n{BODY}\n")


# --- enormous files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".txt", ".md", ".markdown", ".html", ".htm", ".json"])
def test_a_file_over_the_cap_fails_with_a_reason_naming_the_cap(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"big{suffix}", f"{TITLE}\n\n" + PARAGRAPH * 40)
    size = path.stat().st_size
    failed = only(path, Limits(max_input_bytes=size - 1))
    assert isinstance(failed, InputFailure)
    assert failed.input_path == str(path)
    assert f"{size:,} bytes" in failed.reason and f"{size - 1:,}-byte cap" in failed.reason
    assert "max_input_bytes" in failed.reason, "the reason says how to accept the file"
    assert_one_line(failed.reason)


def test_a_file_of_exactly_the_cap_still_loads(tmp_path: Path) -> None:
    path = write(tmp_path / "exact.txt", f"{TITLE}\n\n{BODY}\n")
    item = only(path, Limits(max_input_bytes=path.stat().st_size))
    assert isinstance(item, Article) and item.title == TITLE


@pytest.mark.parametrize("suffix", [".txt", ".md", ".html", ".json"])
def test_an_enormous_file_fails_at_once_without_being_read(tmp_path: Path, suffix: str) -> None:
    path = sparse(tmp_path / f"enormous{suffix}", 4_000_000_000)
    with traced_peak() as peak:
        (item,), seconds = timed(lambda: load(path, Limits()))
    assert isinstance(item, InputFailure)
    assert "4,000,000,000 bytes" in item.reason and "10,000,000-byte cap" in item.reason
    assert seconds < 1.0
    assert peak[0] < 1 * MB, "the file was not read"


def test_an_enormous_jsonl_line_is_not_read_into_memory(tmp_path: Path) -> None:
    # one 64 MB "line" (no newline at all): it must fail alone without being held in memory whole
    path = sparse(tmp_path / "one-giant-line.jsonl", 64 * MB)
    with traced_peak() as peak:
        loaded, seconds = timed(lambda: load(path, Limits(max_input_bytes=MB)))
    assert len(loaded) == 1 and isinstance(loaded[0], InputFailure)
    assert "1,000,000-byte cap" in loaded[0].reason
    assert seconds < 5.0
    assert peak[0] < 20 * MB, f"peak {peak[0]:,} bytes: the over-cap line was read whole"


def test_loading_a_50_mb_jsonl_streams_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    body = "\n\n".join([PARAGRAPH * 4] * 150)  # about 90 KB of text per line
    with path.open("w", encoding="utf-8") as handle:
        number = 0
        while handle.tell() < 50 * MB:
            number += 1
            handle.write(json.dumps({"title": f"Story {number}: {TITLE}", "text": body}) + "\n")
    assert path.stat().st_size >= 50 * MB
    count = 0
    with traced_peak() as peak:
        for item in load_file(path, Limits(max_input_tokens=200)):
            assert isinstance(item, Article), item
            count += 1
    path.unlink()  # 50 MB: not kept among pytest's retained temporary folders
    assert count == number
    assert peak[0] < 20 * MB, f"peak {peak[0]:,} bytes for a 50 MB file: not streamed"


# --- HTML: deep and huge --------------------------------------------------------------------------------

HTML_PARAGRAPH = f"<p>{PARAGRAPH}</p>"


@pytest.mark.parametrize(
    "page",
    [
        "<html><body>" + "<div>" * 20_000 + HTML_PARAGRAPH * 3 + "</div>" * 20_000 + "</body></html>",
        "<html><body>" + "<div>" * 20_000 + HTML_PARAGRAPH * 3 + "</body></html>",  # never closed
        "<html><body>" + "<span><b><i>" * 10_000 + HTML_PARAGRAPH * 3 + "</body></html>",
        "<html><body>" + "<table><tr><td>" * 7_000 + HTML_PARAGRAPH * 3 + "</body></html>",
    ],
    ids=["nested-divs", "unclosed-divs", "inline-tags", "tables"],
)
def test_a_deeply_nested_html_page_fails_or_loads_quickly(tmp_path: Path, page: str) -> None:
    path = write(tmp_path / "deep.html", f"<title>{TITLE}</title>{page}")
    (item,), seconds = timed(lambda: load(path, Limits()))
    assert seconds < 5.0
    if isinstance(item, InputFailure):
        assert_one_line(item.reason)
    else:
        assert PARAGRAPH[:40] in item.text


def test_a_huge_flat_html_page_under_the_cap_loads_within_seconds(tmp_path: Path) -> None:
    page = f"<html><head><title>{TITLE}</title></head><body>{HTML_PARAGRAPH * 7_000}</body></html>"
    path = write(tmp_path / "flat.html", page)
    assert path.stat().st_size > MB
    (item,), seconds = timed(lambda: load(path, Limits(max_input_bytes=2 * MB, max_input_tokens=2_000)))
    assert seconds < 5.0
    assert isinstance(item, Article)
    assert item.title == TITLE and item.truncated
    assert item.text.startswith(PARAGRAPH)


def test_a_huge_html_page_over_the_cap_fails_without_being_parsed(tmp_path: Path) -> None:
    page = f"<html><head><title>{TITLE}</title></head><body>{HTML_PARAGRAPH * 30_000}</body></html>"
    path = write(tmp_path / "huge.html", page)
    (item,), seconds = timed(lambda: load(path, Limits(max_input_bytes=2 * MB)))
    assert isinstance(item, InputFailure) and "2,000,000-byte cap" in item.reason
    assert seconds < 0.5, "parsing a page this size takes seconds: the cap is checked first"


# --- JSON of a million lines ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b" \n" * 1_000_000, "empty file"),
        (b"[\n" + b"1,\n" * 1_000_000 + b"1]\n", "found a list"),
        (b"[\n" + b"  \n" * 1_000_000 + b"]\n", "found a list"),
        (b"[\n" * 1_000_000, "malformed JSON"),
        (b'{"title": "t",\n' + b'"k": 1,\n' * 1_000_000, "malformed JSON"),
        (b'{"title": "t", "text": "' + b"x\\n" * 1_000_000, "malformed JSON"),
    ],
    ids=["whitespace", "array", "empty-array", "open-brackets", "unclosed-object", "unclosed-string"],
)
def test_a_million_line_json_file_fails_fast_with_a_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    path = write(tmp_path / "million.json", data)
    (item,), seconds = timed(lambda: load(path, Limits()))
    assert isinstance(item, InputFailure), item
    assert reason in item.reason
    assert_one_line(item.reason)
    assert seconds < 3.0


def test_a_million_line_json_file_over_a_small_cap_fails_on_size(tmp_path: Path) -> None:
    path = write(tmp_path / "million.json", b"[\n" + b"1,\n" * 1_000_000 + b"1]\n")
    (item,), seconds = timed(lambda: load(path, SMALL))
    assert isinstance(item, InputFailure) and "100,000-byte cap" in item.reason
    assert seconds < 0.5


# --- .jsonl with broken lines among good ones -----------------------------------------------------------

BROKEN_LINES: list[tuple[bytes, str]] = [
    (b'{"title": "cut off', "malformed JSON at column "),
    (b"not json at all", "malformed JSON at column 1"),
    (b"[1, 2, 3]", "found a list"),
    (b'"just a string"', "expected a JSON object"),
    (b'{"title": "Latin-1", "text": "caf\xe9 ' + PARAGRAPH.encode() + b'"}', "not valid UTF-8"),
    (b'{"title": "No text here"}', "no article text found"),
    (b"[" * 50_000, "nested too deeply"),
    (b'{"title": "Huge", "text": ' + b"9" * 5_000 + b"}", "malformed JSON"),
    (b'{"title": "Short", "text": "tiny"}', "no article text found"),
    (b"\x00\x01\x02\x03", "malformed JSON"),
]


def test_a_jsonl_with_broken_lines_loads_every_good_line_and_fails_each_broken_one_alone(
    tmp_path: Path,
) -> None:
    lines: list[bytes] = []
    broken: dict[int, str] = {}
    for number in range(1, 2_001):
        if number % 7 == 0:
            data, reason = BROKEN_LINES[(number // 7) % len(BROKEN_LINES)]
            lines.append(data)
            broken[number] = reason
        else:
            record = {"title": f"Story {number}: {TITLE}", "text": f"Item {number}. {BODY}"}
            lines.append(json.dumps(record).encode())
    path = write(tmp_path / "a-mixed.jsonl", b"\n".join(lines) + b"\n")
    good = good_txt(tmp_path)

    loaded, seconds = timed(lambda: list(load_articles([tmp_path], Limits())))
    assert seconds < 10.0
    assert len(loaded) == 2_001
    assert isinstance(loaded[-1], Article) and loaded[-1].input_path == str(good), "the next file loads"
    by_line = {int(item.label.rsplit(":", 1)[1]): item for item in loaded[:-1]}
    assert sorted(by_line) == list(range(1, 2_001)), "one result per line, labelled FILE:LINE"
    for number, item in by_line.items():
        assert item.label == f"{path}:{number}"
        if number in broken:
            assert isinstance(item, InputFailure), (number, item)
            assert broken[number] in item.reason, (number, item.reason)
            assert_one_line(item.reason)
        else:
            assert isinstance(item, Article), (number, item)
            assert item.title == f"Story {number}: {TITLE}"
            assert item.text.startswith(f"Item {number}. ")
    articles = [item for item in loaded if isinstance(item, Article)]
    assert len({a.id for a in articles}) == len(articles), "every good line has its own id"


# --- mixed encodings in one folder ----------------------------------------------------------------------

ZH_TITLE = "央行宣布下调存款准备金率"
ZH_BODY = (
    "中国人民银行周五宣布，将下调金融机构存款准备金率零点五个百分点，"
    "释放长期资金约一万亿元，以支持实体经济发展。"
)
TW_TITLE = "台灣經濟部公布出口數據"
TW_BODY = (
    "經濟部週一公布，上月出口金額較去年同期成長百分之十二，主要受惠於半導體與電子產品需求強勁，創下歷史新高。"
)
EN_BODY = f"The city council approved the budget. {PARAGRAPH}"


def _html(title: str, body: str, charset: str) -> str:
    return (
        f'<html><head><meta charset="{charset}"><title>{title}</title></head>'
        f"<body><article><h1>{title}</h1><p>{body}</p><p>{body}</p></article></body></html>"
    )


MIXED: list[tuple[str, bytes, str, str]] = [
    ("utf8.txt", f"{ZH_TITLE}\n\n{ZH_BODY}".encode(), ZH_TITLE, ZH_BODY),
    ("utf8-bom.md", codecs.BOM_UTF8 + f"# {TITLE}\n\n{EN_BODY}".encode(), TITLE, EN_BODY),
    ("gbk.txt", f"{ZH_TITLE}\n\n{ZH_BODY}".encode("gbk"), ZH_TITLE, ZH_BODY),
    ("gbk.json", json.dumps({"title": ZH_TITLE, "text": ZH_BODY}, ensure_ascii=False).encode("gbk"),
     ZH_TITLE, ZH_BODY),
    ("big5.txt", f"{TW_TITLE}\n\n{TW_BODY}".encode("big5"), TW_TITLE, TW_BODY),
    ("big5.html", _html(TW_TITLE, TW_BODY, "big5").encode("big5"), TW_TITLE, TW_BODY),
    ("gb2312.htm", _html(ZH_TITLE, ZH_BODY, "gb2312").encode("gbk"), ZH_TITLE, ZH_BODY),
    ("utf16-le.txt", codecs.BOM_UTF16_LE + f"{TITLE}\n\n{EN_BODY}".encode("utf-16-le"), TITLE, EN_BODY),
    ("utf16-be.txt", codecs.BOM_UTF16_BE + f"{ZH_TITLE}\n\n{ZH_BODY}".encode("utf-16-be"), ZH_TITLE, ZH_BODY),
    ("utf16.md", f"---\ntitle: {TW_TITLE}\n---\n\n{TW_BODY}".encode("utf-16"), TW_TITLE, TW_BODY),
]  # fmt: skip


def test_a_folder_of_mixed_encodings_loads_every_file_as_written(tmp_path: Path) -> None:
    for name, data, _, _ in MIXED:
        write(tmp_path / name, data)
    loaded = {Path(item.label).name: item for item in load_articles([tmp_path], Limits())}
    assert set(loaded) == {name for name, _, _, _ in MIXED}
    for name, _, title, body in MIXED:
        item = loaded[name]
        assert isinstance(item, Article), (name, item)
        assert item.title == title, name
        assert body in item.text, (name, item.text[:80])
        assert "\ufffd" not in item.title + item.text, f"{name}: replacement characters"
        assert item.language == ("en" if title == TITLE else "zh"), name


@pytest.mark.parametrize("encoding", ["utf-32", "utf-32-be"])
def test_a_utf32_file_is_decoded_or_fails_but_never_loads_as_nul_riddled_text(
    tmp_path: Path, encoding: str
) -> None:
    data = f"{TITLE}\n\n{EN_BODY}".encode(encoding)
    if encoding == "utf-32-be":
        data = codecs.BOM_UTF32_BE + data
    item = only(write(tmp_path / "utf32.txt", data), Limits())
    if isinstance(item, Article):  # UTF-32 LE starts with the UTF-16 LE byte-order mark
        assert "\x00" not in item.title + item.text, f"loaded as UTF-16: {item.title[:20]!r}"
        assert item.title == TITLE
    else:
        assert_one_line(item.reason)


# --- the rest of the batch is unaffected ----------------------------------------------------------------


def test_monster_inputs_fail_alone_and_the_fixture_article_in_the_same_run_is_analysed(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    fixture = ARTICLES / "energy-iron-air-storage.txt"
    write(inbox / "m-fixture.txt", fixture.read_bytes())
    sparse(inbox / "a-enormous.txt", 2_000_000_000)
    write(inbox / "b-deep.json", b"[" * 1_000_000)
    write(inbox / "c-nested.html", "<div>" * 20_000 + HTML_PARAGRAPH)
    write(inbox / "d-broken.jsonl", b'{"title": "cut\n\x00\x01\n[1]\n')
    write(inbox / "e-binary.md", bytes(range(256)) * 100)
    write(inbox / "f-whitespace.json", b" \n" * 300_000)
    config = write(tmp_path / "small.toml", "max_input_bytes = 1000000\n")
    out = tmp_path / "out"

    result = CliRunner().invoke(
        app,
        ["run", str(inbox), "--out", str(out), "--replay", str(RECORDINGS), "--config", str(config)],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.stderr
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    by_source = {Path(entry["source"].split(":")[0]).name: entry for entry in report["articles"]}
    assert by_source["m-fixture.txt"]["status"] == "ok"
    failed = [entry for entry in report["articles"] if entry["status"] == "failed"]
    assert {Path(e["source"].split(":")[0]).name for e in failed} == {
        "a-enormous.txt", "b-deep.json", "c-nested.html", "d-broken.jsonl", "e-binary.md", "f-whitespace.json"
    }  # fmt: skip
    assert len(failed) == 8, "each broken .jsonl line is its own entry"
    for entry in failed:
        assert entry["error"] and len(entry["error"].splitlines()) == 1, entry
    assert report["counts"]["ok"] == 1 and report["counts"]["failed"] == 8
    assert (out / "articles" / by_source["m-fixture.txt"]["id"] / "analysis.json").is_file()


def test_file_names_that_are_not_valid_in_the_file_system_encoding_do_not_stop_the_run(
    tmp_path: Path,
) -> None:
    """A GBK file name from an unzipped Chinese archive: its bytes are shown escaped in the report,
    the log and the console, and the run finishes (the report, the index and the feed written)."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    gbk_name = os.fsdecode(str(inputs).encode() + b"/" + "储能招标.txt".encode("gbk"))
    Path(gbk_name).write_bytes((ARTICLES / "energy-iron-air-storage.txt").read_bytes())
    Path(os.fsdecode(str(inputs).encode() + b"/" + "空.txt".encode("gbk"))).write_bytes(b"")
    result = run_newsdesk("run", inputs, "--replay", RECORDINGS, "--out", out)
    assert result.returncode == 1, result.stderr  # the empty file fails; the other is analysed
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    statuses = sorted((a["status"], a["source"]) for a in report["articles"])
    assert [status for status, _ in statuses] == ["failed", "ok"]
    assert all("\\x" in source and source.startswith(str(inputs)) for _, source in statuses), statuses
    assert (out / "index.html").is_file() and (out / "feed.xml").is_file()
    [log] = (out / "logs").glob("*.jsonl")
    assert all(json.loads(line) for line in log.read_text(encoding="utf-8").splitlines())
