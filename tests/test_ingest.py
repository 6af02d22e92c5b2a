"""Ingestion: real files in tmp_path (bytes written explicitly) through discover, load_file, load_articles."""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest import InputFailure, Limits, discover, load_articles, load_file
from pipeline.ingest.article import Article, estimate_tokens
from pipeline.ingest.decode import declared_html_charset
from pipeline.ingest.formats import MAX_JSON_DEPTH

ROOT = Path(__file__).resolve().parent.parent
ARTICLES = ROOT / "fixtures" / "articles"
ID_PATTERN = re.compile(r"^[a-z0-9-]+$")
LIMITS = Limits()

EN_TITLE = "Duke Energy orders iron-air batteries for multi-day storage"
EN_P1 = (
    "Duke Energy has agreed to buy 85 megawatts of iron-air batteries from Form Energy, a fleet able to "
    "discharge continuously for up to 100 hours."
)
EN_P2 = "The order is the largest yet for so-called multi-day storage, the company said on Tuesday."
EN_BODY = f"{EN_P1}\n\n{EN_P2}"
ZH_TITLE = "央行宣布降准0.5个百分点 释放长期流动性约一万亿元"
ZH_P1 = (
    "中国人民银行宣布下调金融机构存款准备金率。市场人士指出，此举有助于稳定经济增长，降低实体经济融资成本。"
)
ZH_P2 = "分析人士认为，降准将降低银行资金成本，并为政府债券发行提供流动性支持。"
ZH_BODY = f"{ZH_P1}\n\n{ZH_P2}"
TW_TITLE = "台積電宣布擴大先進製程投資 預計明年量產"
TW_BODY = (
    "台灣積體電路製造公司今日宣布，將在新竹科學園區興建新廠，總投資金額約新台幣五千億元。\n\n"
    "公司表示，新廠預計於明年第三季開始量產，並將創造數千個工作機會。"
)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def load_one(path: Path, limits: Limits = LIMITS) -> Article | InputFailure:
    loaded = list(load_file(path, limits))
    assert len(loaded) == 1, loaded
    return loaded[0]


def article(path: Path, limits: Limits = LIMITS) -> Article:
    item = load_one(path, limits)
    assert isinstance(item, Article), item
    return item


def failure(path: Path, limits: Limits = LIMITS) -> InputFailure:
    item = load_one(path, limits)
    assert isinstance(item, InputFailure), item
    return item


def assert_one_line(reason: str) -> None:
    assert reason.strip(), "a failure has a reason"
    assert len(reason.splitlines()) == 1, reason


# --- .txt -------------------------------------------------------------------------------------------------


def test_txt_english_header_block_fills_every_field(tmp_path: Path) -> None:
    path = write(
        tmp_path / "iron-air.txt",
        f"Title: {EN_TITLE}\nSource: Grid Ledger\nURL: https://www.gridledger.com/2026/03/17/iron-air\n"
        f"Published: 2026-03-17\nAuthor: Rachel Okafor\n\n{EN_BODY}\n",
    )
    loaded = article(path)
    assert (loaded.title, loaded.text) == (EN_TITLE, EN_BODY)
    assert loaded.source == "Grid Ledger"
    assert loaded.url == "https://www.gridledger.com/2026/03/17/iron-air"
    assert loaded.published_at == "2026-03-17"
    assert loaded.author == "Rachel Okafor"
    assert loaded.language == "en"
    assert loaded.input_path == str(path)


@pytest.mark.parametrize(("first", "second"), [(":", ":"), ("：", "："), ("：", ":"), (":", "：")])
def test_txt_chinese_header_labels_with_either_colon(tmp_path: Path, first: str, second: str) -> None:
    header = (
        f"标题{first}{ZH_TITLE}\n来源{second}金融观察网\n链接{first} https://www.finwatch.com.cn/macro/rrr.html\n"
        f"发布时间{second}2026-06-06\n作者{first}周文博\n"
    )
    loaded = article(write(tmp_path / "rrr.txt", f"{header}\n{ZH_BODY}\n"))
    assert (loaded.title, loaded.text) == (ZH_TITLE, ZH_BODY)
    assert loaded.source == "金融观察网"
    assert loaded.url == "https://www.finwatch.com.cn/macro/rrr.html"
    assert loaded.published_at == "2026-06-06"
    assert loaded.author == "周文博"
    assert loaded.language == "zh"


def test_txt_traditional_chinese_header_labels(tmp_path: Path) -> None:
    """Big5 sources from Taiwan and Hong Kong write their labels in Traditional characters."""
    title = "台積電公布第一季財報"
    header = (
        f"標題：{title}\n來源：經濟日報\n連結：https://money.udn.com/x\n發布時間：2026-04-17\n作者：李明\n"
    )
    path = tmp_path / "tsmc.txt"
    path.write_bytes(f"{header}\n{ZH_BODY}\n".encode("big5", "replace"))
    loaded = article(path)
    assert (loaded.title, loaded.source, loaded.url) == (title, "經濟日報", "https://money.udn.com/x")
    assert (loaded.published_at, loaded.author) == ("2026-04-17", "李明")


@pytest.mark.parametrize(
    ("written", "iso"),
    [
        ("2026-06-06", "2026-06-06"),
        ("2026-06-06T10:30:00Z", "2026-06-06T10:30:00Z"),
        ("June 6, 2026", "2026-06-06"),
        ("Jun. 6 2026", "2026-06-06"),
        ("Saturday, June 6th, 2026", "2026-06-06"),
        ("6 June 2026", "2026-06-06"),
        ("June 6, 2026 at 3:04 p.m.", "2026-06-06T15:04"),
        ("June 6, 2026 12:15 AM", "2026-06-06T00:15"),
        ("Sat, 06 Jun 2026 10:30:00 GMT", "2026-06-06T10:30:00+00:00"),
        ("06 Jun 2026 10:30:00 +0800", "2026-06-06T10:30:00+08:00"),
        ("2026年6月6日", "2026-06-06"),
        ("2026年6月6日 10:30", "2026-06-06T10:30"),
        ("2026年06月06日10:30:00", "2026-06-06T10:30:00"),
        ("2026/6/6", "2026-06-06"),
        ("2026.06.06 10:30", "2026-06-06T10:30"),
        ("June 6, 2026 25:99", "2026-06-06"),  # an impossible time: the date alone
        ("February 30, 2026", "February 30, 2026"),  # not a date: kept as written
        ("Spring 2026", "Spring 2026"),
        ("2026年6月", "2026年6月"),
        ("  June   6, 2026 ", "2026-06-06"),
    ],
)
def test_publication_dates_in_known_forms_become_iso(tmp_path: Path, written: str, iso: str) -> None:
    loaded = article(write(tmp_path / "dated.txt", f"Title: {EN_TITLE}\nPublished: {written}\n\n{EN_BODY}\n"))
    assert loaded.published_at == iso


def test_a_chinese_header_date_becomes_iso(tmp_path: Path) -> None:
    header = f"标题：{ZH_TITLE}\n发布时间：2026年6月6日 10:30\n"
    assert article(write(tmp_path / "rrr.txt", f"{header}\n{ZH_BODY}\n")).published_at == "2026-06-06T10:30"


def test_txt_without_header_takes_first_line_as_title(tmp_path: Path) -> None:
    loaded = article(write(tmp_path / "plain.txt", f"{EN_TITLE}\n\n{EN_BODY}\n"))
    assert (loaded.title, loaded.text) == (EN_TITLE, EN_BODY)
    assert (loaded.source, loaded.url, loaded.published_at, loaded.author) == (None, None, None, None)


def test_txt_title_with_an_unknown_label_and_colon_is_a_plain_title(tmp_path: Path) -> None:
    title = "Breaking: Fed holds rates steady for a third meeting"
    loaded = article(write(tmp_path / "breaking.txt", f"{title}\n\n{EN_BODY}\n"))
    assert (loaded.title, loaded.text) == (title, EN_BODY)


def test_txt_body_lines_with_colons_after_the_header_stay_in_the_body(tmp_path: Path) -> None:
    body = f"Author: a line of the story, not the byline.\nSource: the company's filing.\n\n{EN_P2}"
    path = write(tmp_path / "colons.txt", f"Title: Fed: rates on hold\nAuthor: Jane Doe\n\n{body}\n")
    loaded = article(path)
    assert loaded.title == "Fed: rates on hold"
    assert loaded.author == "Jane Doe"
    assert loaded.source is None
    assert loaded.text == body


def test_txt_crlf_newlines_are_normalised(tmp_path: Path) -> None:
    data = f"Title: {EN_TITLE}\r\nAuthor: Jane Doe\r\n\r\n{EN_P1}\r\n\r\n\r\n\r\n{EN_P2}\r\n"
    loaded = article(write(tmp_path / "crlf.txt", data))
    assert (loaded.title, loaded.text, loaded.author) == (EN_TITLE, EN_BODY, "Jane Doe")


# --- encodings ---------------------------------------------------------------------------------------------

GB18030_ONLY = (  # U+20000 is outside GBK: GB18030 writes it in four bytes
    "国家统计局发布数据𠀀显示，一季度国内生产总值同比增长百分之五点三。\n\n分析人士指出，消费和投资均有所回升。"
)


@pytest.mark.parametrize(
    ("encoding", "title", "body"),
    [
        ("utf-8", ZH_TITLE, ZH_BODY),
        ("utf-8-sig", ZH_TITLE, ZH_BODY),
        ("utf-8-sig", EN_TITLE, EN_BODY),
        ("gbk", ZH_TITLE, ZH_BODY),
        ("gb18030", ZH_TITLE, ZH_BODY),
        ("gb18030", "国家统计局：一季度经济增长百分之五点三", GB18030_ONLY),
        ("big5", TW_TITLE, TW_BODY),
    ],
)
def test_txt_encodings_decode_to_the_original_strings(
    tmp_path: Path, encoding: str, title: str, body: str
) -> None:
    data = f"{title}\n\n{body}\n".encode(encoding)
    if encoding == "utf-8-sig":
        assert data.startswith(codecs.BOM_UTF8)
    loaded = article(write(tmp_path / "encoded.txt", data))
    assert (loaded.title, loaded.text) == (title, body)
    assert not loaded.title.startswith("\ufeff")


@pytest.mark.parametrize(
    ("encoding", "title_label", "title", "body", "author"),
    [
        ("utf-8-sig", "标题", ZH_TITLE, ZH_BODY, "周文博"),
        ("gbk", "标题", ZH_TITLE, ZH_BODY, "周文博"),
        # Big5 cannot encode the Simplified labels 标题/来源/链接/发布时间; 作者 and the English ones it can.
        ("big5", "Title", TW_TITLE, TW_BODY, "周文博"),
    ],
)
def test_txt_header_block_survives_legacy_encodings(
    tmp_path: Path, encoding: str, title_label: str, title: str, body: str, author: str
) -> None:
    data = f"{title_label}：{title}\n作者：{author}\n\n{body}\n".encode(encoding)
    loaded = article(write(tmp_path / "header.txt", data))
    assert (loaded.title, loaded.text, loaded.author) == (title, body, author)


ZH_HTML_TITLE = "极曜智能完成7亿美元B轮融资"
ZH_HTML_P1 = (
    "北京大模型初创公司极曜智能宣布完成7亿美元B轮融资，投后估值达到40亿美元，本轮资金中超过百分之六十五将用于"
    "算力建设和模型训练。公司创始人表示，新资金将帮助公司在未来两年内把训练算力扩大三倍。"
)
ZH_HTML_P2 = "本轮融资由红杉中国领投，腾讯等老股东跟投。业内人士指出，国内大模型赛道的融资规模今年明显回升。"
GB2312_PAGE = f"""<!DOCTYPE html>
<html>
<head>
<title>{ZH_HTML_TITLE}_科创日报</title>
<meta name="keywords" content="极曜智能,大模型,融资">
<link rel="stylesheet" type="text/css" href="/static/css/article.css">
<script type="text/javascript" src="/static/js/jquery.min.js"></script>
<meta http-equiv="Content-Type" content="text/html; charset=gb2312">
</head>
<body>
<div class="article"><h1>{ZH_HTML_TITLE}</h1>
<p>{ZH_HTML_P1}</p>
<p>{ZH_HTML_P2}</p>
</div>
</body>
</html>
"""


def test_gb2312_declared_page_in_gbk_with_late_meta_decodes(tmp_path: Path) -> None:
    data = GB2312_PAGE.encode("gbk")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert declared_html_charset(data) == "gb18030"
    loaded = article(write(tmp_path / "funding.html", data))
    assert loaded.title == ZH_HTML_TITLE
    assert loaded.text == f"{ZH_HTML_P1}\n\n{ZH_HTML_P2}"
    assert loaded.language == "zh"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b'<meta charset="GB2312">', "gb18030"),
        (b"<meta http-equiv='Content-Type' content='text/html; charset=gbk'>", "gb18030"),
        (b'<meta charset="big5">', "big5hkscs"),
        (b"<meta charset=utf-8>", "utf-8"),
        (b'<meta charset="no-such-codec">', None),
        (b"<title>no declaration</title>", None),
    ],
)
def test_declared_html_charset(head: bytes, expected: str | None) -> None:
    page = b"<html><head><title>t</title><link rel=x href=y>" + head + b"</head><body></body></html>"
    assert declared_html_charset(page) == expected


# --- .md ---------------------------------------------------------------------------------------------------


def test_md_front_matter_fills_fields_and_drops_a_repeated_heading(tmp_path: Path) -> None:
    data = (
        f'---\ntitle: "{EN_TITLE}"\nsource: Grid Ledger\nurl: https://example.com/a\npublished: 2026-03-17\n'
        f"author: Rachel Okafor\n---\n\n# {EN_TITLE}\n\n{EN_BODY}\n"
    )
    loaded = article(write(tmp_path / "story.md", data))
    assert (loaded.title, loaded.text) == (EN_TITLE, EN_BODY)
    assert (loaded.source, loaded.url) == ("Grid Ledger", "https://example.com/a")
    assert (loaded.published_at, loaded.author) == ("2026-03-17", "Rachel Okafor")


def test_md_without_front_matter_uses_the_heading_as_title(tmp_path: Path) -> None:
    loaded = article(write(tmp_path / "story.markdown", f"## {ZH_TITLE}\n\n{ZH_BODY}\n"))
    assert (loaded.title, loaded.text, loaded.author) == (ZH_TITLE, ZH_BODY, None)


@pytest.mark.parametrize(
    ("front", "reason_start"),
    [
        ("title: [unclosed\nauthor: x", "malformed YAML front matter: "),
        ("title: a\n  bad: - indentation: here", "malformed YAML front matter: "),
        ("- just\n- a list", "YAML front matter is not a mapping"),
    ],
)
def test_md_bad_front_matter_fails_with_a_reason(tmp_path: Path, front: str, reason_start: str) -> None:
    failed = failure(write(tmp_path / "bad.md", f"---\n{front}\n---\n\n{EN_BODY}\n"))
    assert failed.reason.startswith(reason_start)
    assert_one_line(failed.reason)


# --- .html -------------------------------------------------------------------------------------------------

HTML_PARAGRAPHS = [
    "The regional grid operator approved a plan on Tuesday to add 4 gigawatts of battery storage by 2028, "
    "the largest such commitment in its history, as demand from data centres keeps rising.",
    "Officials said the storage fleet would cost about $3.2 billion and would be paid for through a capacity "
    "charge spread across all customers over fifteen years.",
    "Consumer groups said the plan was sensible but asked the regulator to publish the cost assumptions "
    "before the first contracts are signed later this year.",
]
HTML_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Grid operator approves 4 GW battery plan | Power Desk</title>
<link rel="canonical" href="https://www.powerdesk.example/2026/05/12/grid-battery-plan">
<meta property="article:published_time" content="2026-05-12T08:00:00Z">
<meta name="author" content="Jane Doe">
</head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/markets">Markets newsletter signup</a></li></ul></nav>
<article>
<h1>Grid operator approves 4 GW battery plan</h1>
{"".join(f"<p>{p}</p>" for p in HTML_PARAGRAPHS)}
</article>
<footer><p>Copyright 2026 Power Desk. All rights reserved. Privacy policy and cookie settings.</p></footer>
</body>
</html>
"""


@pytest.mark.parametrize("suffix", [".html", ".htm"])
def test_html_main_text_and_metadata_through_trafilatura(tmp_path: Path, suffix: str) -> None:
    loaded = article(write(tmp_path / f"grid{suffix}", HTML_PAGE))
    assert loaded.title == "Grid operator approves 4 GW battery plan"
    assert loaded.text == "\n\n".join(HTML_PARAGRAPHS)
    for boilerplate in ("Home", "newsletter", "Copyright", "Privacy", "cookie"):
        assert boilerplate not in loaded.text
    assert loaded.published_at == "2026-05-12"
    assert loaded.url == "https://www.powerdesk.example/2026/05/12/grid-battery-plan"
    assert loaded.author == "Jane Doe"
    assert loaded.language == "en"


# --- .json / .jsonl ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["text", "content", "body"])
def test_json_text_keys(tmp_path: Path, key: str) -> None:
    record = {"title": EN_TITLE, key: EN_BODY, "url": "https://example.com/x", "source": "Wire",
              "published_at": "2026-01-02", "author": "A. Writer"}  # fmt: skip
    loaded = article(write(tmp_path / "one.json", json.dumps(record)))
    assert (loaded.title, loaded.text) == (EN_TITLE, EN_BODY)
    assert (loaded.url, loaded.source, loaded.published_at, loaded.author) == (
        "https://example.com/x",
        "Wire",
        "2026-01-02",
        "A. Writer",
    )


def test_json_empty_text_falls_through_to_content(tmp_path: Path) -> None:
    record = {"title": ZH_TITLE, "text": "   ", "content": ZH_BODY}
    loaded = article(write(tmp_path / "one.json", json.dumps(record, ensure_ascii=False)))
    assert loaded.text == ZH_BODY


def test_json_list_fails(tmp_path: Path) -> None:
    failed = failure(write(tmp_path / "many.json", json.dumps([{"title": EN_TITLE, "text": EN_BODY}])))
    assert "found a list" in failed.reason
    assert_one_line(failed.reason)


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    data = '{\n  "title": "Fed holds rates",\n  "text": oops\n}\n'
    with pytest.raises(json.JSONDecodeError) as parsed:
        json.loads(data)
    failed = failure(write(tmp_path / "broken.json", data))
    assert failed.reason.startswith(
        f"malformed JSON at line {parsed.value.lineno} column {parsed.value.colno}"
    )
    assert parsed.value.lineno == 3
    assert failed.input_path == str(tmp_path / "broken.json")
    assert_one_line(failed.reason)


def test_jsonl_broken_line_fails_alone_with_path_and_line_labels(tmp_path: Path) -> None:
    good_1 = json.dumps({"title": EN_TITLE, "body": EN_BODY})
    good_3 = json.dumps({"title": ZH_TITLE, "content": ZH_BODY}, ensure_ascii=False)
    path = write(tmp_path / "briefs.jsonl", f'{good_1}\n{{"title": "broken", "text": \n{good_3}\n')
    loaded = list(load_file(path, LIMITS))
    assert [type(item) for item in loaded] == [Article, InputFailure, Article]
    assert [item.label for item in loaded] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    first, broken, third = loaded
    assert isinstance(first, Article) and isinstance(third, Article) and isinstance(broken, InputFailure)
    assert (first.title, first.text, first.language) == (EN_TITLE, EN_BODY, "en")
    assert (third.title, third.text, third.language) == (ZH_TITLE, ZH_BODY, "zh")
    assert broken.reason.startswith("malformed JSON at column "), "the label already names the line"
    assert_one_line(broken.reason)


def test_jsonl_error_position_is_within_the_one_line_record(tmp_path: Path) -> None:
    # The label names the file's line; the reason, the column within it (no "line 1" to mislead).
    path = write(tmp_path / "briefs.jsonl", '{"title": "ok", "text": "fine"}\n{"title": "broken", "text": \n')
    failed = list(load_file(path, LIMITS))[1]
    assert isinstance(failed, InputFailure)
    assert failed.label == f"{path}:2"
    assert failed.reason.startswith("malformed JSON at column 29"), failed.reason


def test_a_list_on_a_jsonl_line_is_one_article_object_too_few(tmp_path: Path) -> None:
    path = write(tmp_path / "briefs.jsonl", json.dumps([{"title": EN_TITLE, "text": EN_BODY}]) + "\n")
    (failed,) = load_file(path, LIMITS)
    assert isinstance(failed, InputFailure)
    assert failed.reason == "expected one article object on the line, found a list"


def test_jsonl_blank_lines_are_skipped_but_keep_line_numbers(tmp_path: Path) -> None:
    good = json.dumps({"title": EN_TITLE, "text": EN_BODY})
    path = write(tmp_path / "gaps.jsonl", f"\n{good}\n   \n{good}\n")
    assert [item.label for item in load_file(path, LIMITS)] == [f"{path}:2", f"{path}:4"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\n  \n", "empty file"),
        (
            json.dumps({"title": ZH_TITLE, "text": ZH_BODY}, ensure_ascii=False).encode("gbk"),
            "not valid UTF-8",
        ),
        (b'{"title": "Only a title here"}', "no article text found"),
        (b"[1, 2]", "found a list"),
    ],
)
def test_jsonl_bad_lines_give_one_line_reasons(tmp_path: Path, data: bytes, reason: str) -> None:
    loaded = list(load_file(write(tmp_path / "bad.jsonl", data + b"\n"), LIMITS))
    assert len(loaded) == 1
    assert isinstance(loaded[0], InputFailure)
    assert reason in loaded[0].reason
    assert_one_line(loaded[0].reason)


def test_jsonl_line_over_the_byte_cap_fails_alone(tmp_path: Path) -> None:
    short = json.dumps({"title": "Short story here", "text": "A brief text of the story."})
    long = json.dumps({"title": "Long story here", "text": "word " * 100})
    path = write(tmp_path / "mixed.jsonl", f"{short}\n{long}\n")
    loaded = list(load_file(path, Limits(max_input_bytes=len(short) + 10)))
    assert isinstance(loaded[0], Article)
    assert isinstance(loaded[1], InputFailure)
    assert loaded[1].label == f"{path}:2"
    assert "byte cap" in loaded[1].reason


# --- bad inputs fail alone ---------------------------------------------------------------------------------

BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("empty.txt", b"", "empty file"),
    ("blank.md", b" \n\t\r\n   \n", "empty file"),
    ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "binary file, not text"),
    ("nul.json", b'{"title": "x", "text": "a\x00b"}', "binary file, not text"),
    # 0x80 and 0xFF are lead bytes in neither GB18030 nor Big5, and no single-byte codec reads this as text.
    ("garbage.txt", bytes(range(0x80, 0x100)) * 3, "not valid text in any known encoding"),
    ("header-only.txt", f"Title: {EN_TITLE}\nAuthor: Jane Doe\n".encode(), "no article text found"),
    ("title-only.txt", EN_TITLE.encode(), "no article text found"),
    ("front-only.md", f"---\ntitle: {EN_TITLE}\n---\n".encode(), "no article text found"),
    ("no-text.json", json.dumps({"title": EN_TITLE, "text": ["not", "a", "string"]}).encode(), "no article"),
    (
        "no-body.html",
        b"<html><head><title>A page title</title></head><body> </body></html>",
        "no article text",
    ),
]


@pytest.mark.parametrize(("name", "data", "reason"), BAD_INPUTS, ids=[bad[0] for bad in BAD_INPUTS])
def test_bad_input_fails_alone_and_the_folder_still_loads(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    write(tmp_path / "a-good.txt", f"{EN_TITLE}\n\n{EN_BODY}\n")
    bad = write(tmp_path / f"b-{name}", data)
    write(tmp_path / "c-good.json", json.dumps({"title": ZH_TITLE, "text": ZH_BODY}, ensure_ascii=False))
    loaded = list(load_articles([tmp_path]))
    assert [item.label for item in loaded] == [
        str(tmp_path / "a-good.txt"),
        str(bad),
        str(tmp_path / "c-good.json"),
    ]
    good_1, failed, good_2 = loaded
    assert isinstance(good_1, Article) and isinstance(good_2, Article)
    assert isinstance(failed, InputFailure)
    assert reason in failed.reason
    assert_one_line(failed.reason)


def test_file_over_the_byte_cap_fails(tmp_path: Path) -> None:
    small = write(tmp_path / "a.txt", f"{EN_TITLE}\n\nA short but real article body.")
    big = write(tmp_path / "b.txt", f"{EN_TITLE}\n\n{EN_BODY}")
    cap = small.stat().st_size + 1
    loaded = list(load_articles([tmp_path], Limits(max_input_bytes=cap)))
    assert isinstance(loaded[0], Article)
    assert isinstance(loaded[1], InputFailure)
    assert loaded[1].input_path == str(big)
    assert f"over the {cap:,}-byte cap" in loaded[1].reason
    assert_one_line(loaded[1].reason)


def test_unsupported_suffix_given_explicitly_fails(tmp_path: Path) -> None:
    pdf = write(tmp_path / "report.pdf", b"%PDF-1.7 something")
    good = write(tmp_path / "good.txt", f"{EN_TITLE}\n\n{EN_BODY}")
    loaded = list(load_articles([pdf, good]))
    assert isinstance(loaded[0], InputFailure)
    assert loaded[0].input_path == str(pdf)
    assert "unsupported file type .pdf" in loaded[0].reason
    assert_one_line(loaded[0].reason)
    assert isinstance(loaded[1], Article)


def test_missing_path_fails_and_the_rest_loads(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "gone.txt"
    good = write(tmp_path / "good.txt", f"{EN_TITLE}\n\n{EN_BODY}")
    loaded = list(load_articles([missing, good]))
    assert isinstance(loaded[0], InputFailure)
    assert loaded[0].input_path == str(missing)
    assert loaded[0].reason == "no such file or directory"
    assert isinstance(loaded[1], Article)


def test_load_file_on_a_vanished_file_fails_with_a_reason(tmp_path: Path) -> None:
    failed = failure(tmp_path / "vanished.txt")
    assert failed.reason == "No such file or directory"


# Inputs that currently raise out of load_file (and so abort a whole batch) instead of failing alone.
RAISING_INPUTS: list[tuple[str, bytes]] = [
    ("utf16-odd-length.txt", codecs.BOM_UTF16_LE + b"A"),
    ("utf16-lone-surrogate.txt", codecs.BOM_UTF16_LE + b"\x00\xd8a\x00"),
    ("deep.json", b"[" * 100_000),
    ("deep.jsonl", b"[" * 100_000 + b"\n"),
    ("huge-int.json", b'{"title": "Big number story", "text": ' + b"1" * 5000 + b"}"),
    ("surrogate.json", b'{"title": "Lone surrogate story", "text": "\\ud800 is half a pair"}'),
    ("surrogate.jsonl", b'{"title": "Lone surrogate story", "text": "\\ud800 is half a pair"}\n'),
    ("deep.md", b"---\ntitle: " + b"[" * 5000 + b"\n---\n\nbody line\nmore"),
    (
        "undefined-charset.html",
        b'<html><head><meta charset="undefined"></head><body><p>caf\xe9</p></body></html>',
    ),
]


@pytest.mark.parametrize(("name", "data"), RAISING_INPUTS, ids=[bad[0] for bad in RAISING_INPUTS])
def test_pathological_input_never_raises_and_fails_alone(tmp_path: Path, name: str, data: bytes) -> None:
    bad = write(tmp_path / f"a-{name}", data)
    write(tmp_path / "b-good.txt", f"{EN_TITLE}\n\n{EN_BODY}\n")
    loaded = list(load_articles([tmp_path]))
    assert isinstance(loaded[-1], Article)
    assert loaded[-1].input_path == str(tmp_path / "b-good.txt")
    for item in loaded[:-1]:
        assert item.label.startswith(str(bad))
        if isinstance(item, InputFailure):
            assert_one_line(item.reason)


def nested_article(depth: int) -> bytes:
    """A well-formed JSON article with an extra field nested `depth` arrays deep."""
    head = f'{{"title": {json.dumps(EN_TITLE)}, "text": {json.dumps(EN_BODY)}, "extra": '
    return (head + "[" * depth + "]" * depth + "}").encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("x", "no article text found (only 1 character)"),
        ("a stub", "no article text found (only 5 characters)"),
        ("\t", "no article text found"),
    ],
)
def test_a_stub_says_how_little_text_it_has(tmp_path: Path, body: str, reason: str) -> None:
    assert failure(write(tmp_path / "stub.txt", f"A title\n\n{body}\n")).reason == reason


def test_json_nested_past_the_limit_is_refused_the_same_way_on_every_python(tmp_path: Path) -> None:
    # Python 3.11 gives up near 1,000 levels, 3.12 and 3.13 parse far deeper: our own limit decides.
    for depth, name in ((MAX_JSON_DEPTH + 1, "a.json"), (1200, "b.json")):
        failed = failure(write(tmp_path / name, nested_article(depth)))
        assert failed.reason == f"malformed JSON: nested too deeply (more than {MAX_JSON_DEPTH} levels)"
    jsonl = write(tmp_path / "c.jsonl", nested_article(20) + b"\n" + nested_article(1200) + b"\n")
    first, second = load_file(jsonl, LIMITS)
    assert isinstance(first, Article)
    assert isinstance(second, InputFailure) and "nested too deeply" in second.reason


def test_a_json_number_longer_than_python_reads_is_refused_in_plain_words(tmp_path: Path) -> None:
    failed = failure(write(tmp_path / "a.json", b'{"title": "Big", "text": ' + b"1" * 5000 + b"}"))
    assert failed.reason == f"malformed JSON: a number longer than {sys.get_int_max_str_digits():,} digits"


def test_json_nested_to_the_limit_and_brackets_in_strings_are_read(tmp_path: Path) -> None:
    deep = write(tmp_path / "a.json", nested_article(MAX_JSON_DEPTH - 1))  # the object is one more level
    brackets = {"title": EN_TITLE, "text": EN_BODY + " [" * 300 + ' \\" {' * 300}
    in_strings = write(tmp_path / "b.json", json.dumps(brackets))
    assert [type(item) for item in load_articles([deep, in_strings])] == [Article, Article]


# --- folder walking ----------------------------------------------------------------------------------------


def test_folder_walk_is_recursive_sorted_and_skips_hidden_and_unsupported(tmp_path: Path) -> None:
    for rel in ("b.txt", "a.txt", "z.json", "sub/c.txt", "A/d.md", "sub/deeper/e.htm", "sub/f.markdown"):
        write(tmp_path / rel, "x")
    for rel in (".hidden.txt", ".git/config.txt", "sub/.cache/g.txt", "notes.pdf", "data.csv", "README"):
        write(tmp_path / rel, "x")
    order = ("a.txt", "b.txt", "z.json", "A/d.md", "sub/c.txt", "sub/f.markdown", "sub/deeper/e.htm")
    expected = [tmp_path / rel for rel in order]
    assert list(discover([tmp_path])) == expected
    assert list(discover([tmp_path])) == expected


def test_each_real_file_is_seen_once(tmp_path: Path) -> None:
    real = write(tmp_path / "a.txt", f"{EN_TITLE}\n\n{EN_BODY}")
    (tmp_path / "b-link.txt").symlink_to(real)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "again.txt").symlink_to(real)
    assert list(discover([real, tmp_path, real, tmp_path / "sub" / "again.txt"])) == [real]
    assert len(list(load_articles([tmp_path]))) == 1


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "x")
    write(tmp_path / "sub" / "b.txt", "x")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "self.txt").symlink_to(tmp_path / "self.txt")
    found: list[object] = []

    def walk() -> None:
        found.extend(discover([tmp_path / "sub" / "loop", tmp_path]))

    worker = threading.Thread(target=walk, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "discover hangs on a symlink loop"
    files = [f for f in found if isinstance(f, Path)]
    assert files == [tmp_path / "sub" / "loop" / "a.txt", tmp_path / "sub" / "loop" / "sub" / "b.txt"]
    failures = [f for f in found if isinstance(f, InputFailure)]
    assert failures and all(f.reason == "a broken or looping symbolic link" for f in failures)
    assert {Path(f.input_path).name for f in failures} == {"self.txt"}  # reported, not read, not hidden


# --- language ----------------------------------------------------------------------------------------------

FRENCH = (
    "La Banque centrale européenne a réduit ses taux directeurs jeudi, pour la première fois depuis près "
    "d'un an, alors que l'inflation reste inférieure à son objectif."
)
JAPANESE = (
    "日本銀行は金曜日、政策金利を据え置くことを決めた。植田総裁は記者会見で、物価の動向を見守ると述べた。"
)


@pytest.mark.parametrize(
    ("title", "body", "expected"),
    [
        (EN_TITLE, EN_BODY, "en"),
        (ZH_TITLE, ZH_BODY, "zh"),
        (TW_TITLE, TW_BODY, "zh"),
        ("BCE: baisse des taux", FRENCH, "other"),
        ("日銀、金利据え置き", JAPANESE, "other"),
    ],
)
def test_language_is_detected(tmp_path: Path, title: str, body: str, expected: str) -> None:
    assert article(write(tmp_path / "lang.txt", f"{title}\n\n{body}\n")).language == expected


@pytest.mark.parametrize(
    ("declared", "title", "body", "expected"),
    [
        ("zh", EN_TITLE, EN_BODY, "zh"),
        ("zh-Hans", EN_TITLE, EN_BODY, "zh"),
        ("en", ZH_TITLE, ZH_BODY, "en"),
        ("EN_us", ZH_TITLE, ZH_BODY, "en"),
        ("fr", "BCE: baisse des taux", FRENCH, "other"),
        ("fr", ZH_TITLE, ZH_BODY, "zh"),
    ],
)
def test_json_language_field_wins_for_en_and_zh(
    tmp_path: Path, declared: str, title: str, body: str, expected: str
) -> None:
    record = {"title": title, "text": body, "language": declared}
    path = write(tmp_path / "lang.json", json.dumps(record, ensure_ascii=False))
    assert article(path).language == expected


# --- ids ---------------------------------------------------------------------------------------------------


def test_identical_english_input_has_the_same_id_anywhere(tmp_path: Path) -> None:
    data = f"{EN_TITLE}\n\n{EN_BODY}\n"
    first = article(write(tmp_path / "one" / "story.txt", data))
    again = article(write(tmp_path / "one" / "story.txt", data))
    elsewhere = article(write(tmp_path / "two" / "other-name.txt", data))
    assert first.id == again.id == elsewhere.id
    assert (
        first.id == f"duke-energy-orders-iron-air-batteries-for-multi-day-storage-{first.content_sha256[:10]}"
    )


def test_chinese_title_id_falls_back_to_the_file_stem(tmp_path: Path) -> None:
    data = f"{ZH_TITLE}\n\n{ZH_BODY}\n"
    first = article(write(tmp_path / "one" / "rrr-cut.txt", data))
    same_name = article(write(tmp_path / "two" / "rrr-cut.txt", data))
    other_name = article(write(tmp_path / "two" / "zh-bank.txt", data))
    sha = first.content_sha256
    assert first.id == same_name.id == f"rrr-cut-{sha[:10]}"
    assert other_name.id == f"zh-bank-{sha[:10]}"
    assert other_name.content_sha256 == sha


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        (ZH_TITLE, "0-5"),  # no name to fall back on: the title's digits-only slug is kept
        ("央行宣布降准 释放长期流动性", "article"),  # nothing ASCII anywhere
        ("GDP 增长 2026", "gdp-2026"),  # one ASCII word only: still the title's slug
    ],
)
def test_id_when_neither_title_nor_file_name_has_ascii_words(tmp_path: Path, title: str, slug: str) -> None:
    loaded = article(write(tmp_path / "降准.txt", f"{title}\n\n{ZH_BODY}\n"))
    assert loaded.id == f"{slug}-{loaded.content_sha256[:10]}"


def test_jsonl_ids_fall_back_to_stem_and_line(tmp_path: Path) -> None:
    line = json.dumps({"title": ZH_TITLE, "text": ZH_BODY}, ensure_ascii=False)
    loaded = list(load_file(write(tmp_path / "wire.jsonl", f"{line}\n{line}\n"), LIMITS))
    assert all(isinstance(item, Article) for item in loaded)
    sha = hashlib.sha256(f"{ZH_TITLE}\n\n{ZH_BODY}".encode()).hexdigest()
    assert [item.id for item in loaded if isinstance(item, Article)] == [
        f"wire-1-{sha[:10]}",
        f"wire-2-{sha[:10]}",
    ]


def test_content_sha256_covers_title_and_text(tmp_path: Path) -> None:
    loaded = article(write(tmp_path / "x.txt", f"{EN_TITLE}\n\n{EN_BODY}\n"))
    assert loaded.content_sha256 == hashlib.sha256(f"{EN_TITLE}\n\n{EN_BODY}".encode()).hexdigest()
    changed = article(write(tmp_path / "y.txt", f"{EN_TITLE}\n\n{EN_BODY} More.\n"))
    assert changed.content_sha256 != loaded.content_sha256
    assert changed.id != loaded.id


@pytest.mark.parametrize(
    "title",
    [
        "../../etc/passwd",
        "..\\..\\windows\\system32 config",
        "NUL\x00byte in the\x00title",
        "Emoji 🚀 rocket 🚀 launch 💥 news",
        "very long headline words " * 200,
        "a" * 500 + " b",
        "🚀🚀🚀",
        "/",
        "CON",
    ],
)
def test_hostile_titles_give_a_safe_bounded_id(tmp_path: Path, title: str) -> None:
    record = {"title": title, "text": EN_BODY}
    loaded = article(write(tmp_path / "..hostile.name.json", json.dumps(record)))
    assert loaded.title == title.strip()
    assert ID_PATTERN.match(loaded.id), loaded.id
    assert loaded.id.endswith(f"-{loaded.content_sha256[:10]}")
    assert len(loaded.id) <= 71
    assert not loaded.id.startswith("-")
    assert "--" not in loaded.id


# --- truncation --------------------------------------------------------------------------------------------


def test_long_article_is_cut_at_a_paragraph_boundary(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {n}: " + "the market moved on the news of the day. " * 6 for n in range(20)]
    paragraphs = [p.strip() for p in paragraphs]
    path = write(tmp_path / "long.txt", "Long story title\n\n" + "\n\n".join(paragraphs) + "\n")
    budget = 300
    loaded = article(path, Limits(max_input_tokens=budget))
    assert loaded.truncated is True
    kept = loaded.text.split("\n\n")
    assert 1 <= len(kept) < len(paragraphs)
    assert kept == paragraphs[: len(kept)]
    assert estimate_tokens(loaded.text) <= budget
    assert estimate_tokens("\n\n".join(paragraphs[: len(kept) + 1])) > budget
    assert any(f"cut to {budget} tokens" in note and "paragraph" in note for note in loaded.notes)
    assert loaded.content_sha256 == hashlib.sha256(f"Long story title\n\n{loaded.text}".encode()).hexdigest()


def test_chinese_article_is_cut_by_han_character_count(tmp_path: Path) -> None:
    paragraphs = [ZH_P1, ZH_P2] * 10
    path = write(tmp_path / "long.txt", f"{ZH_TITLE}\n\n" + "\n\n".join(paragraphs) + "\n")
    budget = 200
    loaded = article(path, Limits(max_input_tokens=budget))
    assert loaded.truncated is True
    kept = loaded.text.split("\n\n")
    assert kept == paragraphs[: len(kept)]
    assert estimate_tokens(loaded.text) <= budget


def test_single_giant_paragraph_still_fits_the_budget(tmp_path: Path) -> None:
    # No paragraph boundary to cut at: the text must still fit the token budget.
    body = ZH_P1 * 40
    loaded = article(write(tmp_path / "giant.txt", f"{ZH_TITLE}\n\n{body}\n"), Limits(max_input_tokens=100))
    assert loaded.truncated is True
    assert body.startswith(loaded.text)
    assert loaded.text
    assert estimate_tokens(loaded.text) <= 100


def test_short_article_is_not_truncated(tmp_path: Path) -> None:
    loaded = article(write(tmp_path / "short.txt", f"{EN_TITLE}\n\n{EN_BODY}"), Limits(max_input_tokens=100))
    assert (loaded.truncated, loaded.notes, loaded.text) == (False, (), EN_BODY)


# --- bundled fixtures --------------------------------------------------------------------------------------


def test_fixture_articles_cover_every_format_and_language(fixture_articles: list[Article]) -> None:
    assert len(fixture_articles) == 13
    assert sum(1 for a in fixture_articles if a.language == "zh") >= 5
    assert sum(1 for a in fixture_articles if a.language == "en") >= 5
    files = [re.sub(r"(\.jsonl):\d+$", r"\1", a.input_path) for a in fixture_articles]
    assert {Path(name).suffix for name in files} == {".txt", ".md", ".html", ".htm", ".json", ".jsonl"}
    jsonl = [a.input_path for a in fixture_articles if re.search(r"\.jsonl:\d+$", a.input_path)]
    assert len(jsonl) >= 2
    assert len(set(jsonl)) == len(jsonl)
    assert len({a.id for a in fixture_articles}) == 13
    for loaded in fixture_articles:
        assert loaded.title.strip() and loaded.text.strip(), loaded.label
        assert not loaded.title.startswith("\ufeff"), loaded.label
        assert ID_PATTERN.match(loaded.id) and loaded.id.endswith(loaded.content_sha256[:10])


def test_gbk_fixture_is_not_utf8_yet_loads_as_chinese(fixture_articles: list[Article]) -> None:
    path = ARTICLES / "zh-rrr-cut.txt"
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    (loaded,) = [a for a in fixture_articles if Path(a.input_path).name == "zh-rrr-cut.txt"]
    assert loaded.language == "zh"
    assert loaded.title == "央行宣布降准0.5个百分点 释放长期流动性约一万亿元"
    assert loaded.source == "金融观察网"
    assert loaded.text.startswith("中国人民银行")
    assert "\ufffd" not in loaded.text


def test_fixture_load_is_stable(fixture_articles: list[Article]) -> None:
    again = [a for a in load_articles([ARTICLES]) if isinstance(a, Article)]
    assert [(a.id, a.input_path) for a in again] == [(a.id, a.input_path) for a in fixture_articles]


# --- property: never raises ---------------------------------------------------------------------------------

PREFIXES = [b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, b"---\n", b"{", b"Title: ",
            b'<html><head><meta charset="gb2312"><title>t</title></head><body><p>']  # fmt: skip
RECORDS = st.dictionaries(
    st.sampled_from(["title", "text", "content", "body", "language", "url", "author", "published_at"]),
    st.one_of(st.text(max_size=200), st.integers(), st.none(), st.lists(st.text(max_size=5), max_size=3)),
)
ANY_BYTES = st.one_of(
    st.binary(max_size=1024),
    st.tuples(st.sampled_from(PREFIXES), st.binary(max_size=512)).map(b"".join),
    st.tuples(st.sampled_from(PREFIXES), st.text(max_size=400)).map(lambda pair: pair[0] + pair[1].encode()),
    st.tuples(
        st.sampled_from(["gb18030", "big5", "utf-8"]), st.text(st.sampled_from("中文新闻报道台灣經濟 ab:\n"))
    ).map(lambda pair: pair[1].encode(pair[0], "ignore")),
    st.lists(RECORDS.map(lambda record: json.dumps(record, ensure_ascii=False)), max_size=3).map(
        lambda lines: "\n".join(lines).encode()
    ),
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(data=ANY_BYTES, suffix=st.sampled_from([".txt", ".json", ".jsonl", ".md", ".html"]))
def test_load_file_never_raises_on_arbitrary_bytes(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"input{suffix}"
    path.write_bytes(data)
    loaded = list(load_file(path, Limits(max_input_tokens=200)))
    assert loaded
    for item in loaded:
        assert isinstance(item, Article | InputFailure)
        assert item.label.startswith(str(path))
        if isinstance(item, InputFailure):
            assert_one_line(item.reason)
        else:
            assert item.title.strip() and item.text.strip()
            assert ID_PATTERN.match(item.id) and item.id.endswith(item.content_sha256[:10])


@pytest.mark.parametrize(
    ("name", "site"),
    [
        ("drug-pricing-reform.htm", "Health Policy Wire"),  # "<headline> - Health Policy Wire"
        ("zh-ai-model-funding.html", "科创日报"),  # "<headline>_科创日报"
        ("datacenter-power-financing.html", "Grid & Compute"),  # named by the page itself
    ],
)
def test_an_html_page_s_source_is_its_publication_not_its_headline(name: str, site: str) -> None:
    loaded = article(ARTICLES / name)
    assert loaded.source == site and loaded.source != loaded.title


def test_a_page_title_that_is_only_the_headline_gives_no_source(tmp_path: Path) -> None:
    body = "".join(f"<p>{EN_BODY}</p>" for _ in range(3))
    head = f"<html><head><title>{EN_TITLE}</title></head>"
    page = f"{head}<body><article><h1>{EN_TITLE}</h1>{body}</article></body></html>"
    loaded = article(write(tmp_path / "bare.html", page))
    assert loaded.source != EN_TITLE
