"""Fuzzing (issue 6, item 8): property-based tests over ingestion and the figure parser.

Properties:

* ``pipeline.ingest.load_file`` never raises, whatever the bytes, for every supported suffix: each
  input gives at least one result, labelled with its path, and every failure reason is one line.
* ``pipeline.validate.figures.figures_in`` never raises on any text (unicode, CJK, digits, currency
  symbols), with or without ``liberal=True``; every figure it returns quotes the text as written,
  has a finite value and matches itself.

The examples are derandomized (``derandomize=True``), so CI runs the same short fuzz every time
(about 300 inputs per suffix) and a failure is reproducible.

Regression corpus: ``tests/fuzz_corpus/`` holds inputs that once crashed ``load_file`` (one file per
input; its suffix chooses the parser). ``test_corpus_input_never_raises`` replays every file there on
every run. To turn a new crash into a regression fixture:

1. hypothesis prints the falsifying example: the suffix is in the test id
   (``test_load_file_never_raises_on_generated_bytes[.md]``) and the bytes in the ``Draw 1 (data):``
   line, e.g. ``Draw 1 (data): b'---\\n0: 0000-00-00\\n---\\n'``;
2. save it to the corpus under a name that says what it is (from the repository root)::

       python -m tests.test_fuzz .md "b'---\\n0: 0000-00-00\\n---\\n'" front-matter-year-zero

   or, from Python, ``save_to_corpus(b"...", ".md", "front-matter-invalid-date")``;
3. commit the file with the fix. The replay test fails until the bug is fixed, and then guards it.

Crashes of ``figures_in`` are kept as ``@example(...)`` lines on the figure properties below.
"""

from __future__ import annotations

import ast
import codecs
import hashlib
import json
import math
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ingest import SUPPORTED_SUFFIXES, InputFailure, Limits, load_file
from pipeline.ingest.article import Article
from pipeline.validate.figures import Figure, figures_in

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
ARTICLES = ROOT / "fixtures" / "articles"
RECORDINGS = ROOT / "fixtures" / "recordings"
ID_PATTERN = re.compile(r"^[a-z0-9-]+$")
FUZZ_LIMITS = Limits(max_input_bytes=200_000, max_input_tokens=200)
FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


# --- the corpus -----------------------------------------------------------------------------------------


def save_to_corpus(data: bytes, suffix: str, name: str | None = None, corpus: Path = CORPUS) -> Path:
    """Save one crashing input as a regression fixture; returns its path.

    The file is ``<corpus>/<name><suffix>`` (``name`` defaults to ``crash-`` and a hash of the bytes).
    Saving the same input twice is harmless; reusing a name for other bytes is refused.
    """
    suffix = suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"suffix {suffix!r} is not one of {', '.join(SUPPORTED_SUFFIXES)}")
    stem = name or f"crash-{hashlib.sha256(data).hexdigest()[:12]}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", stem):
        raise ValueError(f"corpus name {stem!r}: use letters, digits, '.', '_' and '-'")
    path = corpus / f"{stem}{suffix}"
    if path.exists() and path.read_bytes() != data:
        raise FileExistsError(f"{path} already holds another input; choose another name")
    corpus.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_file() and not p.name.startswith("."))


# Inputs found earlier (ingestion hardening) and by this fuzz; each once raised out of load_file.
SEEDED = {
    "utf16-bom-odd-length.txt", "utf16-lone-surrogate.txt", "deep-array.json", "deep-array.jsonl",
    "integer-5000-digits.json", "integer-5000-digits.jsonl", "lone-surrogate-escape.json",
    "lone-surrogate-escape.jsonl", "deep-yaml-front-matter.md", "undefined-charset.html",
    "nul-in-the-middle.txt", "nul-in-the-middle.jsonl", "front-matter-invalid-date.md",
    "front-matter-invalid-hour.md", "front-matter-bad-bool-tag.md", "front-matter-bad-timestamp-tag.markdown",
    "front-matter-year-zero.md", "front-matter-empty-int-tag.md",
}  # fmt: skip


def assert_well_formed(path: Path, loaded: list[Article | InputFailure]) -> None:
    assert loaded, "every input gives at least one result"
    for item in loaded:
        assert isinstance(item, Article | InputFailure), item
        assert item.label.startswith(str(path)), item.label
        if isinstance(item, InputFailure):
            assert item.reason.strip(), "a failure has a reason"
            assert len(item.reason.splitlines()) == 1, repr(item.reason)
        else:
            assert item.title.strip() and item.text.strip()
            assert ID_PATTERN.match(item.id) and item.id.endswith(item.content_sha256[:10]), item.id


def test_the_corpus_holds_the_known_pathological_inputs() -> None:
    names = {p.name for p in corpus_files()}
    assert names >= SEEDED, f"missing from {CORPUS}: {sorted(SEEDED - names)}"
    assert {p.suffix for p in corpus_files()} <= set(SUPPORTED_SUFFIXES), "a corpus file is never skipped"


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_input_never_raises(path: Path) -> None:
    assert_well_formed(path, list(load_file(path, Limits())))


def test_a_run_over_the_corpus_fails_each_bad_input_alone(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for path in corpus_files():
        (inbox / path.name).write_bytes(path.read_bytes())
    fixture = ARTICLES / "energy-iron-air-storage.txt"
    (inbox / "zz-fixture.txt").write_bytes(fixture.read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(inbox), "--out", str(out), "--replay", str(RECORDINGS)])
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert result.exit_code == 1, result.stderr
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    sources = {Path(entry["source"].split(":")[0]).name for entry in report["articles"]}
    assert sources == {p.name for p in corpus_files()} | {"zz-fixture.txt"}, "every input is reported"
    statuses = {Path(e["source"]).name: e["status"] for e in report["articles"] if ":" not in e["source"]}
    assert statuses["zz-fixture.txt"] == "ok"


def test_save_to_corpus_writes_a_replayable_named_file(tmp_path: Path) -> None:
    data = b"---\ntitle: [\n---\n"
    path = save_to_corpus(data, ".MD", "yaml-open-bracket", corpus=tmp_path)
    assert path == tmp_path / "yaml-open-bracket.md" and path.read_bytes() == data
    assert save_to_corpus(data, ".md", "yaml-open-bracket", corpus=tmp_path) == path, "idempotent"
    odd = b"\xff\xfe"
    unnamed = save_to_corpus(odd, ".txt", corpus=tmp_path)
    assert unnamed.name == f"crash-{hashlib.sha256(odd).hexdigest()[:12]}.txt"
    with pytest.raises(FileExistsError):
        save_to_corpus(b"other bytes", ".md", "yaml-open-bracket", corpus=tmp_path)
    with pytest.raises(ValueError, match="suffix"):
        save_to_corpus(data, ".pdf", corpus=tmp_path)
    with pytest.raises(ValueError, match="name"):
        save_to_corpus(data, ".md", "../escape", corpus=tmp_path)
    assert_well_formed(path, list(load_file(path, Limits())))


# --- generated inputs, per suffix -----------------------------------------------------------------------

BOMS = [b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "gb18030", "gbk", "big5", "big5hkscs", "latin-1",
             "cp1252", "shift_jis", "utf-32"]  # fmt: skip
PIECES = st.sampled_from([
    "Title", "标题", "Source", "来源", "URL", "链接", "Published", "发布时间", "Author", "作者",
    "the", "council", "approved", "budget", "新闻", "报道", "台灣", "經濟", "央行", "降准",
    "$9.5bn", "9亿美元", "35%", ":", "：", "\n", "\n\n", "\r\n", " ", "\t", "---", "#",
    "<p>", "</p>", "{", "}", "[", "]", '"', "\\", "\\ud800", "\u3000",
    "\u2028", "\x85", "\x0b", "\ufeff", "\U0001f600", "İ", "ſ", "\x00", "&amp;", "&#0;", "&#xD800;",
])  # fmt: skip
TEXT = st.one_of(st.text(max_size=300), st.lists(PIECES, max_size=80).map("".join))


def _encode(pair: tuple[str, str]) -> bytes:
    text, encoding = pair
    if encoding == "utf-8":
        return text.encode("utf-8", "surrogatepass")  # lone surrogates make invalid UTF-8 on purpose
    return text.encode(encoding, "replace")


def encoded(texts: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return st.tuples(texts, st.sampled_from(ENCODINGS)).map(_encode)


RAW = st.one_of(
    st.binary(max_size=1500),
    st.tuples(st.sampled_from(BOMS), st.binary(max_size=600)).map(b"".join),
    encoded(TEXT),
)
KEYS = st.sampled_from(["title", "text", "content", "body", "language", "url", "source", "author",
                        "published_at", "published", "date"])  # fmt: skip
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), children, max_size=6),
    ),
    max_leaves=20,
)
RECORD = st.dictionaries(KEYS, st.one_of(TEXT, JSON_VALUES), max_size=8)


def _dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


JSON_TEXT = st.one_of(
    RECORD.map(_dump),
    JSON_VALUES.map(_dump),
    st.tuples(RECORD.map(_dump), st.integers(0, 400)).map(lambda pair: pair[0][: pair[1]]),  # cut short
    st.tuples(st.sampled_from(["[", '{"a":', '"\\ud800', "1" * 50]), st.integers(1, 1000)).map(
        lambda pair: pair[0] * pair[1]
    ),
)
JSONL = st.one_of(
    st.lists(st.one_of(encoded(JSON_TEXT), st.binary(max_size=80)), max_size=12).map(
        lambda lines: b"\n".join(line.replace(b"\n", b" ") for line in lines)
    ),
    st.lists(st.one_of(JSON_TEXT, TEXT), max_size=12).map(
        lambda lines: "\r\n".join(lines).encode("utf-8", "surrogatepass")
    ),
    RAW,
)
HEADER = st.lists(
    st.tuples(PIECES, st.sampled_from([":", "：", ""]), TEXT.map(lambda t: t[:40])), max_size=6
).map(lambda rows: "\n".join(f"{label}{colon}{value}" for label, colon, value in rows))
TXT = st.one_of(
    encoded(st.tuples(HEADER, st.sampled_from(["\n\n", "\n", "\r\n\r\n"]), TEXT).map("".join)), RAW
)
YAML = st.one_of(
    st.lists(st.tuples(PIECES, TEXT.map(lambda t: t[:60])), max_size=6).map(
        lambda rows: "\n".join(f"{key}: {value}" for key, value in rows)
    ),
    st.sampled_from([
        "title: [", "title: {a: [b, {c: d}]}", "&a [*a]", "!!python/object:os.system ls",
        "title: !!binary aGk=",
        "? [a]\n: b", "- a\n- b", "title: *x", "title: 12e3", "%YAML 1.1\n---", 'title: "\\ud800"',
        "a: &a [*a, *a]", "title: 0x1F", "<<: {title: x}", "published: 2026-01-31", "title: ~",
    ]),
    st.integers(1, 600).map(lambda n: "title: " + "[" * n),
    st.tuples(st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25)).map(
        lambda t: f"published: {t[0]:04d}-{t[1]:02d}-{t[2]:02d}" + (f" {t[3]:02d}:30:00" if t[3] % 2 else "")
    ),
    st.tuples(
        st.sampled_from(["!!int", "!!float", "!!bool", "!!timestamp", "!!binary", "!!null", "!!set"]),
        TEXT.map(lambda t: t[:20]),
    ).map(lambda t: f"title: Story\ndraft: {t[0]} {t[1]}"),
    TEXT,
)  # fmt: skip
MD = st.one_of(
    encoded(
        st.tuples(
            st.sampled_from(["---\n", "---\r\n", "--- \n", ""]), YAML,
            st.sampled_from(["\n---\n", "\r\n---\r\n", "\n---", ""]), TEXT,
        ).map("".join)
    ),
    RAW,
)  # fmt: skip
TAGS = st.sampled_from([
    "div", "p", "span", "article", "main", "h1", "title", "script", "style", "table", "tr", "td", "br",
    "meta", "body", "head", "html", "svg", "math", "template", "noscript", "iframe", "!--", "![CDATA[",
])  # fmt: skip
CHARSETS = st.sampled_from([
    "utf-8", "gb2312", "gbk", "big5", "utf-16", "utf-32", "undefined", "base64", "rot13", "hex", "zlib",
    "idna", "punycode", "unicode_escape", "raw_unicode_escape", "utf-7", "x-unknown", "latin-1", "ascii",
    "charmap", "uu", "bz2", "quopri", "shift_jis",
])  # fmt: skip


def _page(parts: tuple[str, str, list[tuple[str, str, bool]]]) -> str:
    charset, title, blocks = parts
    body = "".join(f"<{tag}>{text}" + (f"</{tag}>" if closed else "") for tag, text, closed in blocks)
    return f'<html><head><meta charset="{charset}"><title>{title}</title></head><body>{body}</body></html>'


PAGE = st.tuples(
    CHARSETS, TEXT.map(lambda t: t[:80]), st.lists(st.tuples(TAGS, TEXT, st.booleans()), max_size=25)
)
HTML = st.one_of(
    encoded(PAGE.map(_page)),
    st.integers(1, 1000).map(
        lambda n: ("<div>" * n + "The council approved the budget for the bridge.").encode()
    ),
    RAW,
)
BY_SUFFIX: dict[str, st.SearchStrategy[bytes]] = {
    ".txt": TXT, ".md": MD, ".markdown": MD, ".html": HTML, ".htm": HTML, ".json": encoded(JSON_TEXT) | RAW,
    ".jsonl": JSONL,
}  # fmt: skip


def test_every_supported_suffix_is_fuzzed() -> None:
    assert set(BY_SUFFIX) == set(SUPPORTED_SUFFIXES)


@pytest.mark.parametrize("suffix", sorted(BY_SUFFIX))
@settings(FUZZ, report_multiple_bugs=False)  # one falsifying example (shrinking several takes long)
@given(data=st.data())
def test_load_file_never_raises_on_generated_bytes(
    tmp_path_factory: pytest.TempPathFactory, suffix: str, data: st.DataObject
) -> None:
    raw = data.draw(BY_SUFFIX[suffix], label="data")
    path = tmp_path_factory.mktemp("fuzz") / f"input{suffix}"
    path.write_bytes(raw)
    assert_well_formed(path, list(load_file(path, FUZZ_LIMITS)))


# --- the figure parser ----------------------------------------------------------------------------------

FIGURE_PIECES = st.sampled_from([
    "$", "US$", "HK$", "€", "£", "¥", "￥", "RMB", "USD", "9", "0", "1", "2025", "3.5", ".5", "1,000",
    ",", ".", "-", "–", "~", "～", "to", " ", "\n", "%", "％", "percent", "per cent",
    "percentage points", "bps",
    "basis points", "million", "bn", "m", "b", "k", "tn", "MWh", "GWh", "kW", "miles", "tonnes", "hours",
    "days", "TEU", "亿", "万", "千", "百", "十", "零", "〇", "一", "二", "两", "三", "九", "点",
    "百分之", "个百分点", "个基点", "美元", "元", "人民币", "港元", "吨", "兆瓦时", "年", "月",
    "月份", "季度", "第", "多", "余", "左右", "约",
    "Q1", "Q4", "first quarter", "fourth-quarter", "May", "December", "in May", "half a million", "twenty",
    "dozen", "ﬁ", "٣", "３", "²", "½", "Ⅻ", "mid-", "COVID-19", "H200", "10-K", "the", "revenue", "rose",
    "about", "nearly", "of", "in", "\u3000", "\u200b", "\U0001f4b0",
])  # fmt: skip
# Letters that regular expressions match case-insensitively but that lower() does not map to ASCII:
# "ſ" (long s) matches "s", "İ" (dotted capital I) matches "i", the Kelvin sign matches "k".
CASE_TWINS = {"s": "ſ", "i": "İ", "k": "\u212a"}
UNIT_WORDS = st.sampled_from([
    "miles", "tonnes", "hours", "days", "kilometres", "watts", "kWh", "billion", "thousand",
    "first quarter", "six", "percent", "basis points", "dollars", "yuan", "bps", "bn", "k",
])  # fmt: skip


def _twin(pair: tuple[str, int]) -> str:
    word, mask = pair
    return "".join(CASE_TWINS.get(ch.lower(), ch) if (mask >> i) & 1 else ch for i, ch in enumerate(word))


FIGURE_TEXT = st.one_of(
    st.text(max_size=200),
    st.text(st.characters(categories=["Nd", "No", "Sc", "Lo", "Zs", "Pd", "Po"]), max_size=120),
    st.lists(st.one_of(FIGURE_PIECES, st.text(max_size=3)), max_size=40).map("".join),
    st.lists(
        st.one_of(FIGURE_PIECES, st.tuples(UNIT_WORDS, st.integers(0, 2**12)).map(_twin),
                  st.sampled_from([" ", "5 ", "the ", "half a "])),
        max_size=20,
    ).map("".join),
    st.tuples(
        st.sampled_from(["$", "", "约", "US$"]), st.integers(300, 2000),
        st.sampled_from(["", " million", "亿元", "%"]),
    ).map(lambda parts: f"{parts[0]}{'9' * parts[1]}{parts[2]}"),
)  # fmt: skip
CRASHERS = ["5 mileſ", "about 5 MİLES", "the firſt quarter", "3 daYſ", "5 kİlometres"]
LIBERAL_CRASHERS = ["ſix people", "half a thouſand"]


@FUZZ
@given(text=FIGURE_TEXT, liberal=st.booleans())
@example(text=CRASHERS[0], liberal=False)
@example(text=CRASHERS[1], liberal=False)
@example(text=CRASHERS[2], liberal=False)
@example(text=CRASHERS[3], liberal=True)
@example(text=CRASHERS[4], liberal=True)
@example(text=LIBERAL_CRASHERS[0], liberal=True)
@example(text=LIBERAL_CRASHERS[1], liberal=True)
def test_figures_in_never_raises(text: str, liberal: bool) -> None:
    found = figures_in(text, liberal=liberal)
    assert isinstance(found, list)
    for figure in found:
        assert isinstance(figure, Figure)
        assert figure.kind in ("money", "percent", "year", "quarter", "month", "period", "quantity", "number")
        assert figure.text and figure.text in text, "a figure quotes the text as written"


@FUZZ
@given(text=FIGURE_TEXT, liberal=st.booleans())
@example(text="revenue of $" + "9" * 400 + " million", liberal=False)
@example(text="约" + "9" * 400 + "亿元", liberal=True)
def test_every_figure_has_a_finite_value_and_matches_itself(text: str, liberal: bool) -> None:
    for figure in figures_in(text, liberal=liberal):
        assert math.isfinite(figure.value) and math.isfinite(figure.tolerance), figure
        assert figure.matches(figure), f"{figure.text!r} does not match itself"


# --- command line: python -m tests.test_fuzz SUFFIX BYTES-LITERAL [NAME] ----------------------------------


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    data = ast.literal_eval(argv[1])
    if not isinstance(data, bytes):
        print("the input must be a bytes literal, as hypothesis prints it: b'...'", file=sys.stderr)
        return 2
    print(save_to_corpus(data, argv[0], argv[2] if len(argv) == 3 else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
