"""Validation without the source: parsing a reply, the schema, structure, language and markup checks.

Every defect is planted in a copy of a good fixture answer, in the English and in the Chinese answer.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.schema import LANGS, ChineseAnswer, EnglishAnswer, Lang, ModelPart
from pipeline.validate import Finding, check_part, errors, parse_answer
from tests.conftest import RECORDINGS

ARTICLE = "ecb-cuts-rates-to-1-75-as-inflation-undershoots-target-4cd906df18"

Mutation = Callable[[dict[str, Any]], None]


def recorded_answer(article_id: str, call: str) -> str:
    document = json.loads((RECORDINGS / article_id / f"{call}-0.json").read_text(encoding="utf-8"))
    content = document["response"]["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    return content


GOOD_TEXT: dict[str, str] = {call: recorded_answer(ARTICLE, call) for call in ("en", "zh")}


def good(call: str) -> dict[str, Any]:
    answer = json.loads(GOOD_TEXT[call])
    assert isinstance(answer, dict)
    return answer


# --- planting defects -------------------------------------------------------------------------------------


def _walk(data: Any, path: str) -> tuple[Any, str | int]:
    """The container holding the last step of a dotted path ("en.tldr.0") and that step."""
    steps: list[str | int] = [int(s) if s.isdigit() else s for s in path.split(".")]
    for step in steps[:-1]:
        data = data[step]
    return data, steps[-1]


def put(path: str, value: Any) -> Mutation:
    def mutate(answer: dict[str, Any]) -> None:
        container, last = _walk(answer, path)
        container[last] = value

    return mutate


def edit(path: str, change: Callable[[Any], Any]) -> Mutation:
    def mutate(answer: dict[str, Any]) -> None:
        container, last = _walk(answer, path)
        container[last] = change(container[last])

    return mutate


def resize(path: str, count: int) -> Mutation:
    """Cut a list to `count` items, or grow it with copies of its own items."""

    def grow(items: list[Any]) -> list[Any]:
        return [copy.deepcopy(items[i % len(items)]) for i in range(count)]

    return edit(path, grow)


def remove(path: str) -> Mutation:
    def mutate(answer: dict[str, Any]) -> None:
        container, last = _walk(answer, path)
        del container[last]

    return mutate


def findings_for(call: Lang, answer: dict[str, Any]) -> list[Finding]:
    """What parse_answer and check_part say about `answer`, merged with the other call's good answer."""
    parsed, findings = parse_answer(call, json.dumps(answer, ensure_ascii=False))
    if parsed is None:
        return findings
    en = parsed if call == "en" else EnglishAnswer.model_validate(good("en"))
    zh = parsed if call == "zh" else ChineseAnswer.model_validate(good("zh"))
    assert isinstance(en, EnglishAnswer) and isinstance(zh, ChineseAnswer)
    return findings + check_part(ModelPart(scores=en.scores, tags=en.tags, en=en.en, zh=zh.zh))


@dataclass(frozen=True)
class Defect:
    name: str
    call: Lang
    mutate: Mutation
    check: str
    path: str
    message: str
    severity: str = "error"

    def planted(self) -> list[Finding]:
        answer = good(self.call)
        self.mutate(answer)
        return findings_for(self.call, answer)


CHINESE_SENTENCE = "央行表示将继续实施稳健的货币政策，保持流动性合理充裕。"
ENGLISH_SENTENCE = "The central bank cut its deposit rate again as inflation stayed below target."
SCRIPT = "<script>alert(1)</script>"

COUNTS = [
    ("tldr", 2, "at least 3"),
    ("tldr", 7, "at most 6"),
    ("key_data", 2, "at least 3"),
    ("key_data", 11, "at most 10"),
    ("analysis", 2, "at least 3"),
    ("analysis", 7, "at most 6"),
    ("insights", 2, "at least 3"),
    ("insights", 6, "at most 5"),
    ("faq", 2, "at least 3"),
    ("faq", 6, "at most 5"),
]

BLANKS = [
    ("title", "title"),
    ("summary", "summary"),
    ("tldr.1", "tldr[1]"),
    ("key_data.0.info", "key_data[0].info"),
    ("analysis.2", "analysis[2]"),
    ("faq.1.answer", "faq[1].answer"),
]


def section_defects(lang: Lang) -> list[Defect]:
    """Defects planted in the section of either language."""
    defects = [
        Defect(f"{lang}-{name}-{n}", lang, resize(f"{lang}.{name}", n), "structure", f"{lang}.{name}", msg)
        for name, n, msg in COUNTS
    ]
    defects += [
        Defect(f"{lang}-blank-{dotted}", lang, put(f"{lang}.{dotted}", " \t\n  "), "structure",
               f"{lang}.{rule}", "whitespace-only")
        for dotted, rule in BLANKS
    ]  # fmt: skip
    defects += [
        Defect(f"{lang}-duplicate-tldr", lang,
               lambda a: a[lang]["tldr"].__setitem__(3, "  " + a[lang]["tldr"][0].upper() + " "),
               "structure", f"{lang}.tldr[3]", "duplicate item"),
        Defect(f"{lang}-duplicate-faq-question", lang,
               lambda a: a[lang]["faq"][2].__setitem__("question", a[lang]["faq"][0]["question"]),
               "structure", f"{lang}.faq[2]", "duplicate item"),
        Defect(f"{lang}-script-in-summary", lang, edit(f"{lang}.summary", lambda s: s + SCRIPT),
               "markup", f"{lang}.summary", "HTML or script", "warning"),
        Defect(f"{lang}-script-in-faq-answer", lang, edit(f"{lang}.faq.0.answer", lambda s: SCRIPT + s),
               "markup", f"{lang}.faq[0].answer", "HTML or script", "warning"),
        Defect(f"{lang}-title-too-long", lang, edit(f"{lang}.title", lambda s: s * 60), "structure",
               f"{lang}.title", "at most 200"),
    ]  # fmt: skip
    return defects


ENGLISH_DEFECTS = [
    Defect("en-chinese-sentence-in-tldr", "en", edit("en.tldr.0", lambda s: f"{s} {CHINESE_SENTENCE}"),
           "language", "en.tldr[0]", "written in Chinese"),
    Defect("en-chinese-summary", "en", put("en.summary", CHINESE_SENTENCE * 2), "language", "en.summary",
           "written in Chinese"),
    Defect("en-chinese-key-data-info", "en", put("en.key_data.1.info", CHINESE_SENTENCE), "language",
           "en.key_data[1].info", "written in Chinese"),
    Defect("en-chinese-faq-answer", "en", edit("en.faq.2.answer", lambda s: f"{CHINESE_SENTENCE} {s}"),
           "language", "en.faq[2].answer", "written in Chinese"),
    Defect("score-hot--1", "en", put("scores.hot", -1), "structure", "scores.hot",
           "greater than or equal to 0"),
    Defect("score-hot-101", "en", put("scores.hot", 101), "structure", "scores.hot",
           "less than or equal to 100"),
    Defect("score-quality--1", "en", put("scores.quality", -1), "structure", "scores.quality",
           "greater than or equal to 0"),
    Defect("score-impact-101", "en", put("scores.impact", 101), "structure", "scores.impact",
           "less than or equal to 100"),
    Defect("tags-1", "en", resize("tags", 1), "structure", "tags", "at least 2"),
    Defect("tags-7", "en", put("tags", [{"en": f"Topic {i}", "zh": f"话题{i}"} for i in range(7)]),
           "structure", "tags", "at most 6"),
    Defect("tag-zh-label-in-english", "en", put("tags.0.zh", "Monetary policy"), "language", "tags[0].zh",
           "not written in Chinese"),
    Defect("tag-en-label-in-chinese", "en", put("tags.1.en", "欧洲央行"), "language", "tags[1].en",
           "contains Chinese"),
    Defect("duplicate-tags", "en", edit("tags", lambda t: [*t, {"en": t[0]["en"].upper(), "zh": "重复"}]),
           "structure", "tags", "duplicate tags"),
]  # fmt: skip

CHINESE_DEFECTS = [
    Defect("zh-english-summary", "zh", put("zh.summary", ENGLISH_SENTENCE), "language", "zh.summary",
           "not written in Chinese"),
    Defect("zh-english-tldr", "zh", put("zh.tldr.1", ENGLISH_SENTENCE), "language", "zh.tldr[1]",
           "not written in Chinese"),
    Defect("zh-english-analysis", "zh", put("zh.analysis.0", f"{ENGLISH_SENTENCE}\n{ENGLISH_SENTENCE}"),
           "language", "zh.analysis[0]", "not written in Chinese"),
    Defect("zh-mostly-english-faq-answer", "zh", put("zh.faq.0.answer", f"欧洲央行 {ENGLISH_SENTENCE}"),
           "language", "zh.faq[0].answer", "mostly English"),
    Defect("zh-english-key-data-info", "zh", put("zh.key_data.2.info", ENGLISH_SENTENCE), "language",
           "zh.key_data[2].info", "not written in Chinese"),
]  # fmt: skip

DEFECTS = section_defects("en") + section_defects("zh") + ENGLISH_DEFECTS + CHINESE_DEFECTS


def test_the_good_answers_have_no_findings() -> None:
    assert findings_for("en", good("en")) == []
    assert findings_for("zh", good("zh")) == []


@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_planted_defect_is_found_at_its_path(defect: Defect) -> None:
    findings = defect.planted()
    matching = [
        f
        for f in findings
        if f.check == defect.check
        and f.severity == defect.severity
        and f.lang == defect.call
        and f.path == defect.path
        and defect.message in f.message
    ]
    assert matching, [f.one_line() for f in findings]
    if defect.severity == "warning":
        assert errors(findings) == [], "a warning-level defect blocks nothing"
    else:
        assert errors(findings)


@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_every_finding_is_complete_and_prints_on_one_line(defect: Defect) -> None:
    findings = defect.planted()
    assert findings
    for finding in findings:
        assert finding.check in {"schema", "structure", "language", "markup"}
        assert finding.severity in {"error", "warning"}
        assert finding.lang in {"en", "zh"}
        assert finding.path
        line = finding.one_line()
        assert "\n" not in line and "\r" not in line
        assert line.startswith(f"[{finding.severity} {finding.check}] {finding.path}: {finding.message}")
        assert finding.to_dict()["path"] == finding.path


def test_one_line_flattens_and_clips_quoted_text() -> None:
    finding = Finding(
        "language", "error", "zh", "zh.summary", "not written in Chinese", "line one\nline two " * 20
    )
    line = finding.one_line()
    assert "\n" not in line
    assert '("line one line two' in line
    assert line.endswith('…")')


def test_markup_in_a_field_is_a_warning_not_an_error() -> None:
    for call in LANGS:
        answer = good(call)
        answer[call]["tldr"][0] += SCRIPT
        findings = findings_for(call, answer)
        assert [(f.check, f.severity, f.path) for f in findings] == [("markup", "warning", f"{call}.tldr[0]")]
        assert findings[0].text is not None and SCRIPT in findings[0].text


@pytest.mark.parametrize("marker", ["1. ", "2) ", "3、", "- ", "• "])
def test_a_list_item_with_its_own_marker_is_a_warning(marker: str) -> None:
    for call in LANGS:
        answer = good(call)
        answer[call]["tldr"][1] = marker + answer[call]["tldr"][1]
        answer[call]["insights"][0] = marker + answer[call]["insights"][0]
        findings = findings_for(call, answer)
        assert [(f.check, f.severity, f.path) for f in findings] == [
            ("markup", "warning", f"{call}.tldr[1]"), ("markup", "warning", f"{call}.insights[0]")
        ]  # fmt: skip
        assert f"list marker {marker.strip()!r}" in findings[0].message


def test_a_number_that_starts_an_item_is_not_a_list_marker() -> None:
    answer = good("en")
    answer["en"]["tldr"][1] = "1.5% of output moved abroad"
    answer["en"]["insights"][0] = "2026 is the year capacity doubles"
    assert findings_for("en", answer) == []


# --- parse_answer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["en", "zh"])
@pytest.mark.parametrize("content", ["", "   \n\t ", None], ids=["empty", "whitespace", "none"])
def test_empty_reply_is_one_schema_error(call: Lang, content: str | None) -> None:
    answer, findings = parse_answer(call, content)
    assert answer is None
    assert [(f.check, f.severity, f.lang, f.path) for f in findings] == [("schema", "error", call, "")]
    assert "empty" in findings[0].message


@pytest.mark.parametrize("call", ["en", "zh"])
@pytest.mark.parametrize(
    "content",
    ["I am sorry, here is no JSON.", '{"zh": {"title": "欧洲央行', "{'zh': {}}", "```json\n{oops}\n```"],
    ids=["prose", "truncated", "single-quotes", "fenced-garbage"],
)
def test_non_json_reply_is_one_schema_error(call: Lang, content: str) -> None:
    answer, findings = parse_answer(call, content)
    assert answer is None
    assert [(f.check, f.severity, f.lang) for f in findings] == [("schema", "error", call)]
    assert "not valid JSON" in findings[0].message


WRAPPINGS = [
    pytest.param("```json\n{}\n```", id="json-fence"),
    pytest.param("```\n{}\n```", id="bare-fence"),
    pytest.param("Here is the analysis you asked for:\n\n{}\n\nLet me know if you need changes.", id="prose"),
    pytest.param("Here it is:\n```json\n{}\n```\nDone.", id="fence-and-prose"),
    pytest.param("  \n{}\n\n", id="padding"),
]


@pytest.mark.parametrize("call", ["en", "zh"])
@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_json_in_a_fence_or_among_prose_is_accepted(call: Lang, wrapping: str) -> None:
    content = wrapping.replace("{}", GOOD_TEXT[call])
    answer, findings = parse_answer(call, content)
    assert findings == []
    expected = (EnglishAnswer if call == "en" else ChineseAnswer).model_validate_json(GOOD_TEXT[call])
    assert answer == expected


def _other_call_answer(answer: dict[str, Any]) -> None:
    answer.clear()
    answer.update(good("en"))


WRONG_SHAPES = [
    ("en", remove("scores"), "scores", "schema", "Field required"),
    ("en", put("scores.hot", "very hot"), "scores.hot", "schema", "valid integer"),
    ("en", put("en.tldr", "one bullet only"), "en.tldr", "schema", "valid list"),
    ("en", remove("en.key_data.0.metric"), "en.key_data[0].metric", "schema", "Field required"),
    ("en", put("notes", "extra"), "notes", "schema", "Extra inputs"),
    ("en", put("tags.0", "Monetary policy"), "tags[0]", "schema", "valid dictionary"),
    ("zh", _other_call_answer, "zh", "schema", "Field required"),
    ("zh", remove("zh.faq.0.answer"), "zh.faq[0].answer", "schema", "Field required"),
    ("zh", put("zh.summary", None), "zh.summary", "schema", "valid string"),
    ("zh", put("zh.key_data.1.metric", 1.75), "zh.key_data[1].metric", "schema", "valid string"),
    ("zh", put("zh.analysis.1", ""), "zh.analysis[1]", "structure", "at least 1 character"),
]


@pytest.mark.parametrize(
    ("call", "mutate", "path", "check", "message"),
    WRONG_SHAPES,
    ids=[f"{row[0]}-{row[2]}-{row[4]}" for row in WRONG_SHAPES],
)
def test_wrong_shape_gives_findings_with_paths(
    call: Lang, mutate: Mutation, path: str, check: str, message: str
) -> None:
    data = good(call)
    mutate(data)
    answer, findings = parse_answer(call, json.dumps(data, ensure_ascii=False))
    assert answer is None
    assert findings
    assert all(f.severity == "error" and f.lang == call for f in findings)
    assert any(f.path == path and f.check == check and message in f.message for f in findings), [
        f.one_line() for f in findings
    ]


def test_json_that_is_not_an_object_is_a_schema_error() -> None:
    answer, findings = parse_answer("zh", "[1, 2, 3]")
    assert answer is None
    assert [(f.check, f.severity, f.lang) for f in findings] == [("schema", "error", "zh")]


# --- the fixture answers ---------------------------------------------------------------------------------


def _recorded_pairs() -> list[Any]:
    return [
        pytest.param(recorded_answer(d.name, "en"), recorded_answer(d.name, "zh"), id=f"recording-{d.name}")
        for d in sorted(RECORDINGS.iterdir())
        if d.is_dir()
    ]


FIXTURE_PAIRS = _recorded_pairs()


def test_there_are_fixture_pairs_for_every_article() -> None:
    assert len(_recorded_pairs()) == 13


@pytest.mark.parametrize(("en_text", "zh_text"), FIXTURE_PAIRS)
def test_every_fixture_answer_pair_passes_check_part(en_text: str, zh_text: str) -> None:
    en, en_findings = parse_answer("en", en_text)
    zh, zh_findings = parse_answer("zh", zh_text)
    assert en_findings == [] and zh_findings == []
    assert isinstance(en, EnglishAnswer) and isinstance(zh, ChineseAnswer)
    findings = check_part(ModelPart(scores=en.scores, tags=en.tags, en=en.en, zh=zh.zh))
    assert errors(findings) == [], [f.one_line() for f in findings]
