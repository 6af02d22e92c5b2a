"""The figure parser of the faithfulness checks: English and Chinese figures parsed to comparable values.

A table of parse cases, a table of match cases (precision, years, currencies, missing units), magnitude
slips, and property tests: one value written in many English and Chinese styles parses back to itself,
and every two writings of it match.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from itertools import combinations

import cn2an
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.validate import figures
from pipeline.validate.figures import Figure, FigureIndex, figures_in

Expected = tuple[str, float, str | None]  # kind, value, unit


def parsed(text: str, *, liberal: bool = False) -> list[Expected]:
    return [(f.kind, f.value, f.unit) for f in figures_in(text, liberal=liberal)]


def one(text: str) -> Figure:
    found = figures_in(text)
    assert len(found) == 1, (text, found)
    return found[0]


def same(actual: list[Expected], expected: list[Expected]) -> bool:
    return len(actual) == len(expected) and all(
        a[0] == e[0] and a[2] == e[2] and math.isclose(a[1], e[1], rel_tol=1e-9)
        for a, e in zip(actual, expected, strict=True)
    )


USD_900M: list[Expected] = [("money", 9e8, "USD")]
PCT_35: list[Expected] = [("percent", 35.0, None)]
QUARTER_3: list[Expected] = [("quarter", 3.0, None)]
ENERGY_8_5_GWH: list[Expected] = [("quantity", 8.5e9, "energy")]
QUARTER_POINT: list[Expected] = [("percent", 0.25, "pp")]

PARSES: list[tuple[str, list[Expected]]] = [
    # money, English and Chinese, every magnitude style
    ("$900 million", USD_900M),
    ("US$0.9 billion", USD_900M),
    ("US$0.9bn", USD_900M),
    ("$900M", USD_900M),
    ("$900m", USD_900M),
    ("900 million dollars", USD_900M),
    ("9亿美元", USD_900M),
    ("九亿美元", USD_900M),
    ("七亿八千万美元", [("money", 7.8e8, "USD")]),
    ("90亿美元", [("money", 9e9, "USD")]),
    ("€240 million to €310 million", [("money", 2.4e8, "EUR"), ("money", 3.1e8, "EUR")]),
    ("€240m", [("money", 2.4e8, "EUR")]),
    ("€500 billion", [("money", 5e11, "EUR")]),
    ("5000亿欧元", [("money", 5e11, "EUR")]),
    ("1 trillion yuan", [("money", 1e12, "CNY")]),
    ("RMB1tn", [("money", 1e12, "CNY")]),
    ("1万亿元", [("money", 1e12, "CNY")]),
    ("一万亿元", [("money", 1e12, "CNY")]),
    ("HK$7.8 billion", [("money", 7.8e9, "HKD")]),
    ("78亿港元", [("money", 7.8e9, "HKD")]),
    ("0.42元/瓦时至0.48元/瓦时", [("money", 0.42, "CNY"), ("money", 0.48, "CNY")]),
    ("一点五亿美元", [("money", 1.5e8, "USD")]),
    ("一万一千元", [("money", 11000.0, "CNY")]),
    ("100多亿元", [("money", 1e10, "CNY")]),
    # percentages and percentage points
    ("35%", PCT_35),
    ("35％", PCT_35),
    ("35 per cent", PCT_35),
    ("35 percent", PCT_35),
    ("百分之三十五", PCT_35),
    ("百分之一", [("percent", 1.0, None)]),
    ("百分之一点五", [("percent", 1.5, None)]),
    ("百分之一点七五", [("percent", 1.75, None)]),
    ("1.55%至1.65%", [("percent", 1.55, None), ("percent", 1.65, None)]),
    ("0.25 percentage point", QUARTER_POINT),
    ("25 basis points", QUARTER_POINT),
    ("25 bps", QUARTER_POINT),
    ("25个基点", QUARTER_POINT),
    ("0.5个百分点", [("percent", 0.5, "pp")]),
    ("10至20个基点", [("percent", 0.1, "pp"), ("percent", 0.2, "pp")]),
    # years, quarters, months
    ("2028", [("year", 2028.0, None)]),
    ("2028年", [("year", 2028.0, None)]),
    ("by mid-2029", [("year", 2029.0, None)]),
    ("Q3", QUARTER_3),
    ("third quarter", QUARTER_3),
    ("third-quarter", QUARTER_3),
    ("第三季度", QUARTER_3),
    ("三季度", QUARTER_3),
    ("3季度", QUARTER_3),
    ("第二财季", [("quarter", 2.0, None)]),
    ("Q4 2028", [("quarter", 4.0, None), ("year", 2028.0, None), ("period", 202854.0, None)]),
    ("2028年第四季度", [("quarter", 4.0, None), ("year", 2028.0, None), ("period", 202854.0, None)]),
    ("in May", [("month", 5.0, None)]),
    ("May 2026", [("month", 5.0, None), ("year", 2026.0, None), ("period", 202605.0, None)]),
    ("5月", [("month", 5.0, None)]),
    ("March", [("month", 3.0, None)]),
    # quantities
    ("8.5 GWh", ENERGY_8_5_GWH),
    ("8,500 MWh", ENERGY_8_5_GWH),
    ("8.5 gigawatt-hours", ENERGY_8_5_GWH),
    ("8.5吉瓦时", ENERGY_8_5_GWH),
    ("8500兆瓦时", ENERGY_8_5_GWH),
    ("850万千瓦时", ENERGY_8_5_GWH),
    ("85亿瓦时", ENERGY_8_5_GWH),
    ("85 MW", [("quantity", 8.5e7, "power")]),
    ("85 megawatts", [("quantity", 8.5e7, "power")]),
    ("85兆瓦", [("quantity", 8.5e7, "power")]),
    ("两千兆瓦时", [("quantity", 2e9, "energy")]),
    ("1040万TEU", [("quantity", 1.04e7, "teu")]),
    ("10.4 million TEU", [("quantity", 1.04e7, "teu")]),
    ("3纳米", [("quantity", 3.0, "length_nm")]),
    ("3nm", [("quantity", 3.0, "length_nm")]),
    # numbers inside names, vague amounts and words that only look like figures
    ("H200", []),
    ("A100", []),
    ("COVID-19", []),
    ("5G", []),
    ("G7", []),
    ("B2B", []),
    ("10-K", []),
    ("its annual 10-K filing", []),
    ("数十亿美元", []),
    ("数百万", []),
    ("几十亿", []),
    ("一些", []),
    ("进一步", []),
    ("之一", []),
    ("统一大市场", []),
    ("Duke may approve it", []),
    ("It may rise", []),
    ("a 100m sprint", []),
]


@pytest.mark.parametrize(("text", "expected"), PARSES, ids=[text for text, _ in PARSES])
def test_figure_parses_to_kind_value_and_unit(text: str, expected: list[Expected]) -> None:
    actual = parsed(text)
    assert same(actual, expected), actual


LIBERAL_ONLY: list[tuple[str, list[Expected]]] = [
    ("about one in four", [("number", 1.0, None), ("number", 4.0, None)]),
    ("五月", [("month", 5.0, None)]),
    ("二〇二六年", [("year", 2026.0, None)]),
]


@pytest.mark.parametrize(("text", "expected"), LIBERAL_ONLY, ids=[text for text, _ in LIBERAL_ONLY])
def test_sources_are_read_liberally_so_spelt_out_figures_are_found(
    text: str, expected: list[Expected]
) -> None:
    actual = parsed(text, liberal=True)
    assert same(actual, expected), actual


def test_number_words_are_read_in_sources_only() -> None:
    assert parsed("about one in four") == []
    assert parsed("about one in four", liberal=True) != []


@pytest.mark.parametrize(
    ("text", "approx"),
    [
        ("约66亿元", True),
        ("66亿元", False),
        ("100亿元左右", True),
        ("超过40吉瓦", True),
        ("more than 40 GW", True),
        ("about $780 million", True),
        ("$780 million", False),
        ("About $780 million", True),
        ("UP TO 12%", True),
        ("nearly\t12%", True),
        ("逾30亿元", True),
        ("接近3000辆", True),
        ("(about) 40 GW", False),
    ],
)
def test_hedged_figures_are_marked_approximate(text: str, approx: bool) -> None:
    assert one(text).approx is approx


def test_a_number_too_long_to_have_a_value_is_not_a_figure() -> None:
    assert parsed("1" * 400 + " million") == []
    assert parsed("from $5bn to $" + "1" * 400 + "bn") == [("money", 5e9, "USD")]


@pytest.mark.parametrize(
    ("wide", "narrow"),
    [("营收达到１２亿元", "营收达到12亿元"), ("同比增长１５％", "同比增长15%"), ("约１．５万辆", "约1.5万辆"),
     ("２０２５年第三季度", "2025年第三季度"), ("revenue of $１.２ billion", "revenue of $1.2 billion")],
)  # fmt: skip
def test_full_width_digits_read_as_ascii_and_are_quoted_as_written(wide: str, narrow: str) -> None:
    as_wide, as_narrow = figures_in(wide), figures_in(narrow)
    assert [f._replace(text="") for f in as_wide] == [f._replace(text="") for f in as_narrow]
    assert all(f.text in wide for f in as_wide)


def test_a_source_in_full_width_digits_grounds_an_answer_in_ascii() -> None:
    source = FigureIndex(figures_in("公司去年营收１２亿元，同比增长１５％。", liberal=True))
    assert all(source.has(figure) for figure in figures_in("营收12亿元，增长15%"))


def test_the_text_of_a_figure_is_what_was_written() -> None:
    assert one("about $780 million in a contract").text == "$780 million"
    assert one("合同金额约7.8亿美元。").text == "7.8亿美元"


# --- matching --------------------------------------------------------------------------------------------

MATCHES: list[tuple[str, str, bool]] = [
    # the same value written differently
    ("$900 million", "US$0.9 billion", True),
    ("$900 million", "9亿美元", True),
    ("$900 million", "九亿美元", True),
    ("$900M", "900 million dollars", True),
    ("$900 million", "90亿美元", False),
    ("$780 million", "7.8亿美元", True),
    ("百分之三十五", "35%", True),
    ("35 per cent", "35%", True),
    ("0.25 percentage point", "25个基点", True),
    ("25 basis points", "0.25 percentage point", True),
    ("0.25 percentage point", "0.5个百分点", False),
    ("8.5 GWh", "8,500 MWh", True),
    ("8.5 GWh", "85亿瓦时", True),
    ("1040万TEU", "10.4 million TEU", True),
    # tolerance: half a unit of the last digit written, capped at 5% of the value
    ("$0.9 billion", "$880 million", True),
    ("$880 million", "$0.9 billion", True),
    ("$0.9 billion", "$850 million", False),
    ("$1 billion", "$1.04 billion", True),
    ("$1 billion", "$1.1 billion", False),
    ("35%", "35.4%", True),
    ("35%", "36%", False),
    ("$780 million", "$790 million", False),
    # years, quarters and months match exactly
    ("2028", "2028年", True),
    ("2028", "2029", False),
    ("2028年", "2027年", False),
    ("Q3", "第三季度", True),
    ("Q3", "Q4", False),
    ("in May", "5月", True),
    ("in May", "6月", False),
    # kinds, currencies and dimensions that conflict do not match
    ("9亿美元", "9亿元", False),
    ("$900 million", "€900 million", False),
    ("78亿港元", "$7.8 billion", False),
    ("8.5 GWh", "8.5 GW", False),
    ("Q3", "3", False),
    ("35%", "$35", False),
    # a unit missing on one side does not conflict
    ("9亿", "9亿美元", True),
    ("900 million", "$900 million", True),
    ("10.4 million", "1040万TEU", True),
]


@pytest.mark.parametrize(("a", "b", "expected"), MATCHES, ids=[f"{a}~{b}" for a, b, _ in MATCHES])
def test_figures_match_within_precision_when_kinds_and_units_agree(a: str, b: str, expected: bool) -> None:
    assert one(a).matches(one(b)) is expected
    assert one(b).matches(one(a)) is expected, "matching is symmetric"


SLIPS: list[tuple[str, str, bool]] = [
    ("$780 billion", "$780 million", True),
    ("$7.8 billion", "$780 million", True),
    ("66万元", "66亿元", True),
    ("6.6亿元", "66亿元", True),
    ("85 GWh", "8.5 GWh", True),
    ("17.5%", "1.75%", True),
    ("16%", "1.6%", True),
    ("$790 million", "$780 million", False),
    ("$780 million", "$780 million", False),
    ("2029", "2028", False),
    ("90亿美元", "9亿元", False),
    ("85 GW", "8.5 GWh", False),
]


@pytest.mark.parametrize(("written", "source", "slip"), SLIPS, ids=[f"{a}<-{b}" for a, b, _ in SLIPS])
def test_a_moved_magnitude_is_recognised_as_a_slip_of_the_source_figure(
    written: str, source: str, slip: bool
) -> None:
    assert one(written).scaled_slip_of(one(source)) is slip


# --- properties ------------------------------------------------------------------------------------------


def plain(d: Decimal) -> str:
    """The shortest exact decimal writing of `d`: 12.50 -> "12.5", 3E+2 -> "300"."""
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def grouped(d: Decimal) -> str:
    """`d` with thousands separators: 1234567.5 -> "1,234,567.5"."""
    whole, _, fraction = plain(d).partition(".")
    return f"{int(whole):,}" + (f".{fraction}" if fraction else "")


def check_renderings(renderings: list[tuple[str, float, str]]) -> None:
    """Each text is one figure of the given kind and value, and every two of them match."""
    figures = []
    for text, value, kind in renderings:
        found = figures_in(text)
        assert len(found) == 1, (text, found)
        assert found[0].kind == kind, (text, found[0])
        assert math.isclose(found[0].value, value, rel_tol=1e-9), (text, found[0].value, value)
        figures.append(found[0])
    for a, b in combinations(figures, 2):
        assert a.matches(b), (a.text, b.text)


decimals = st.integers(min_value=0, max_value=2)


@st.composite
def amounts(draw: st.DrawFn) -> Decimal:
    """An amount of 1 to 4 significant digits between 10^4 and ~10^13: a whole number of 万, and at
    most two decimals when written in millions."""
    mantissa = draw(st.integers(min_value=1, max_value=9_999))
    exponent = draw(st.integers(min_value=4, max_value=9))
    return Decimal(mantissa).scaleb(exponent)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(amount=amounts())
@example(amount=Decimal(780_000_000))
@example(amount=Decimal(900_000_000))
def test_an_amount_of_dollars_parses_back_in_every_arabic_style(amount: Decimal) -> None:
    value = float(amount)
    millions, billions = amount.scaleb(-6), amount.scaleb(-9)
    yi, wan = amount.scaleb(-8), amount.scaleb(-4)
    renderings = [
        (f"${grouped(amount)}", value, "money"),
        (f"${grouped(millions)} million", value, "money"),
        (f"US${plain(millions)}M", value, "money"),
        (f"${grouped(billions)} billion", value, "money"),
        (f"${plain(billions)}bn", value, "money"),
        (f"{grouped(millions)} million dollars", value, "money"),
        (f"{plain(yi)}亿美元", value, "money"),
        (f"{plain(wan)}万美元", value, "money"),
    ]
    check_renderings(renderings)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(number=st.integers(min_value=1, max_value=99_999))
@example(number=11_000)
@example(number=9)
def test_an_integer_amount_in_chinese_numerals_parses_back(number: int) -> None:
    numerals = cn2an.an2cn(number)
    renderings = [
        (f"{numerals}亿美元", number * 1e8, "money"),
        (f"{number}亿美元", number * 1e8, "money"),
        (f"${grouped(Decimal(number).scaleb(8))}", number * 1e8, "money"),
    ]
    check_renderings(renderings)
    if number < 10_000:
        check_renderings(
            [
                (f"{numerals}万元", number * 1e4, "money"),
                (f"{number}万元", number * 1e4, "money"),
                (f"{grouped(Decimal(number).scaleb(4))} yuan", number * 1e4, "money"),
            ]
        )


@settings(max_examples=200, deadline=None, derandomize=True)
@given(number=st.integers(min_value=1, max_value=10**7), places=decimals, digits=st.integers(0, 99))
def test_a_plain_number_parses_back_with_or_without_separators(number: int, places: int, digits: int) -> None:
    d = Decimal(number) + (Decimal(digits % 10**places).scaleb(-places) if places else Decimal(0))
    for text in {plain(d), grouped(d)}:
        found = figures_in(f"a total of {text} units")
        assert len(found) == 1, (text, found)
        assert math.isclose(found[0].value, float(d), rel_tol=1e-12), (text, found[0])


@st.composite
def percentages(draw: st.DrawFn) -> Decimal:
    """0.01 to 100 with at most two decimals."""
    return Decimal(draw(st.integers(min_value=1, max_value=10_000))).scaleb(-2).normalize()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(pct=percentages())
@example(pct=Decimal(35))
@example(pct=Decimal("1.75"))
def test_a_percentage_parses_back_in_arabic_styles(pct: Decimal) -> None:
    value = float(pct)
    text = plain(pct)
    check_renderings(
        [
            (f"{text}%", value, "percent"),
            (f"{text} per cent", value, "percent"),
            (f"{text} percent", value, "percent"),
            (f"百分之{text}", value, "percent"),
        ]
    )


@settings(max_examples=200, deadline=None, derandomize=True)
@given(pct=percentages())
@example(pct=Decimal(35))
@example(pct=Decimal(1))
@example(pct=Decimal("1.5"))
def test_a_percentage_in_chinese_numerals_parses_back(pct: Decimal) -> None:
    value = float(pct)
    check_renderings(
        [
            (f"百分之{cn2an.an2cn(plain(pct))}", value, "percent"),
            (f"{plain(pct)}%", value, "percent"),
        ]
    )


@settings(max_examples=200, deadline=None, derandomize=True)
@given(amount=amounts())
def test_an_energy_amount_parses_back_in_every_unit(amount: Decimal) -> None:
    wh = float(amount) * 1e3  # the drawn amount is in kWh
    renderings = [
        (f"{grouped(amount)} kWh", wh, "quantity"),
        (f"{grouped(amount.scaleb(-3))} MWh", wh, "quantity"),
        (f"{plain(amount.scaleb(-6))} GWh", wh, "quantity"),
        (f"{plain(amount)}千瓦时", wh, "quantity"),
        (f"{plain(amount.scaleb(-4))}万千瓦时", wh, "quantity"),
        (f"{plain(amount.scaleb(-6))}吉瓦时", wh, "quantity"),
    ]
    check_renderings(renderings)


# --- the fast scans find what a plain scan finds ------------------------------------------------

SCAN_ALPHABET = st.sampled_from(
    [*"0123456789.,$€£¥-–~ %xkmbKMBU SDHRCNYEGPJ\n", "US$", "HK$", "RMB", "USD", "bn", "万", "亿", "约"]
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(pieces=st.lists(SCAN_ALPHABET, max_size=40))
def test_english_figures_are_found_as_a_scan_at_every_character_finds_them(pieces: list[str]) -> None:
    """The English scan jumps from digit to digit; it must find exactly the plain scan's matches."""
    text = "".join(pieces)
    expected = [m.span() for m in figures._EN_FIGURE.finditer(text)]
    assert [m.span() for m in figures._english_matches(text)] == expected


@settings(max_examples=300, deadline=None, derandomize=True)
@given(spans=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 8)), max_size=25))
def test_taken_spans_overlap_exactly_when_a_pairwise_test_says_so(spans: list[tuple[int, int]]) -> None:
    taken, kept = figures._Spans(), []
    for start, width in spans:
        span = (start, start + width)
        overlaps = any(span[0] < end and begin < span[1] for begin, end in kept)
        assert taken.overlaps(span) == overlaps
        if not overlaps:
            taken.add(span)
            kept.append(span)


FIGURE_ALPHABET = st.sampled_from(
    [*"0123456789.,$%- \n", "US$", "bn", "million", "万", "亿", "美元", "约", "about ", "Q3 ", "2026年",
     "第三季度", "三", "十", "百分之", "个百分点", "kWh", "吨", "May ", "nearly "]
)  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(texts=st.lists(st.lists(FIGURE_ALPHABET, max_size=20).map("".join), min_size=1, max_size=6))
@example(texts=["US$ 5 bn", "US$5 bn", "US$5bn"])  # the same number and groups, written differently
@example(texts=["三亿美元", "3亿美元", "约3亿美元"])
def test_a_memo_shared_by_many_texts_gives_each_text_its_own_figures(texts: list[str]) -> None:
    """A check parses all the fields of an answer with one memo: a figure read in one field is
    reused in the next, and must come out exactly as that field alone would give it."""
    memo: figures.Memo = {}
    for text in texts:
        assert figures_in(text, memo=memo) == figures_in(text)
        assert figures_in(text, liberal=True, memo=memo) == figures_in(text, liberal=True)


def test_a_figure_repeated_in_another_text_is_read_from_the_memo() -> None:
    memo: figures.Memo = {}
    first = figures_in("Revenue rose to $3.2 billion, up 12%.", memo=memo)
    kept = dict(memo)
    second = figures_in("Sales of $3.2 billion; margin up 12%.", memo=memo)
    assert memo == kept, "nothing new was read"
    assert [f.text for f in second] == [f.text for f in first] == ["$3.2 billion", "12%"]


def _texts_around(words: list[str]) -> list[str]:
    """Each word, cut short, run on, and followed by a letter or space, in both cases."""
    texts = []
    for word in words:
        for text in (word, word[:-1], word + "s", word + "x", word + " ", word + "-hour", word[:2]):
            texts += [text, text.upper()]
    return texts


@pytest.mark.parametrize("words", [
    [u for u in figures._UNITS if u.isascii()],
    [u for u in figures._UNITS if not u.isascii()],
    list(figures._ZH_CURRENCIES),
    list(figures._EN_NUMBER_WORDS),
])  # fmt: skip
def test_a_tree_of_alternatives_matches_as_the_words_longest_first(words: list[str]) -> None:
    """The unit, currency and number-word patterns are trees of shared beginnings (faster to try);
    on any text they match what the words joined longest first match, followed by a word edge."""
    joined = "|".join(sorted(map(re.escape, words), key=len, reverse=True))
    tree = figures._alternatives(words)
    for edge in ("", r"\b", "(?![A-Za-z])"):
        plain = re.compile(f"(?:{joined}){edge}", re.IGNORECASE | re.ASCII)
        fast = re.compile(f"(?:{tree}){edge}", re.IGNORECASE | re.ASCII)
        for text in _texts_around(words):
            expected, got = plain.match(text), fast.match(text)
            assert (got and got.group(0)) == (expected and expected.group(0)), (text, edge)


@pytest.mark.parametrize("prefix", ["US$", "HK$", "A$", "C$", "S$", "USD", "EUR", "GBP", "RMB", "CNY", "HKD",
                                    "JPY", "$", "€", "£", "¥", "usd", "jpy", "us$"])  # fmt: skip
@pytest.mark.parametrize("number", ["5", " 5", ".5", " .5"])
def test_the_search_for_a_figure_starts_at_its_currency_not_at_its_digit(prefix: str, number: str) -> None:
    """The search for an English figure starts at its first digit unless a currency or a decimal
    point may end just before it (or before a space before it): each such prefix is still read."""
    value = float(number)
    (figure,) = figures_in(f"Sales rose to {prefix}{number} million")
    assert (figure.kind, figure.value, figure.text) == ("money", value * 1e6, f"{prefix}{number} million")


@pytest.mark.parametrize(("text", "expected"), [
    ("主力模型“极曜-3”采用MoE架构", []),  # a model's name, as "Jiyao-3" is in English
    ("歼-20战机首次亮相", []),
    ("同比-3%", [("percent", 3.0)]),  # a figure with its percent sign is one
    ("2025年-2026", [("year", 2025.0), ("year", 2026.0)]),  # after a figure: a range
    ("三-5", [("number", 5.0)]),  # after a numeral: a range
    ("极曜-3的参数约6000亿", [("number", 6e11)]),
    ("东风-41", []),
    ("会议于6日-8日举行", [("number", 6.0), ("number", 8.0)]),  # after a number and its unit: a range
    ("销量为100辆-200辆", [("number", 100.0), ("number", 200.0)]),
    ("每股收益-0.12", [("number", 0.12)]),  # a value below zero, not a name
    ("增速为-3", [("number", 3.0)]),
    ("气温-5℃", [("number", 5.0)]),
])  # fmt: skip
def test_a_number_joined_to_a_han_name_is_part_of_the_name(text: str, expected: list[object]) -> None:
    assert [(f.kind, f.value) for f in figures_in(text)] == expected
