"""Figures in English and Chinese text, parsed to values so that they can be compared.

"$900 million", "US$0.9bn", "9亿美元" and "九亿美元" all parse to 900,000,000 USD; "90亿美元" does
not match them. Two figures match when their values agree within the rounding of the precision
they are written with (capped at 5%), and their kinds and units do not conflict.

Answers are parsed conservatively (only what is clearly a figure); source articles are parsed
liberally as well (number words, bare Chinese numerals), so that a figure a model writes as
digits is found in a source that spells it out.
"""

from __future__ import annotations

import itertools
import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Literal, NamedTuple

from pipeline.ingest.article import HAN

Kind = Literal["money", "percent", "year", "quarter", "month", "period", "quantity", "number"]
_EXACT_KINDS = ("year", "quarter", "month", "period")

_EN_MAGNITUDES = {
    "thousand": 1e3, "k": 1e3, "million": 1e6, "mn": 1e6, "mln": 1e6, "m": 1e6,
    "billion": 1e9, "bn": 1e9, "b": 1e9, "trillion": 1e12, "tn": 1e12, "trn": 1e12,
}  # fmt: skip
_ZH_MAGNITUDES = {"十": 10.0, "百": 100.0, "千": 1e3, "万": 1e4, "亿": 1e8}
_CURRENCY_PREFIXES = {
    "us$": "USD", "usd": "USD", "$": "USD", "€": "EUR", "eur": "EUR", "£": "GBP", "gbp": "GBP",
    "¥": "CNY", "rmb": "CNY", "cny": "CNY", "hk$": "HKD", "hkd": "HKD", "a$": "AUD", "c$": "CAD",
    "s$": "SGD", "jpy": "JPY", "€ ": "EUR",
}  # fmt: skip
_CURRENCY_WORDS = {
    "dollars": "USD", "dollar": "USD", "euros": "EUR", "euro": "EUR", "pounds": "GBP",
    "yuan": "CNY", "renminbi": "CNY", "yen": "JPY", "won": "KRW", "rupees": "INR",
}  # fmt: skip
_ZH_CURRENCIES = {
    "美元": "USD", "人民币": "CNY", "元人民币": "CNY", "元": "CNY", "欧元": "EUR", "港元": "HKD",
    "港币": "HKD", "英镑": "GBP", "日元": "JPY", "韩元": "KRW", "澳元": "AUD", "加元": "CAD",
}  # fmt: skip
# unit -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, float]] = {
    "wh": ("energy", 1.0), "kwh": ("energy", 1e3), "mwh": ("energy", 1e6), "gwh": ("energy", 1e9),
    "twh": ("energy", 1e12), "w": ("power", 1.0), "kw": ("power", 1e3), "mw": ("power", 1e6),
    "gw": ("power", 1e9), "tw": ("power", 1e12), "km": ("distance", 1e3), "kilometres": ("distance", 1e3),
    "kilometers": ("distance", 1e3), "miles": ("miles", 1.0), "tonnes": ("mass", 1e3),
    "tons": ("mass", 1e3), "tonne": ("mass", 1e3), "kg": ("mass", 1.0), "teu": ("teu", 1.0),
    "teus": ("teu", 1.0), "feu": ("feu", 1.0), "nm": ("length_nm", 1.0), "nanometre": ("length_nm", 1.0),
    "nanometer": ("length_nm", 1.0), "barrels": ("barrels", 1.0), "bpd": ("barrels", 1.0),
    "瓦时": ("energy", 1.0), "千瓦时": ("energy", 1e3), "度": ("energy", 1e3), "兆瓦时": ("energy", 1e6),
    "吉瓦时": ("energy", 1e9), "太瓦时": ("energy", 1e12), "瓦": ("power", 1.0), "千瓦": ("power", 1e3),
    "兆瓦": ("power", 1e6), "吉瓦": ("power", 1e9), "公里": ("distance", 1e3), "千米": ("distance", 1e3),
    "吨": ("mass", 1e3), "公斤": ("mass", 1.0), "千克": ("mass", 1.0), "纳米": ("length_nm", 1.0),
    "英里": ("miles", 1.0), "桶": ("barrels", 1.0),
    "hours": ("duration", 3600.0), "hour": ("duration", 3600.0), "days": ("duration", 86400.0),
    "小时": ("duration", 3600.0), "天": ("duration", 86400.0),
}  # fmt: skip
for _prefix, _factor in (("", 1.0), ("kilo", 1e3), ("mega", 1e6), ("giga", 1e9), ("tera", 1e12)):
    for _plural in ("", "s"):
        _UNITS[f"{_prefix}watt{_plural}"] = ("power", _factor)
        for _sep in ("-", " "):
            _UNITS[f"{_prefix}watt{_sep}hours"[: None if _plural else -1]] = ("energy", _factor)
_EN_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
}  # fmt: skip
_EN_ORDINAL_QUARTERS = {"first": 1, "second": 2, "third": 3, "fourth": 4}
_EN_NUMBER_WORDS = {
    w: float(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "  # noqa: SIM905
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_EN_NUMBER_WORDS.update({"thirty": 30.0, "forty": 40.0, "fifty": 50.0, "sixty": 60.0, "seventy": 70.0,
                         "eighty": 80.0, "ninety": 90.0, "hundred": 100.0, "dozen": 12.0})  # fmt: skip
_APPROX_WORDS = (
    "about", "around", "approximately", "roughly", "nearly", "almost", "over", "more than", "less than",
    "up to", "at least", "约", "大约", "近", "超过", "逾", "接近", "将近",
)  # fmt: skip
_APPROX_WORDS_LOWER = tuple(word.lower() for word in _APPROX_WORDS)
_LONGEST_APPROX = max(len(word) for word in _APPROX_WORDS)
_ASCII_SPACE = " \t\n\r\f\v"
_APPROX_AFTER = re.compile(r"^\s*(?:左右|多|余|以上|以下)")

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?|\d*\.\d+"
_CN_DIGITS = "零〇一二两三四五六七八九"
_CN_NUM_CHARS = _CN_DIGITS + "十百千万亿点"

_Tree = dict[str, "_Tree"]  # a character -> what may follow it ("" marks the end of a word)


def _alternatives(words: Iterable[str]) -> str:
    """A pattern matching any of `words`, the longest first where several match (as the words
    sorted longest first and joined with "|" would), written as a tree of their shared beginnings:
    the engine tries one branch per character instead of every word in turn."""
    tree: _Tree = {}
    for word in words:
        node = tree
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}  # a word ends here
    return _branches(tree)


def _branches(node: _Tree) -> str:
    longer = [re.escape(ch) + _branches(child) for ch, child in sorted(node.items()) if ch]
    choices = longer + ([""] if "" in node else [])  # a shorter word only when no longer one matches
    if len(choices) == 1:
        return choices[0]
    return "(?:" + "|".join(choices) + ")"


_EN_UNIT = _alternatives(u for u in _UNITS if u.isascii())
_ZH_UNIT = _alternatives(u for u in _UNITS if not u.isascii())
_ZH_CUR = _alternatives(_ZH_CURRENCIES)
_CUR_PREFIX = r"(?:US\$|HK\$|A\$|C\$|S\$|USD|EUR|GBP|RMB|CNY|HKD|JPY|\$|€|£|¥)"

# One English figure: optional currency, number, optional range tail, magnitude, unit/percent.
_EN_FIGURE = re.compile(
    r"(?=[\d.$€£¥]|US\$|HK\$|[ACS]\$|USD|EUR|GBP|RMB|CNY|HKD|JPY)"  # fail fast where no figure starts
    rf"(?P<cur>{_CUR_PREFIX})?\s?(?P<num>{_NUM})"
    rf"(?:\s?(?:-|–|—|to)\s?(?P<cur2>{_CUR_PREFIX})?\s?(?P<num2>{_NUM}))?"
    rf"(?:\s?(?P<mag>{_alternatives(_EN_MAGNITUDES)})\b)?"
    rf"(?:\s?(?P<pct>%|percentage[\s-]+points?\b|per\s?cent\b|percent\b|pp\b|basis\s+points?\b|bps?\b)"
    rf"|\s?(?P<unit>{_EN_UNIT})\b|\s(?P<curword>dollars?|euros?|pounds|yuan|renminbi|yen)\b)?",
    re.IGNORECASE | re.ASCII,
)
_ZH_START = rf"[\d.{_CN_DIGITS}十百千万]"  # the characters a Chinese figure can start with
_ZH_FIGURE = re.compile(
    rf"(?={_ZH_START})"  # fail fast where no figure starts
    rf"(?P<pre>百分之)?(?P<num>{_NUM}|[{_CN_DIGITS}十][{_CN_NUM_CHARS}]*|[百千万](?=[万亿]))"
    rf"(?:\s?(?:-|–|—|~|～|至|到)\s?(?:百分之)?(?P<num2>{_NUM}|[{_CN_DIGITS}十][{_CN_NUM_CHARS}]*))?"
    rf"(?P<more>多|余)?(?P<mag>[十百千万亿]+)?"
    rf"\s?(?P<tail>%|％|个百分点|个基点|(?:{_ZH_CUR})|(?:{_ZH_UNIT})|(?:{_EN_UNIT})(?![A-Za-z])|年|月份|月|个月)?",
    re.IGNORECASE | re.ASCII,
)
# (the lookaheads of first characters let the engine skip ahead to where a match can start)
_EN_QUARTER = re.compile(
    r"(?=[QqFfSsTt])(?:\bQ([1-4])\b|\b(first|second|third|fourth)[- ]quarter\b)", re.I | re.ASCII
)
_ZH_QUARTER = re.compile(r"(?=[第一二三四1-4])(?<!前)第?([一二三四1-4])(?:季度|财季)")
# No leading \b: a pattern that starts with its literals lets the engine skip to the capitals
# quickly; the word boundary before a month is checked in Python (_WORD_CHAR).
_EN_MONTH = re.compile(r"(January|February|March|April|May|June|July|August|September|October|"
                       r"November|December)\b")  # fmt: skip
_WORD_CHAR = re.compile(r"\w")
_EN_WORD_NUMBER = re.compile(  # the lookahead of first letters only skips ahead faster
    rf"(?=[{''.join(sorted({w[0] for w in _EN_NUMBER_WORDS}))}])\b({_alternatives(_EN_NUMBER_WORDS)})\b",
    re.I | re.ASCII,
)
_CN_MONTHS = frozenset("一 二 三 四 五 六 七 八 九 十 十一 十二".split())  # noqa: SIM905
_SKIP_BEFORE_ZH = ("第", "数", "几", "上", "之")
_ZH_WORDS_NOT_NUMBERS = (
    "一些", "一方面", "一直", "一起", "一定", "一致", "一样", "一般", "一体", "一旦",
    "统一", "唯一", "之一", "进一步", "万一", "一边", "一度", "一时", "一路",
)  # fmt: skip


class Figure(NamedTuple):
    """One figure: what kind, its value in base units, the unit or currency, and how precise.
    (A named tuple: an answer and its source give hundreds; a frozen dataclass takes four times
    as long to make one.)"""

    kind: Kind
    value: float
    unit: str | None  # a currency code, a unit dimension, "pp" for percentage points
    tolerance: float
    text: str
    approx: bool = False
    factor: float = 1.0  # the unit's factor to its base unit: value = the number as written x factor

    def matches(self, other: Figure) -> bool:
        if not _compatible(self, other):
            return False
        if self.kind in _EXACT_KINDS or other.kind in _EXACT_KINDS:
            return self.value == other.value
        a, b = self.as_written_against(other), other.as_written_against(self)
        slack = max(a.tolerance, b.tolerance) + 1e-9 * max(abs(a.value), abs(b.value), 1.0)
        return abs(a.value - b.value) <= slack

    def as_written_against(self, other: Figure) -> Figure:
        """A bare number is compared with a quantity as the quantity is written ("100" vs "100 hours")."""
        if self.kind == "quantity" and other.kind == "number" and self.factor != 1.0:
            return self._replace(value=self.value / self.factor, tolerance=self.tolerance / self.factor)
        return self

    def scaled_slip_of(self, other: Figure) -> bool:
        """Whether this figure is `other` with its magnitude moved (万/亿, million/billion, a decimal)."""
        if not _compatible(self, other) or self.kind in ("year", "quarter", "month") or other.value == 0:
            return False
        if (self.unit is None or other.unit is None) and not (self.kind == other.kind == "percent"):
            return False
        ratio = self.value / other.value
        if not 0 < ratio < math.inf:
            return False
        power = round(math.log10(ratio))
        return power != 0 and abs(ratio / 10**power - 1) < 0.02


def _compatible(a: Figure, b: Figure) -> bool:
    kind, other = a.kind, b.kind
    if kind == other:
        return kind in ("year", "number") or a.unit is None or b.unit is None or a.unit == b.unit
    if kind == "number":  # a bare number goes with anything but a month, quarter or period
        return other not in _DATED_KINDS
    if other == "number":
        return kind not in _DATED_KINDS
    return False


_DATED_KINDS = ("month", "quarter", "period")


class FigureIndex:
    """Figures sorted by value: a match lies within about 5%, so only a narrow window is compared."""

    def __init__(self, figures: Iterable[Figure]) -> None:
        self.figures = sorted(figures, key=lambda f: f.value)
        self._values = [f.value for f in self.figures]
        self._quantities = [f for f in self.figures if f.kind == "quantity" and f.factor != 1.0]
        # An answer repeats its figures (title, summary, TL;DR, key data, FAQ): about six uses each.
        self._known: dict[tuple[str, float, str | None, float, float], bool] = {}

    def has(self, figure: Figure) -> bool:
        """Whether a figure here matches `figure` (which depends on its kind, value, unit,
        tolerance and unit factor only: not on how it is written)."""
        key = (figure.kind, figure.value, figure.unit, figure.tolerance, figure.factor)
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = self._has(figure)
        return found

    def _has(self, figure: Figure) -> bool:
        # a known figure's tolerance is at most 5% of its value, so it lies within 6% of this one;
        # a year, quarter, month or period matches only its exact value
        exact = figure.kind in _EXACT_KINDS
        slack = 0.0 if exact else 0.06 * abs(figure.value) + figure.tolerance + 1e-6
        low = bisect_left(self._values, figure.value - slack)
        high = bisect_right(self._values, figure.value + slack)
        if any(figure.matches(known) for known in self.figures[low:high]):
            return True
        if figure.kind == "number":  # quantities sit at their base-unit values: compare as written
            return any(figure.matches(q) for q in self._quantities)
        if figure.kind == "quantity" and figure.factor != 1.0:
            written = figure.value / figure.factor
            return any(
                n.matches(figure) for n in self._numbers_near(written, figure.tolerance / figure.factor)
            )
        return False

    def _numbers_near(self, value: float, tolerance: float) -> list[Figure]:
        slack = 0.06 * abs(value) + tolerance + 1e-6
        return self.figures[
            bisect_left(self._values, value - slack) : bisect_right(self._values, value + slack)
        ]


def tolerance_of(number_text: str, scale: float) -> float:
    """Half a unit of the last digit written, at most 5% of the value."""
    digits = number_text.replace(",", "")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    half_unit: float = 0.5 * 10.0 ** (-decimals) * scale
    try:
        value = abs(float(digits)) * scale
    except ValueError:
        value = 0.0
    return min(half_unit, 0.05 * value) if value else half_unit


# The figures of a match, by its text and groups, which are all they depend on. An answer writes
# most figures several times (title, summary, TL;DR, key data, FAQ), mostly as its source does:
# one check keeps one memo for the source and every field it parses.
Memo = dict[tuple[str | None, ...], list[Figure]]


def figures_in(text: str, *, liberal: bool = False, memo: Memo | None = None) -> list[Figure]:
    """Every figure in `text`. `liberal` also reads number words and bare Chinese numerals. `memo`
    (any dict, shared between calls) keeps each distinct match's figures, so a repeat is not read
    again. Full-width digits ("１２亿元", "１５％") are read as the ASCII ones they stand for, and
    quoted as written."""
    written = text
    if not text.isascii() and _FULL_WIDTH.search(text):
        text = text.translate(_TO_ASCII)  # one character for one: positions are unchanged
    found: list[Figure] = []
    placed: list[tuple[tuple[int, int], list[Figure]]] = []
    taken = _Spans()
    for group, span in _all_figures(text, liberal, taken, {} if memo is None else memo):
        if not group or taken.overlaps(span):  # no group: an overflowing number ("1" x 400)
            continue
        start, end = span
        approx = _approx_before(text, start) or _approx_after(text, end)
        if approx or text is not written:
            group = [_as_written(f, written, text.find(f.text, start, end), approx) for f in group]
        found += group
        placed.append((span, group))
        taken.add(span)
    return found + _periods(written, found, placed)


def _as_written(figure: Figure, written: str, at: int, approx: bool) -> Figure:
    """`figure` quoting `written` at `at` (where the text read has its quote), approximate or not."""
    quote = written[at : at + len(figure.text)] if at >= 0 else figure.text
    return Figure(figure.kind, figure.value, figure.unit, figure.tolerance, quote, approx or figure.approx,
                  figure.factor)  # fmt: skip


# Full-width digits, percent sign and decimal point, as some Chinese (and Japanese) sources write
# figures. Not the full-width comma: in Chinese text it separates clauses, not thousands.
_TO_ASCII = str.maketrans("０１２３４５６７８９％．", "0123456789%.")
_FULL_WIDTH = re.compile("[０-９％．]")


class _Spans:
    """Disjoint text spans, sorted: whether a new one overlaps any is a binary search."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def overlaps(self, span: tuple[int, int]) -> bool:
        # the span starting last before `span` ends is the only one that can reach into it
        i = bisect_left(self._starts, span[1])
        return i > 0 and self._ends[i - 1] > span[0]

    def ends_at(self, end: int) -> bool:
        i = bisect_left(self._starts, end)  # the span starting last before `end`
        return i > 0 and self._ends[i - 1] == end

    def add(self, span: tuple[int, int]) -> None:
        i = bisect_left(self._starts, span[0])
        self._starts.insert(i, span[0])
        self._ends.insert(i, span[1])


def _approx_after(text: str, end: int) -> bool:
    """Whether the text from `end` starts with "左右", "多", "以上"...: the figure before it is
    approximate."""
    if end >= len(text) or not (text[end] in "左多余以" or text[end].isspace()):
        return False  # the usual case, decided by one character
    after = text[end : end + 4]
    stripped = after.lstrip()
    return bool(stripped) and stripped[0] in "左多余以" and bool(_APPROX_AFTER.match(after))


def _approx_before(text: str, start: int) -> bool:
    """Whether the text before `start` ends with "about", "nearly", "约"...: the figure from there
    is approximate."""
    if not start:
        return False
    last = text[start - 1]
    if last in _ASCII_SPACE and start > 1 and text[start - 2] not in _ASCII_SPACE:
        last = text[start - 2]  # the usual "rose 15%": the word before the one space
    if last not in _APPROX_LAST_CHARS:  # the usual case, decided at once
        return False
    # the whitespace `\s` is under re.ASCII, as in the patterns
    stripped = text[max(0, start - 20) : start].rstrip(_ASCII_SPACE)
    return stripped[-_LONGEST_APPROX:].lower().endswith(_APPROX_WORDS_LOWER)


# what can come just before an approximate figure: the last letter of a word for it, or a space
_APPROX_LAST_CHARS = frozenset(
    {word[-1] for word in _APPROX_WORDS_LOWER} | {word[-1].upper() for word in _APPROX_WORDS_LOWER}
) | frozenset(_ASCII_SPACE)


_PERIOD_GAP = re.compile(r"\s*(?:of\s+|in\s+)?(?:\d{1,2}(?:st|nd|rd|th)?,?\s*)?(?:日|号)?\s*")


def _periods(
    text: str, found: list[Figure], placed: list[tuple[tuple[int, int], list[Figure]]]
) -> list[Figure]:
    """A quarter or month next to its year ("fourth quarter of 2028", "2028年第四季度", "May 2026")."""
    kinds = {figure.kind for figure in found}
    if "year" not in kinds or not kinds & {"quarter", "month"}:
        return []
    days = ("number",)  # a day between month and year ("December 14, 2026") is read by the gap pattern
    ordered = sorted(
        ((span, figure) for span, group in placed for figure in group
         if not (figure.kind in days and figure.value <= 31)),
        key=lambda p: p[0][0],
    )  # fmt: skip
    periods = []
    for (first_span, first), (second_span, second) in itertools.pairwise(ordered):
        kinds = {first.kind, second.kind}
        if "year" not in kinds or not kinds & {"quarter", "month"}:
            continue
        if not _PERIOD_GAP.fullmatch(text, first_span[1], second_span[0]):
            continue
        year, part = (first, second) if first.kind == "year" else (second, first)
        code = part.value + (50 if part.kind == "quarter" else 0)  # quarters 51-54, months 1-12
        periods.append(
            Figure("period", year.value * 100 + code, None, 0.0, text[first_span[0] : second_span[1]])
        )
    return periods


def period_parts(figure: Figure) -> tuple[int, int]:
    """(year, sub-period code) of a period figure."""
    year, code = divmod(int(figure.value), 100)
    return year, code


Found = tuple[list[Figure], tuple[int, int]]  # the figures of one match (two for a range), its span


_ANY_FIGURE_CHAR = re.compile(rf"[0-9{_CN_DIGITS}十百千万QJFMASONDqfst]")


def _all_figures(text: str, liberal: bool, taken: _Spans, memo: Memo) -> Iterator[Found]:
    if not liberal and not _ANY_FIGURE_CHAR.search(text):  # no digit, numeral, quarter or month here
        return
    yield from _quarters(text)
    yield from _months(text)
    yield from _chinese_figures(text, liberal, memo)
    yield from _english_figures(text, taken, memo)
    if liberal:
        yield from _number_words(text)


def _quarters(text: str) -> Iterator[Found]:
    if "Q" in text or ("q" in text and "quarter" in text.lower()):  # most fields are not lower-cased
        for match in _EN_QUARTER.finditer(text):
            value = int(match.group(1)) if match.group(1) else _EN_ORDINAL_QUARTERS[match.group(2).lower()]
            yield [Figure("quarter", float(value), None, 0.0, match.group(0))], match.span()
    if "季" not in text:
        return
    for match in _ZH_QUARTER.finditer(text):
        raw = match.group(1)
        value = int(raw) if raw.isdigit() else "一二三四".index(raw) + 1
        yield [Figure("quarter", float(value), None, 0.0, match.group(0))], match.span()


def _months(text: str) -> Iterator[Found]:
    for match in _EN_MONTH.finditer(text):
        if match.start() > 0 and _WORD_CHAR.match(text, match.start() - 1):  # "Summary", "AMay"
            continue
        name = match.group(1)
        if name == "May" and not _may_is_month(text, match.start(), match.end()):
            continue
        month = _EN_MONTHS[name.lower()]
        yield [Figure("month", float(month), None, 0.0, name)], match.span()


def _may_is_month(text: str, start: int, end: int) -> bool:
    after = text[end : end + 6]
    before = text[max(0, start - 8) : start].lower()
    return bool(re.match(r"\s*(\d|,\s*\d)", after)) or bool(
        re.search(r"(in|since|by|until|from|of|early|late|mid-?|through|last|next|this)\s*$", before)
    )


_ASCII_DIGIT = re.compile(r"[0-9]")
# Every English figure has a digit, at most this far from where its match starts ("US$ .5"):
# a currency prefix of up to three characters, a space, a decimal point.
_EN_REACH = 5


def _english_matches(text: str) -> Iterator[re.Match[str]]:
    """The matches of ``_EN_FIGURE.finditer(text)``, found faster: the search starts just before
    the next digit instead of trying the pattern at every character."""
    pos = 0
    while (digit := _ASCII_DIGIT.search(text, pos)) is not None:
        start = digit.start()
        if _prefix_may_end_at(text, start):
            start = max(pos, start - _EN_REACH)
        match = _EN_FIGURE.search(text, start)
        if match is None:  # a digit always starts a match; kept for safety
            return
        yield match
        pos = match.end()


# A match starts before its first digit only at a decimal point (".5") or at a currency sign or
# code ("$5", "USD 5", "US$ .5"), which ends with one of these, just before the digit or before a
# space before it. Most numbers follow a word and a space: their search starts at the digit.
_PREFIX_ENDS = frozenset(".$€£¥DRPBYdrpby")


def _prefix_may_end_at(text: str, digit: int) -> bool:
    """Whether a currency prefix or decimal point may end just before `digit` (or one space before)."""
    if digit == 0:
        return False
    before = text[digit - 1]
    if before in _PREFIX_ENDS:
        return True
    return digit >= 2 and before in _ASCII_SPACE and text[digit - 2] in _PREFIX_ENDS


def _english_figures(text: str, taken: _Spans, memo: Memo) -> Iterator[Found]:
    """English figures; the spans already `taken` (a Chinese "2025年", "12%") are skipped before any
    figure is built (figures_in would drop them anyway)."""
    length = len(text)
    for match in _english_matches(text):
        written = match.group(0).rstrip()  # the figure proper: the pattern's trailing spaces excluded
        end = match.start() + len(written)
        first = match.start("cur") if match.group("cur") else match.start("num")
        if _glued_to_word(text, first, end) or (end < length and text[end] in "十百千万亿"):
            continue
        if first > 1 and text[first - 1] == "-" and _names_a_model(text, first - 2, end, taken, match):
            continue  # a Han name's number ("歼-20", "极曜-3", as "J-20", "Jiyao-3"); "同比-3%" is a figure
        span = (match.start(), end)
        if not taken.overlaps(span):
            figure_text = written.strip()
            key = ("en", figure_text, *match.groups())
            figures = memo.get(key)
            if figures is None:
                figures = memo[key] = _english_match_figures(match, figure_text)
            yield figures, span


def _names_a_model(text: str, at: int, end: int, taken: _Spans, match: re.Match[str]) -> bool:
    """Whether the number after "<Han>-" is part of a name ("歼-20", "极曜-3"): a whole number
    of at most three digits, after a Han character that is no numeral, ends no figure and follows
    no number ("6日-8日", "100辆-200辆" are ranges), nor a word a value follows ("增速为-3",
    "同比-3", "气温-5℃" are values below zero)."""
    before = text[at]
    return (
        _bare(match)
        and match.group("num").isdigit()
        and len(match.group("num")) <= 3
        and bool(HAN.match(before))
        and before not in _CN_NUM_CHARS
        and before not in _BEFORE_A_VALUE
        and not (at > 0 and (text[at - 1].isdigit() or text[at - 1] in _CN_NUM_CHARS))
        and not (end < len(text) and text[end] in "℃°%％度")
        and not taken.ends_at(at + 1)
    )


# the last character of words a value (and so a sign) follows: 为 是 达 至 约, 同比, 增速, 收益 ...
_BEFORE_A_VALUE = frozenset("为是达至约比率速益幅值额温润差价量长降跌涨升")


def _bare(match: re.Match[str]) -> bool:
    """Whether an English match is a lone number: no currency, magnitude, percent, unit or range."""
    return not any(match.group("cur", "num2", "mag", "pct", "unit", "curword"))


def _glued_to_word(text: str, start: int, end: int | None = None) -> bool:
    """Numbers that are part of Latin names (H200, 10-K, COVID-19, 5G, B2B) are not figures."""
    before = text[start - 1] if start > 0 else " "
    if before.isascii() and (before.isalpha() or before == "_"):
        return True
    if before == "-" and start > 1 and _latin(text[start - 2]):
        word = re.search(r"[A-Za-z]+$", text[max(0, start - 12) : start - 1])
        if not (word and word.group(0).lower() in _DATE_PREFIXES):  # "mid-2029" is a year; "COVID-19" not
            return True
    if end is None:
        return False
    after = text[end] if end < len(text) else " "
    if after == "-" and _SINGLE_LETTER.match(text, end + 1):  # 10-K, 8-K filings
        return True
    return (after.isascii() and after.isalpha()) or after.isdigit()


_DATE_PREFIXES = frozenset(
    {"mid", "early", "late", "pre", "post", "end", "start", "fiscal", "fy", "calendar"}
)
_SINGLE_LETTER = re.compile(r"[A-Za-z](?![A-Za-z])")


def _latin(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def _english_match_figures(match: re.Match[str], text: str) -> list[Figure]:
    num, num2, mag, cur, cur2, curword, pct, unit = match.group(
        "num", "num2", "mag", "cur", "cur2", "curword", "pct", "unit"
    )
    mag_text = (mag or "").lower()
    currency = _currency(cur or cur2, curword)
    if mag_text in ("m", "b", "k") and currency is None:
        # a bare "m" or "b" is a magnitude only for money ("$900m"); "100m" may be metres
        return []
    scale = _EN_MAGNITUDES.get(mag_text, 1.0)
    suffix = ((pct or "").lower(), (unit or "").lower())
    figures = [_english_figure(num, scale, currency, suffix, text)]
    if num2:
        figures.append(_english_figure(num2, scale, currency, suffix, text))
    return _finite(figures)


def _finite(figures: list[Figure]) -> list[Figure]:
    """Without the numbers too long to have a value: a 400-digit number is not a figure."""
    if all(math.isfinite(figure.value) for figure in figures):
        return figures
    return [figure for figure in figures if math.isfinite(figure.value)]


def _english_figure(
    raw: str, scale: float, currency: str | None, suffix: tuple[str, str], text: str
) -> Figure:
    """One number of a match; `suffix` is its percent sign or unit, lower-cased ("" when none)."""
    value = float(raw.replace(",", "")) * scale
    tolerance = tolerance_of(raw, scale)
    pct, unit_text = suffix
    if pct:
        if pct.startswith("basis") or pct.startswith("bp"):
            return Figure("percent", value / 100, "pp", tolerance / 100, text)
        unit = "pp" if pct.startswith("percentage") or pct == "pp" else None
        return Figure("percent", value, unit, tolerance, text)
    if currency:
        return Figure("money", value, currency, tolerance, text)
    if unit_text:
        dimension, factor = _UNITS[unit_text]
        return Figure("quantity", value * factor, dimension, tolerance * factor, text, factor=factor)
    if scale == 1.0 and "." not in raw and "," not in raw and 1900 <= value <= 2100 and len(raw) == 4:
        return Figure("year", value, None, 0.0, text)
    return Figure("number", value, None, tolerance, text)


def _currency(prefix: str | None, word: str | None) -> str | None:
    if prefix:
        return _CURRENCY_PREFIXES.get(prefix.lower().strip(), "USD")
    if word:
        return _CURRENCY_WORDS.get(word.lower())
    return None


def _chinese_figures(text: str, liberal: bool, memo: Memo) -> Iterator[Found]:
    if text.isascii():  # no Chinese numeral, magnitude, unit or currency can appear
        return
    for match in _chinese_matches(text):
        raw = match.group("num")
        if raw[0].isdigit():
            if not (match.group("mag") or match.group("tail") or match.group("pre")):
                continue  # plain Arabic numbers are read by the English parser
            if _glued_to_word(text, match.start()):
                continue
        elif not _chinese_numeral_is_figure(text, match, liberal):
            continue
        key = ("zh", match.group(0), *match.groups())
        figures = memo.get(key)
        if figures is None:
            figures = memo[key] = _chinese_match_figures(match)
        yield figures, match.span()


_ZH_CANDIDATE = re.compile(_ZH_START, re.ASCII)


def _chinese_matches(text: str) -> Iterator[re.Match[str]]:
    """The matches of ``_ZH_FIGURE.finditer(text)``, found faster: a character class finds where
    one can start (most characters of a Chinese text cannot), and the pattern is tried only there.
    (The engine cannot skip ahead by itself: the pattern starts with a lookahead.)"""
    pos = 0
    while (candidate := _ZH_CANDIDATE.search(text, pos)) is not None:
        match = _ZH_FIGURE.match(text, candidate.start())
        if match is None:
            pos = candidate.start() + 1
        else:
            yield match
            pos = match.end()


# one scan of an edge for any of the words, instead of a substring test per word
_ZH_WORD_NOT_NUMBER = re.compile("|".join(_ZH_WORDS_NOT_NUMBERS))


def _chinese_numeral_is_figure(text: str, match: re.Match[str], liberal: bool) -> bool:
    start = match.start()
    if start > 0 and text[start - 1] in _SKIP_BEFORE_ZH and not match.group("pre"):
        return False
    end = match.end()
    if not match.group("pre") and (
        _ZH_WORD_NOT_NUMBER.search(text[max(0, start - 2) : start + 2])
        or _ZH_WORD_NOT_NUMBER.search(text[max(0, end - 2) : end + 2])
    ):
        return False
    raw = match.group("num")
    if raw in "百千万":  # "千亿参数" (a hundred billion): a bare magnitude, read in sources only
        return liberal
    if raw[0] not in _CN_DIGITS and raw[0] != "十":
        return False
    tail = match.group("tail")
    if match.group("pre") or tail not in (None, "年", "月", "月份"):
        return True
    if tail == "年" and len(raw) == 4 and all(ch in _CN_DIGITS for ch in raw):  # 二〇二六年
        return True
    if tail in ("月", "月份") and raw in _CN_MONTHS:  # 五月, 十二月
        return True
    if match.group("mag") or any(ch in "十百千万亿" for ch in raw):
        return liberal or len(raw) > 1 or match.group("mag") is not None
    return liberal and match.group("tail") is None and len(raw) >= 1 and raw not in ("一", "两", "二")


def _chinese_match_figures(match: re.Match[str]) -> list[Figure]:
    mag = match.group("mag") or ""
    scale = 1.0
    for ch in mag:
        scale *= _ZH_MAGNITUDES[ch]
    tail = match.group("tail") or ""
    numbers = [match.group("num")] + ([match.group("num2")] if match.group("num2") else [])
    figures = []
    for raw in numbers:
        parsed = _chinese_number(raw)
        if parsed is None:
            continue
        value, digits_text, inner_scale = parsed
        figure = _chinese_figure(value * scale, tolerance_of(digits_text, inner_scale * scale), tail,
                                 bool(match.group("pre")), match.group(0))  # fmt: skip
        if figure is not None:
            figures.append(figure)
    return _finite(figures)


def _chinese_figure(value: float, tolerance: float, tail: str, pre: bool, text: str) -> Figure | None:
    if pre or tail in ("%", "％"):
        return Figure("percent", value, None, tolerance, text)
    if tail == "个百分点":
        return Figure("percent", value, "pp", tolerance, text)
    if tail == "个基点":
        return Figure("percent", value / 100, "pp", tolerance / 100, text)
    if tail in _ZH_CURRENCIES:
        return Figure("money", value, _ZH_CURRENCIES[tail], tolerance, text)
    if tail.lower() in _UNITS:
        dimension, factor = _UNITS[tail.lower()]
        return Figure("quantity", value * factor, dimension, tolerance * factor, text, factor=factor)
    if tail == "年":
        if 1900 <= value <= 2100 and value == int(value):
            return Figure("year", value, None, 0.0, text)
        return Figure("number", value, None, tolerance, text)
    if tail in ("月", "月份"):
        return Figure("month", value, None, 0.0, text) if 1 <= value <= 12 and value == int(value) else None
    return Figure("number", value, None, tolerance, text)


def _chinese_number(raw: str) -> tuple[float, str, float] | None:
    """(value, the digits as written, the scale of their last digit) of Arabic or Chinese numerals."""
    if raw[0].isdigit() or raw[0] == ".":
        try:
            return float(raw.replace(",", "")), raw, 1.0
        except ValueError:
            return None
    value = _ZH_MAGNITUDES[raw] if raw in "百千万" else _cn2an(raw)
    if value is None and len(raw) == 4 and all(ch in _CN_DIGITS for ch in raw):  # a year: 二〇二六
        value = float("".join(str("零一二三四五六七八九".find(ch) if ch != "〇" else 0) for ch in raw))
    if value is None:  # "一点五亿": cn2an reads the number, the magnitude is ours
        head = raw.rstrip("十百千万亿")
        tail_value = _cn2an(head) if head and head != raw else None
        if tail_value is None:
            return None
        scale = 1.0
        for ch in raw[len(head) :]:
            scale *= _ZH_MAGNITUDES[ch]
        value = tail_value * scale
    # the precision of "九亿" is a whole 亿: the scale of the last non-zero numeral
    trailing = 1.0
    for ch in reversed(raw):
        if ch in "十百千万亿":
            trailing *= _ZH_MAGNITUDES[ch]
        else:
            break
    return value, f"{value / trailing:g}", trailing


@lru_cache(maxsize=4096)
def _cn2an(raw: str) -> float | None:
    import cn2an  # imported lazily: it loads its tables at import time

    try:
        value = float(cn2an.cn2an(raw, "smart"))
    except (ValueError, KeyError, TypeError):
        return None
    return value


_HALF_A = re.compile(r"\bhalf an? (thousand|million|billion|trillion)\b", re.IGNORECASE | re.ASCII)


def _number_words(text: str) -> Iterator[Found]:
    # "half a million": the pattern starts at a word boundary, so the engine would try it at every
    # character; most texts have no "half" at all
    if "half" in text.lower():
        for match in _HALF_A.finditer(text):
            value = 0.5 * _EN_MAGNITUDES[match.group(1).lower()]
            yield [Figure("number", value, None, 0.0, match.group(0))], match.span()
    for match in _EN_WORD_NUMBER.finditer(text):
        value = _EN_NUMBER_WORDS[match.group(1).lower()]
        yield [Figure("number", value, None, 0.0, match.group(0))], match.span()


def describe(figures: Iterable[Figure]) -> list[str]:
    """The distinct texts of `figures`, in order, for prompts and messages."""
    seen: dict[str, None] = {}
    for figure in figures:
        seen.setdefault(figure.text, None)
    return list(seen)
