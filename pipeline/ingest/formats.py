"""One parser per input format. Each turns decoded text into the fields of an article."""

from __future__ import annotations

import html
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

import yaml

_HEADER_LABELS = {  # English, Simplified and Traditional Chinese (Big5 sources from Taiwan, Hong Kong)
    "title": "title", "标题": "title", "標題": "title",
    "source": "source", "来源": "source", "來源": "source",
    "url": "url", "link": "url", "链接": "url", "鏈接": "url", "連結": "url", "网址": "url", "網址": "url",
    "published": "published_at", "date": "published_at", "published_at": "published_at",
    "发布时间": "published_at", "發布時間": "published_at", "發佈時間": "published_at",
    "时间": "published_at", "時間": "published_at", "日期": "published_at",
    "author": "author", "作者": "author",
}  # fmt: skip
_HEADER_LINE = re.compile(r"^\s*([^:：\s][^:：]{0,20}?)\s*[:：]\s*(.*?)\s*$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_TEXT_KEYS = ("text", "content", "body")


class FormatError(ValueError):
    """The input is not a well-formed article of its format."""


@dataclass
class RawArticle:
    """The fields a parser found; `text` may still be empty (checked by the loader)."""

    title: str | None
    text: str
    source: str | None = None
    url: str | None = None
    published_at: str | None = None
    author: str | None = None
    language: str | None = None


def normalise_text(text: str) -> str:
    """Unix newlines, no trailing spaces, paragraphs separated by one blank line."""
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates from JSON escapes
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u3000", " ")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def parse_txt(text: str) -> RawArticle:
    text = normalise_text(text)
    head, _, body = text.partition("\n\n")
    fields = _header_fields(head)
    if fields is not None:
        return RawArticle(text=body.strip(), **_meta(fields))
    title, _, rest = text.partition("\n")
    return RawArticle(title=title.strip(), text=rest.strip())


def _header_fields(block: str) -> dict[str, str] | None:
    fields: dict[str, str] = {}
    for line in block.split("\n"):
        match = _HEADER_LINE.match(line)
        if not match:
            return None
        label = _HEADER_LABELS.get(match.group(1).strip().lower())
        if label is None:
            return None
        fields[label] = match.group(2)
    return fields or None


def parse_md(text: str) -> RawArticle:
    text = text.replace("\r\n", "\n")
    match = _FRONT_MATTER.match(text)
    fields: dict[str, str] = {}
    if match:
        fields = _front_matter(match.group(1))
        text = text[match.end() :]
    body = normalise_text(text)
    if "title" not in fields:
        first, _, rest = body.partition("\n")
        fields["title"] = first.lstrip("#").strip()
        body = rest.strip()
    elif body.startswith("# "):
        first, _, rest = body.partition("\n")
        if first.lstrip("#").strip() == fields["title"].strip():
            body = rest.strip()
    return RawArticle(text=body, **_meta(fields))


def _front_matter(block: str) -> dict[str, str]:
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as exc:
        raise FormatError(f"malformed YAML front matter: {_first_line(exc)}") from None
    except RecursionError:
        raise FormatError("malformed YAML front matter: nested too deeply") from None
    except Exception as exc:  # PyYAML raises many kinds on bad tags and dates (2024-02-30)
        raise FormatError(f"malformed YAML front matter: {_first_line(exc)[:120]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FormatError("YAML front matter is not a mapping of keys to values")
    fields: dict[str, str] = {}
    for key, value in data.items():
        label = _HEADER_LABELS.get(str(key).strip().lower())
        if label and value is not None:
            fields[label] = str(value)
    return fields


def parse_html(text: str) -> RawArticle:
    import trafilatura  # imported on the first HTML page: it takes a tenth of a second to load

    document = trafilatura.bare_extraction(
        text, with_metadata=True, include_comments=False, include_tables=True, favor_precision=True
    )
    if document is None:
        return RawArticle(title=None, text="")
    title = _str_or_none(getattr(document, "title", None))
    body = normalise_text(str(getattr(document, "text", "") or ""))
    paragraphs = [p.strip() for p in body.split("\n") if p.strip()]
    if title and paragraphs and paragraphs[0] == title.strip():
        paragraphs = paragraphs[1:]
    return RawArticle(
        title=title,
        text="\n\n".join(paragraphs),
        source=_site_name(_str_or_none(getattr(document, "sitename", None)), title, text)
        or _str_or_none(getattr(document, "hostname", None)),
        url=_str_or_none(getattr(document, "url", None)),
        published_at=_str_or_none(getattr(document, "date", None)),
        author=_str_or_none(getattr(document, "author", None)),
    )


_PAGE_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_TITLE_SEPARATORS = (" | ", " - ", " – ", " — ", " :: ", "_", "｜", " · ")


def _site_name(sitename: str | None, title: str | None, page: str) -> str | None:
    """The publication's name. Pages often give their headline where the site's name should be
    (og:site_name missing); then the name is taken from the page title, "Headline - Site"."""
    if sitename and not (title and _same_words(sitename, title)):
        return sitename
    found = _PAGE_TITLE.search(page[:200_000])
    if not found or not title:
        return None
    page_title = " ".join(html.unescape(found.group(1)).split())
    for separator in _TITLE_SEPARATORS:
        head, _, tail = page_title.rpartition(separator)
        if head and tail.strip() and _same_words(head, title) and len(tail.strip()) <= 60:
            return tail.strip()
    return None


def _same_words(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


# An article needs three or four levels. Python's own limit differs between versions (3.11 gives
# up near 1,000 levels, 3.13 parses tens of thousands), so the same file is refused the same way
# on every version.
MAX_JSON_DEPTH = 100
_JSON_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def parse_json_object(text: str, *, line: bool = False) -> RawArticle:
    """One article object: a whole .json file, or (`line`) one line of a .jsonl file."""
    data = read_json(text)
    if line and isinstance(data, list):
        raise FormatError("expected one article object on the line, found a list")
    return article_from_mapping(data)


def read_json(text: str) -> Any:
    """The JSON value in `text`; FormatError with a reason a user can act on when there is none."""
    if json_deeper_than(text, MAX_JSON_DEPTH):
        raise FormatError(f"malformed JSON: nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if "\n" in text.strip() else f"column {exc.colno}"
        raise FormatError(f"malformed JSON at {where}: {exc.msg}") from None
    except RecursionError:
        raise FormatError("malformed JSON: nested too deeply") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's cap on the digits of an integer
            limit = sys.get_int_max_str_digits()
            raise FormatError(f"malformed JSON: a number longer than {limit:,} digits") from None
        raise FormatError(f"malformed JSON: {_first_line(exc)[:120]}") from None


def json_deeper_than(text: str, limit: int) -> bool:
    """Whether the arrays and objects of a JSON text nest more than `limit` deep (brackets inside
    strings do not count). A text with no more brackets than that is decided at once."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _JSON_STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def article_from_mapping(data: Any) -> RawArticle:
    if isinstance(data, list):
        raise FormatError("expected one article object, found a list (use .jsonl for several)")
    if not isinstance(data, dict):
        raise FormatError("expected a JSON object with a title and a text")
    body = next((data[k] for k in _TEXT_KEYS if isinstance(data.get(k), str) and data[k].strip()), "")
    fields = {"title": data.get("title"), "source": data.get("source"), "url": data.get("url"),
              "published_at": data.get("published_at") or data.get("published") or data.get("date"),
              "author": data.get("author")}  # fmt: skip
    return RawArticle(
        text=normalise_text(body),
        language=_str_or_none(data.get("language")),
        **{key: _str_or_none(value) for key, value in fields.items()},
    )


def _meta(fields: dict[str, str]) -> dict[str, str | None]:
    keys = ("title", "source", "url", "published_at", "author")
    return {key: _str_or_none(fields.get(key)) for key in keys}


def _str_or_none(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).encode("utf-8", "replace").decode("utf-8").strip()
    return text or None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
