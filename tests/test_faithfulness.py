"""Faithfulness to the source article: `validate_document` and `newsdesk validate`.

Defects are planted, one at a time, in the recorded answers of four fixtures (two English sources,
energy-iron-air-storage.txt and central-bank-rate-decision.md; two Chinese ones, zh-rrr-cut.txt in GBK
and zh-energy-storage-tender.md) and of one line of wire-briefs.jsonl, in the English and in the
Chinese section. Every defect must be reported as an error of the expected check, language and field.
Correct answers, also when their figures are written differently, must give no error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import Settings
from pipeline.ingest import Limits
from pipeline.ingest.article import Article
from pipeline.prompts import Glossary, PromptBook
from pipeline.schema import Lang
from pipeline.validate.document import load_source, validate_document
from pipeline.validate.findings import Finding
from tests.conftest import ARTICLES, RECORDINGS, ROOT, cli_env

DUKE = "duke-energy-orders-8-5-gwh-of-iron-air-batteries-in-largest-7f7822e172"  # en, .txt
ECB = "ecb-cuts-rates-to-1-75-as-inflation-undershoots-target-4cd906df18"  # en, .md
RRR = "zh-rrr-cut-c355db2d2c"  # zh, GBK .txt
TENDER = "zh-energy-storage-tender-d12ceb608b"  # zh, .md
WIRE = "wire-briefs-2-abd14baebd"  # zh, line 2 of a .jsonl file
MEDICARE = "medicare-s-negotiated-drug-prices-saved-3-1-billion-in-first-08a5fbc019"  # en, .htm
ZH_AI = "zh-ai-model-funding-8069923ba0"  # zh, .html

SOURCES = {
    DUKE: "energy-iron-air-storage.txt",
    ECB: "central-bank-rate-decision.md",
    RRR: "zh-rrr-cut.txt",
    TENDER: "zh-energy-storage-tender.md",
    WIRE: "wire-briefs.jsonl:2",
    MEDICARE: "drug-pricing-reform.htm",
    ZH_AI: "zh-ai-model-funding.html",
}
LANGUAGES = {DUKE: "en", ECB: "en", RRR: "zh", TENDER: "zh", WIRE: "zh", MEDICARE: "en", ZH_AI: "zh"}

Data = dict[str, Any]
Mutation = Callable[[Data], None]


def source_spec(article_id: str) -> str:
    return str(ARTICLES / SOURCES[article_id])


@cache
def source(article_id: str) -> Article:
    settings = Settings()
    return load_source(source_spec(article_id), Limits(settings.max_input_bytes, settings.max_input_tokens))


@cache
def glossary() -> Glossary:
    return PromptBook(Settings()).glossary


@cache
def _recorded_text(article_id: str) -> str:
    part: Data = {}
    for call in ("en", "zh"):
        document = json.loads((RECORDINGS / article_id / f"{call}-0.json").read_text(encoding="utf-8"))
        part.update(json.loads(document["response"]["choices"][0]["message"]["content"]))
    return json.dumps(part, ensure_ascii=False)


def recorded(article_id: str) -> Data:
    """The part the model wrote (scores, tags, en, zh), a fresh copy."""
    data = json.loads(_recorded_text(article_id))
    assert isinstance(data, dict)
    return data


def findings_for(article_id: str, data: Data) -> list[Finding]:
    return validate_document(data, source(article_id), glossary())


def lines(findings: list[Finding]) -> list[str]:
    return [f.one_line() for f in findings]


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


# --- planting defects ------------------------------------------------------------------------------------


def _walk(data: Any, dotted: str) -> tuple[Any, str | int]:
    steps: list[str | int] = [int(s) if s.isdigit() else s for s in dotted.split(".")]
    for step in steps[:-1]:
        data = data[step]
    return data, steps[-1]


def get(data: Data, dotted: str) -> Any:
    container, last = _walk(data, dotted)
    return container[last]


def swap(dotted: str, old: str, new: str) -> Mutation:
    """Replace `old` by `new` in one field; `old` must be there (so a changed fixture is noticed)."""

    def mutate(data: Data) -> None:
        container, last = _walk(data, dotted)
        assert old in container[last], f"{old!r} is not in {dotted}: {container[last]!r}"
        container[last] = container[last].replace(old, new)

    return mutate


def put(dotted: str, value: Any) -> Mutation:
    def mutate(data: Data) -> None:
        container, last = _walk(data, dotted)
        container[last] = value

    return mutate


def append(dotted: str, text: str) -> Mutation:
    def mutate(data: Data) -> None:
        container, last = _walk(data, dotted)
        container[last] = container[last] + text

    return mutate


def copy_field(source_path: str, target_path: str) -> Mutation:
    def mutate(data: Data) -> None:
        container, last = _walk(data, target_path)
        container[last] = get(data, source_path)

    return mutate


def drop(dotted: str) -> Mutation:
    def mutate(data: Data) -> None:
        container, last = _walk(data, dotted)
        del container[last]

    return mutate


def keep_first(dotted: str, count: int) -> Mutation:
    def mutate(data: Data) -> None:
        container, last = _walk(data, dotted)
        container[last] = container[last][:count]

    return mutate


FIGURE = ("grounding", "parity")  # a TL;DR or key-data figure in neither the source nor the other language


@dataclass(frozen=True)
class Defect:
    id: str
    article: str
    mutate: Mutation
    lang: Lang
    path: str
    checks: tuple[str, ...]
    message: str = ""  # expected in the message of the first check's finding

    def data(self) -> Data:
        data = recorded(self.article)
        self.mutate(data)
        return data

    def missing(self, findings: list[Finding]) -> list[str]:
        """The expected (check, path) errors that are not among `findings`."""
        absent = []
        for i, check in enumerate(self.checks):
            message = self.message if i == 0 else ""
            if not any(
                f.check == check
                and f.severity == "error"
                and f.lang == self.lang
                and f.path == self.path
                and message in f.message
                for f in findings
            ):
                absent.append(
                    f"{check} error at {self.lang}:{self.path}" + (f" ({message})" if message else "")
                )
        return absent


TRADITIONAL_DUKE_TLDR = "杜克能源向Form Energy訂購85兆瓦鐵空氣電池，最長可連續放電100小時，儲能規模約8.5GWh。"
SLIP = "magnitude moved"

DEFECTS = [
    # wrong year
    Defect("duke-en-year-tldr", DUKE, swap("en.tldr.2", "2028", "2027"), "en", "en.tldr[2]", FIGURE),
    Defect("duke-zh-year-tldr", DUKE, swap("zh.tldr.2", "2028年", "2027年"), "zh", "zh.tldr[2]", FIGURE),
    Defect("rrr-en-year-faq", RRR, swap("en.faq.0.answer", "June 15, 2026", "June 15, 2027"), "en",
           "en.faq[0].answer", ("grounding",)),
    Defect("rrr-zh-year-summary", RRR, swap("zh.summary", "2026年6月15日", "2027年6月15日"), "zh",
           "zh.summary", ("grounding",)),
    Defect("duke-en-year-swapped-for-another-source-year", DUKE, swap("en.tldr.2", "2028", "2029"), "en",
           "en.tldr[2]", ("grounding",)),
    Defect("duke-zh-year-swapped-for-another-source-year", DUKE, swap("zh.tldr.2", "2028年", "2029年"), "zh",
           "zh.tldr[2]", ("grounding",)),
    Defect("duke-en-year-after-a-hyphen", DUKE, swap("en.tldr.2", "mid-2029", "mid-2031"), "en", "en.tldr[2]",
           ("grounding",)),
    # a moved decimal point
    Defect("duke-en-decimal-tldr", DUKE, swap("en.tldr.0", "8.5 GWh", "85 GWh"), "en", "en.tldr[0]", FIGURE,
           SLIP),
    Defect("duke-zh-decimal-tldr", DUKE, swap("zh.tldr.0", "8.5GWh", "85GWh"), "zh", "zh.tldr[0]", FIGURE,
           SLIP),
    Defect("ecb-en-decimal-percent-title", ECB, swap("en.title", "1.75%", "17.5%"), "en", "en.title",
           ("grounding",)),
    Defect("ecb-zh-decimal-percent-title", ECB, swap("zh.title", "1.75%", "17.5%"), "zh", "zh.title",
           ("grounding",)),
    Defect("tender-en-decimal-faq", TENDER,
           swap("en.faq.1.answer", "0.55 yuan per watt-hour", "5.5 yuan per watt-hour"), "en",
           "en.faq[1].answer", ("grounding",), SLIP),
    Defect("tender-zh-decimal-faq", TENDER, swap("zh.faq.1.answer", "0.55元/瓦时", "5.5元/瓦时"), "zh",
           "zh.faq[1].answer", ("grounding",), SLIP),
    # 万/亿 confusion
    Defect("tender-zh-wan-for-yi-tldr", TENDER, swap("zh.tldr.1", "66亿元", "66万元"), "zh", "zh.tldr[1]",
           FIGURE, SLIP),
    Defect("duke-zh-wan-for-yi-key-data", DUKE, swap("zh.key_data.1.metric", "约7.8亿美元", "约7.8万美元"),
           "zh", "zh.key_data[1].metric", FIGURE, SLIP),
    Defect("rrr-zh-wan-for-yi-summary", RRR, swap("zh.summary", "约150亿元", "约150万元"), "zh", "zh.summary",
           ("grounding",), SLIP),
    # million/billion confusion
    Defect("duke-en-billion-for-million-tldr", DUKE, swap("en.tldr.1", "$780 million", "$780 billion"), "en",
           "en.tldr[1]", FIGURE, SLIP),
    Defect("tender-en-million-for-billion-summary", TENDER,
           swap("en.summary", "about 6.6 billion yuan", "about 6.6 million yuan"), "en", "en.summary",
           ("grounding",), SLIP),
    Defect("rrr-en-million-for-billion-key-data", RRR,
           swap("en.key_data.4.metric", "600 billion yuan", "600 million yuan"), "en",
           "en.key_data[4].metric", FIGURE, SLIP),
    # a percentage that changed
    Defect("duke-en-percent-tldr", DUKE, swap("en.tldr.3", "roughly 40%", "roughly 45%"), "en", "en.tldr[3]",
           FIGURE),
    Defect("duke-zh-percent-tldr", DUKE, swap("zh.tldr.3", "约40%", "约45%"), "zh", "zh.tldr[3]", FIGURE),
    Defect("ecb-en-percent-summary", ECB, swap("en.summary", "about a 60% chance", "about a 70% chance"),
           "en", "en.summary", ("grounding",)),
    Defect("ecb-zh-percent-summary", ECB, swap("zh.summary", "概率约为60%", "概率约为70%"), "zh",
           "zh.summary", ("grounding",)),
    Defect("rrr-zh-percent-in-numerals-faq", RRR,
           swap("zh.faq.2.answer", "约百分之五十", "约百分之六十"), "zh", "zh.faq[2].answer", ("grounding",)),
    Defect("wire-en-percent-title", WIRE, swap("en.title", "jump 42%", "jump 24%"), "en", "en.title",
           ("grounding",)),
    Defect("wire-zh-percent-title", WIRE, swap("zh.title", "同比增42%", "同比增24%"), "zh", "zh.title",
           ("grounding",)),
    # an invented figure in the summary
    Defect("duke-en-invented-summary", DUKE,
           append("en.summary", " Duke will also spend $310 million on transmission upgrades."), "en",
           "en.summary", ("grounding",)),
    Defect("duke-zh-invented-summary", DUKE, append("zh.summary", "杜克还将投入3.1亿美元升级输电线路。"),
           "zh", "zh.summary", ("grounding",)),
    Defect("rrr-en-invented-summary", RRR,
           append("en.summary", " Of the total, 320 billion yuan is earmarked for small businesses."), "en",
           "en.summary", ("grounding",)),
    Defect("rrr-zh-invented-summary", RRR, append("zh.summary", "其中3200亿元定向支持小微企业。"), "zh",
           "zh.summary", ("grounding",)),
    # a key-data figure that is not in the source
    Defect("duke-en-metric", DUKE, swap("en.key_data.2.metric", "40 MW", "45 MW"), "en",
           "en.key_data[2].metric", FIGURE),
    Defect("duke-zh-metric", DUKE, swap("zh.key_data.2.metric", "40兆瓦", "45兆瓦"), "zh",
           "zh.key_data[2].metric", FIGURE),
    Defect("tender-en-metric", TENDER, swap("en.key_data.1.metric", "7 GWh", "9 GWh"), "en",
           "en.key_data[1].metric", FIGURE),
    Defect("tender-zh-metric", TENDER, swap("zh.key_data.1.metric", "7吉瓦时", "9吉瓦时"), "zh",
           "zh.key_data[1].metric", FIGURE),
    # magnitude slips in the analysis and insights are errors too
    Defect("duke-en-analysis-slip", DUKE, swap("en.analysis.0", "8.5 GWh", "85 GWh"), "en", "en.analysis[0]",
           ("grounding",), SLIP),
    Defect("tender-en-insight-slip", TENDER,
           append("en.insights.0", " At the ceiling, the tender is worth about 6.6 million yuan."), "en",
           "en.insights[0]", ("grounding",), SLIP),
    Defect("tender-zh-insight-slip", TENDER,
           append("zh.insights.0", "按上限计，本次集采总金额约66万元。"), "zh", "zh.insights[0]",
           ("grounding",), SLIP),
    Defect("ecb-en-analysis-percent-slip", ECB,
           swap("en.analysis.1", "Headline inflation at 1.6%", "Headline inflation at 16%"), "en",
           "en.analysis[1]", ("grounding",), SLIP),
    Defect("ecb-zh-analysis-percent-slip", ECB,
           swap("zh.analysis.1", "1.6%的整体通胀", "16%的整体通胀"), "zh", "zh.analysis[1]", ("grounding",),
           SLIP),
    Defect("tender-zh-analysis-price-slip", TENDER,
           swap("zh.analysis.2", "0.42元/瓦时至0.48元/瓦时", "4.2元/瓦时至0.48元/瓦时"), "zh",
           "zh.analysis[2]", ("grounding",), SLIP),
    # an invented entity in the key data of the source's language
    Defect("duke-en-invented-entity", DUKE, put("en.key_data.2.entity", "Belmont Storage Partners"), "en",
           "en.key_data[2].entity", ("entities",)),
    Defect("ecb-en-invented-entity", ECB, put("en.key_data.2.entity", "Bank of England"), "en",
           "en.key_data[2].entity", ("entities",)),
    Defect("tender-zh-invented-entity", TENDER, put("zh.key_data.0.entity", "国家电网"), "zh",
           "zh.key_data[0].entity", ("entities",)),
    Defect("rrr-zh-invented-entity", RRR, put("zh.key_data.7.entity", "李明"), "zh", "zh.key_data[7].entity",
           ("entities",)),
    # a Latin name in the Chinese section that is not in the English source
    Defect("duke-zh-latin-name-not-in-source", DUKE, put("zh.key_data.2.entity", "特斯拉 (Tesla)"), "zh",
           "zh.key_data[2].entity", ("entities",)),
    Defect("ecb-zh-latin-name-not-in-source", ECB,
           put("zh.key_data.2.entity", "英格兰银行 (Bank of England)"), "zh", "zh.key_data[2].entity",
           ("entities",)),
    # a section field in the wrong language
    Defect("duke-en-summary-in-chinese", DUKE, copy_field("zh.summary", "en.summary"), "en", "en.summary",
           ("language",)),
    Defect("duke-zh-summary-in-english", DUKE, copy_field("en.summary", "zh.summary"), "zh", "zh.summary",
           ("language",)),
    Defect("rrr-en-summary-in-chinese", RRR, copy_field("zh.summary", "en.summary"), "en", "en.summary",
           ("language",)),
    Defect("rrr-zh-summary-in-english", RRR, copy_field("en.summary", "zh.summary"), "zh", "zh.summary",
           ("language",)),
    # Traditional characters in the Chinese section
    Defect("duke-zh-traditional-tldr", DUKE, put("zh.tldr.0", TRADITIONAL_DUKE_TLDR), "zh", "zh.tldr[0]",
           ("language",), "Traditional"),
    Defect("rrr-zh-traditional-words", RRR,
           swap("zh.tldr.3", "物价低迷为宽松提供了空间", "物價低迷為寬鬆提供了空間"), "zh", "zh.tldr[3]",
           ("language",), "Traditional"),
    Defect("tender-zh-one-traditional-word", TENDER, swap("zh.tldr.0", "储能", "儲能"), "zh", "zh.tldr[0]",
           ("language",), "Traditional"),
    Defect("tender-traditional-tag", TENDER, swap("tags.0.zh", "储能", "儲能"), "en", "tags[0].zh",
           ("language",), "Traditional"),
    # a missing language section
    Defect("duke-no-zh-section", DUKE, drop("zh"), "zh", "zh", ("schema",)),
    Defect("rrr-no-en-section", RRR, drop("en"), "en", "en", ("schema",)),
    # empty and whitespace-only items
    Defect("duke-en-empty-tldr", DUKE, put("en.tldr.1", ""), "en", "en.tldr[1]", ("structure",)),
    Defect("duke-zh-empty-tldr", DUKE, put("zh.tldr.1", ""), "zh", "zh.tldr[1]", ("structure",)),
    Defect("rrr-en-whitespace-tldr", RRR, put("en.tldr.1", " \t\n "), "en", "en.tldr[1]", ("structure",)),
    Defect("rrr-zh-ideographic-space-tldr", RRR, put("zh.tldr.1", "\u3000\u3000"), "zh", "zh.tldr[1]",
           ("structure",)),
    Defect("tender-zh-empty-faq-answer", TENDER, put("zh.faq.0.answer", ""), "zh", "zh.faq[0].answer",
           ("structure",)),
    Defect("tender-en-whitespace-key-data-info", TENDER, put("en.key_data.3.info", "  "), "en",
           "en.key_data[3].info", ("structure",)),
    # too few items
    Defect("duke-en-two-tldr", DUKE, keep_first("en.tldr", 2), "en", "en.tldr", ("structure",)),
    Defect("tender-zh-two-tldr", TENDER, keep_first("zh.tldr", 2), "zh", "zh.tldr", ("structure",)),
    # a duplicate insight
    Defect("ecb-en-duplicate-insight", ECB, copy_field("en.insights.1", "en.insights.3"), "en",
           "en.insights[3]", ("structure",)),
    Defect("ecb-zh-duplicate-insight", ECB, copy_field("zh.insights.1", "zh.insights.3"), "zh",
           "zh.insights[3]", ("structure",)),
    # a score out of range
    Defect("duke-hot-101", DUKE, put("scores.hot", 101), "en", "scores.hot", ("structure",)),
    Defect("rrr-quality-101", RRR, put("scores.quality", 101), "en", "scores.quality", ("structure",)),
]  # fmt: skip

BY_ID = {defect.id: defect for defect in DEFECTS}


def test_defect_ids_are_unique_and_cover_both_languages() -> None:
    assert len(BY_ID) == len(DEFECTS)
    checks = {(check, d.lang) for d in DEFECTS for check in d.checks}
    for check in ("grounding", "parity", "entities", "language", "structure", "schema"):
        assert {(check, "en"), (check, "zh")} <= checks, check


@pytest.mark.parametrize("article_id", list(SOURCES))
def test_the_sources_load_as_the_articles_the_recordings_answer(article_id: str) -> None:
    article = source(article_id)
    assert article.id == article_id
    assert article.language == LANGUAGES[article_id]


@pytest.mark.parametrize("defect", DEFECTS, ids=[d.id for d in DEFECTS])
def test_a_planted_defect_is_an_error_of_its_check_at_its_field(defect: Defect) -> None:
    findings = findings_for(defect.article, defect.data())
    assert defect.missing(findings) == [], lines(findings)


# --- correct output --------------------------------------------------------------------------------------


def test_every_fixture_answer_has_no_error_against_its_source(fixture_articles: list[Article]) -> None:
    assert len(fixture_articles) == 13
    for article in fixture_articles:
        findings = validate_document(recorded(article.id), article, glossary())
        assert errors(findings) == [], (article.input_path, lines(findings))


REWRITES: list[tuple[str, str, str, str, str]] = [
    ("usd-billions", DUKE, "en.tldr.1", "$780 million", "US$0.78 billion"),
    ("usd-bn", DUKE, "en.key_data.1.metric", "about $780 million", "about $0.78bn"),
    ("usd-m", DUKE, "en.key_data.1.metric", "about $780 million", "about US$780M"),
    ("usd-words", DUKE, "en.key_data.1.metric", "about $780 million", "about 780 million dollars"),
    ("usd-zh-numerals", DUKE, "zh.tldr.1", "7.8亿美元", "七亿八千万美元"),
    ("usd-zh-wan", DUKE, "zh.tldr.1", "7.8亿美元", "78000万美元"),
    ("mwh", DUKE, "en.tldr.0", "8.5 GWh", "8,500 MWh"),
    ("gigawatt-hours", DUKE, "en.tldr.0", "8.5 GWh", "8.5 gigawatt-hours"),
    ("zh-jiwashi", DUKE, "zh.tldr.0", "8.5GWh", "8.5吉瓦时"),
    ("zh-yi-washi", DUKE, "zh.tldr.0", "8.5GWh", "85亿瓦时"),
    ("zh-wan-qianwashi", DUKE, "zh.tldr.0", "8.5GWh", "850万千瓦时"),
    ("kw", DUKE, "en.tldr.0", "85 MW", "85,000 kW"),
    ("q4-2028", DUKE, "en.tldr.2", "fourth quarter of 2028", "Q4 2028"),
    ("zh-four-quarter", DUKE, "zh.key_data.3.metric", "2028年第四季度", "2028年四季度"),
    ("zh-q4", DUKE, "zh.tldr.2", "2028年第四季度", "2028年Q4"),
    ("per-cent", DUKE, "en.tldr.3", "roughly 40%", "roughly 40 per cent"),
    ("zh-percent-numerals", DUKE, "zh.tldr.3", "约40%", "约百分之四十"),
    ("range-dash", DUKE, "en.tldr.4", "30% to 40%", "30-40%"),
    ("zh-range-numerals", DUKE, "zh.tldr.4", "30%至40%", "百分之三十至百分之四十"),
    ("zh-wan-numerals", DUKE, "zh.faq.0.answer", "约50万用户", "约五十万用户"),
    ("zh-rmb", TENDER, "zh.tldr.1", "66亿元", "66亿元人民币"),
    ("zh-yuan-numerals", TENDER, "zh.tldr.1", "66亿元", "六十六亿元"),
    ("rmb-prefix", TENDER, "en.tldr.1", "6.6 billion yuan", "RMB6.6 billion"),
    ("yen-sign", TENDER, "en.tldr.1", "6.6 billion yuan", "¥6.6 billion"),
    ("zh-wan-mwh", TENDER, "zh.tldr.0", "12吉瓦时", "1.2万兆瓦时"),
    ("zh-gwh", TENDER, "zh.tldr.0", "12吉瓦时", "12GWh"),
    ("zh-wan-cycles", TENDER, "zh.tldr.2", "10000次", "1万次"),
    ("zh-85-numerals", TENDER, "zh.tldr.2", "不低于85%", "不低于百分之八十五"),
    ("trillion-as-billions", RRR, "en.tldr.0", "about 1 trillion yuan", "about 1,000 billion yuan"),
    ("rmb-tn", RRR, "en.tldr.0", "about 1 trillion yuan", "about RMB1tn"),
    ("zh-wan-yi-numerals", RRR, "zh.tldr.0", "约1万亿元", "约一万亿元"),
    ("zh-basis-points", RRR, "zh.tldr.0", "0.5个百分点", "50个基点"),
    ("basis-points", RRR, "en.tldr.0", "0.5 percentage point", "50 basis points"),
    ("day-month-year", RRR, "en.tldr.0", "June 15, 2026", "15 June 2026"),
    ("zh-qian-yi", RRR, "zh.tldr.2", "6000亿元", "六千亿元"),
    ("trillion-fraction", RRR, "en.tldr.2", "600 billion yuan", "0.6 trillion yuan"),
    ("zh-first-quarter", RRR, "zh.tldr.3", "一季度", "第一季度"),
    ("q1", RRR, "en.tldr.3", "First-quarter", "Q1"),
    ("bps", ECB, "en.tldr.0", "0.25 percentage point", "25 basis points"),
    ("zh-jidian", ECB, "zh.tldr.0", "0.25个百分点", "25个基点"),
    ("zh-decimal-numerals", ECB, "zh.tldr.0", "降至1.75%", "降至百分之一点七五"),
    ("eur-bn", ECB, "en.key_data.7.metric", "€500 billion", "EUR 500bn"),
    ("eur-trillion", ECB, "en.key_data.7.metric", "€500 billion", "€0.5 trillion"),
    ("zh-eur-numerals", ECB, "zh.key_data.7.metric", "5000亿欧元", "五千亿欧元"),
    ("zh-month-fen", ECB, "zh.tldr.1", "3月", "3月份"),
]


@pytest.mark.parametrize(
    ("article_id", "dotted", "old", "new"), [r[1:] for r in REWRITES], ids=[r[0] for r in REWRITES]
)
def test_a_figure_written_in_another_correct_form_is_no_error(
    article_id: str, dotted: str, old: str, new: str
) -> None:
    data = recorded(article_id)
    swap(dotted, old, new)(data)
    findings = findings_for(article_id, data)
    assert errors(findings) == [], lines(findings)


# The source may spell a figure out that the answer writes in digits, or write it in another unit.
SOURCE_REWRITES: list[tuple[str, str, str, str]] = [
    ("zh-qian-yi", RRR, "6000亿元", "六千亿元"),
    ("zh-bai-yi", RRR, "约150亿元", "约一百五十亿元"),
    ("zh-percent-numerals", RRR, "5.1%", "百分之五点一"),
    ("zh-percent-one-point", RRR, "1.38%", "百分之一点三八"),
    ("zh-yuan-numerals", TENDER, "66亿元", "六十六亿元"),
    ("zh-gwh-numerals", TENDER, "12吉瓦时", "十二吉瓦时"),
    ("zh-month-day-numerals", TENDER, "4月8日", "四月八日"),
    ("zh-year-month-numerals", TENDER, "2025年2月", "二〇二五年二月"),
    ("a-hundred", DUKE, "up to 100 hours", "up to a hundred hours"),
    ("half-a-million", DUKE, "about 500,000 customers", "about half a million customers"),
    ("usd-bn", DUKE, "$1.2 billion", "$1.2bn"),
    ("usd-billions", DUKE, "about $780 million", "about $0.78 billion"),
    ("megawatt-hours", DUKE, "8.5 gigawatt-hours", "8,500 megawatt-hours"),
    ("basis-points", ECB, "0.25 percentage point", "25 basis points"),
    ("eur-trillion", ECB, "€500 billion", "€0.5 trillion"),
]


@pytest.mark.parametrize(
    ("article_id", "old", "new"), [r[1:] for r in SOURCE_REWRITES], ids=[r[0] for r in SOURCE_REWRITES]
)
def test_a_source_that_writes_a_figure_differently_still_grounds_the_answer(
    article_id: str, old: str, new: str
) -> None:
    article = source(article_id)
    assert old in article.text, f"{old!r} is not in the source"
    rewritten = replace(article, title=article.title.replace(old, new), text=article.text.replace(old, new))
    findings = validate_document(recorded(article_id), rewritten, glossary())
    assert errors(findings) == [], lines(findings)


# --- warnings --------------------------------------------------------------------------------------------

WARNINGS = [
    ("analysis-figure", ECB, swap("en.analysis.2", "0.9%", "1.4%"), "grounding", "en", "en.analysis[2]"),
    ("zh-insight-figure", ECB, append("zh.insights.0", "（约37%）"), "grounding", "zh", "zh.insights[0]"),
    ("source-figure-missing-in-zh", ECB, append("en.tldr.4", " The balance sheet is about €6.1 trillion."),
     "parity", "en", "en.tldr[4]"),
    ("source-figure-missing-in-en", ECB, append("zh.tldr.4", "资产负债表规模约6.1万亿欧元。"), "parity", "zh",
     "zh.tldr[4]"),
    ("unresolved-english-entity-of-zh-source", TENDER, put("en.key_data.7.entity", "Wang Jianhua"),
     "entities", "en", "en.key_data[7].entity"),
    ("zh-bold", ECB, swap("zh.tldr.0", "欧洲央行", "<b>欧洲央行</b>"), "markup", "zh", "zh.tldr[0]"),
    ("en-italic", ECB, append("en.faq.0.answer", " <i>Really.</i>"), "markup", "en", "en.faq[0].answer"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("article_id", "mutate", "check", "lang", "path"), [w[1:] for w in WARNINGS], ids=[w[0] for w in WARNINGS]
)
def test_a_doubtful_but_allowed_thing_is_only_a_warning(
    article_id: str, mutate: Mutation, check: str, lang: Lang, path: str
) -> None:
    data = recorded(article_id)
    mutate(data)
    findings = findings_for(article_id, data)
    assert errors(findings) == [], lines(findings)
    assert [(f.check, f.severity, f.lang, f.path) for f in findings] == [(check, "warning", lang, path)]


def test_script_the_source_does_not_contain_is_an_injection_error() -> None:
    # Formatting tags stay a markup warning (issue 3); active markup the source lacks means the
    # model followed an instruction planted in the article (issue 6), so it is an error.
    data = recorded(ECB)
    append("zh.summary", '<script>alert("x")</script>')(data)
    findings = findings_for(ECB, data)
    checks = {(f.check, f.severity, f.lang, f.path) for f in findings}
    assert ("injection", "error", "zh", "zh.summary") in checks, lines(findings)
    assert ("markup", "warning", "zh", "zh.summary") in checks


def test_without_a_source_only_the_source_free_checks_run() -> None:
    data = recorded(DUKE)
    swap("en.tldr.1", "$780 million", "$780 billion")(data)  # only the source tells that this is wrong
    copy_field("zh.insights.1", "zh.insights.3")(data)
    findings = validate_document(data, None, glossary())
    assert [(f.check, f.severity, f.path) for f in findings] == [("structure", "error", "zh.insights[3]")]
    assert any(f.is_error and f.path == "en.tldr[1]" for f in findings_for(DUKE, data)), (
        "found with the source"
    )


# --- the CLI ---------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=cli_env(),
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


OFFLINE_ENV: dict[str, str | None] = {
    "NEWSDESK_OFFLINE": "1", "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None, "NEWSDESK_MODEL": None,
    "NEWSDESK_CONCURRENCY": None, "NEWSDESK_OUTPUT_MODE": None, "NEWSDESK_DEBUG": None,
}  # fmt: skip
runner = CliRunner(env=OFFLINE_ENV)


@pytest.fixture(scope="module")
def replay_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One replay run of every fixture article (in-process)."""
    out = tmp_path_factory.mktemp("replay") / "out"
    result = runner.invoke(app, ["run", str(ARTICLES), "--replay", str(RECORDINGS), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


def replayed(out: Path) -> dict[str, tuple[Path, str]]:
    """article id -> (its analysis.json, its source as the run report names it)."""
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    return {a["id"]: (out / "articles" / a["id"] / "analysis.json", a["source"]) for a in report["articles"]}


# One planted defect per check, run through the real command line (a subprocess each).
CLI_DEFECTS = [
    "wire-zh-percent-title",  # grounding, with the source given as FILE.jsonl:N
    "tender-zh-metric",  # grounding and parity
    "duke-zh-latin-name-not-in-source",  # entities
    "rrr-zh-traditional-words",  # language, with a GBK source
    "duke-hot-101",  # structure
    "duke-no-zh-section",  # schema
]
FULL_ANALYSES = [RRR]  # GBK source; the one of a .jsonl line goes through the in-process CLI below
TWO_FINDINGS = [
    put("en.tldr.1", "  "),
    swap("zh.tldr.0", "欧洲央行", "<b>欧洲央行</b>"),
]  # an error, a warning


def with_two_findings() -> Data:
    data = recorded(ECB)
    for mutate in TWO_FINDINGS:
        mutate(data)
    return data


@pytest.fixture(scope="module")
def cli(
    tmp_path_factory: pytest.TempPathFactory, replay_out: Path
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every subprocess case of this module, run at the same time."""
    tmp = tmp_path_factory.mktemp("validate")
    jobs: dict[str, list[str]] = {}
    for defect_id in CLI_DEFECTS:
        defect = BY_ID[defect_id]
        file = write_json(tmp / f"{defect_id}.json", defect.data())
        jobs[defect_id] = ["validate", str(file), "--source", source_spec(defect.article), "--json"]
    two = write_json(tmp / "two.json", with_two_findings())
    jobs["two-json"] = ["validate", str(two), "--source", source_spec(ECB), "--json"]
    analyses = replayed(replay_out)
    for article_id in FULL_ANALYSES:
        analysis, spec = analyses[article_id]
        jobs[f"full-{article_id}"] = ["validate", str(analysis), "--source", spec, "--json"]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(run_cli, *args) for name, args in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def json_findings(stdout: str) -> list[Finding]:
    return [Finding(**f) for f in json.loads(stdout)["findings"]]


@pytest.mark.parametrize("defect_id", CLI_DEFECTS)
def test_cli_reports_a_planted_defect_and_exits_1(
    defect_id: str, cli: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = cli[defect_id]
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr == ""
    findings = json_findings(result.stdout)
    assert BY_ID[defect_id].missing(findings) == [], lines(findings)


@pytest.mark.parametrize("article_id", FULL_ANALYSES)
def test_cli_accepts_a_full_analysis_json_of_a_replay_run(
    article_id: str, cli: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = cli[f"full-{article_id}"]
    assert result.returncode == 0, result.stdout
    document = json.loads(result.stdout)
    assert document["errors"] == 0
    assert document["source"] is not None and document["source"].endswith(SOURCES[article_id])


def test_every_replayed_analysis_json_has_no_error(replay_out: Path) -> None:
    analyses = replayed(replay_out)
    assert len(analyses) == 13
    settings = Settings()
    for article_id, (analysis, spec) in analyses.items():
        article = load_source(spec, Limits(settings.max_input_bytes, settings.max_input_tokens))
        assert article.id == article_id
        data = json.loads(analysis.read_text(encoding="utf-8"))
        assert {"schema_version", "article", "disclaimer", "generation"} <= data.keys()
        findings = validate_document(data, article, glossary())
        assert errors(findings) == [], (article_id, lines(findings))


def test_cli_json_output_lists_every_finding_with_all_its_fields(
    cli: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = cli["two-json"]
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["errors"] == 1 and document["warnings"] == 1
    assert document["file"].endswith("two.json")
    assert document["source"].endswith(SOURCES[ECB])
    for finding in document["findings"]:
        assert set(finding) == {"check", "severity", "lang", "path", "message", "text"}
    assert sorted((f["check"], f["severity"], f["lang"], f["path"]) for f in document["findings"]) == [
        ("markup", "warning", "zh", "zh.tldr[0]"),
        ("structure", "error", "en", "en.tldr[1]"),
    ]


# --- in-process CLI --------------------------------------------------------------------------------------


def test_cli_plain_output_is_one_line_per_finding_and_a_verdict(
    cli: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    as_json = cli["two-json"]
    file = json.loads(as_json.stdout)["file"]
    plain = runner.invoke(app, ["validate", file, "--source", source_spec(ECB)])
    assert plain.exit_code == 1
    out = plain.stdout.splitlines()
    assert out[:-1] == [f.one_line() for f in json_findings(as_json.stdout)]
    assert out[-1] == f"{file}: 1 error(s), 1 warning(s)"


def test_cli_accepts_the_analysis_json_of_a_jsonl_line(replay_out: Path) -> None:
    analysis, spec = replayed(replay_out)[WIRE]
    assert spec.endswith("wire-briefs.jsonl:2")
    result = runner.invoke(app, ["validate", str(analysis), "--source", spec])
    assert result.exit_code == 0, result.stdout
    assert result.stdout.splitlines() == [f"{analysis}: 0 error(s), 0 warning(s)"]


def test_cli_says_when_the_source_is_not_the_article_the_analysis_was_made_from(replay_out: Path) -> None:
    analysis, _ = replayed(replay_out)[RRR]
    wrong = source_spec(ECB)
    result = runner.invoke(app, ["validate", str(analysis), "--source", wrong])
    assert result.exit_code == 1, result.stdout
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        f"[warning source] article.content_sha256: {wrong} is not the article this analysis"
    )
    right = runner.invoke(app, ["validate", str(analysis), "--source", replayed(replay_out)[RRR][1]])
    assert "[warning source]" not in right.stdout


def test_cli_markup_alone_is_a_warning_and_exits_0(tmp_path: Path) -> None:
    data = recorded(ECB)
    TWO_FINDINGS[1](data)
    file = write_json(tmp_path / "markup.json", data)
    result = runner.invoke(app, ["validate", str(file), "--source", source_spec(ECB)])
    assert result.exit_code == 0, result.stdout
    out = result.stdout.splitlines()
    assert len(out) == 2, out
    assert out[0].startswith("[warning markup] zh.tldr[0]: HTML or script") and "<b>欧洲央行</b>" in out[0]
    assert out[1] == f"{file}: 0 error(s), 1 warning(s)"


def test_cli_without_a_source_says_so(replay_out: Path) -> None:
    analysis = replayed(replay_out)[ECB][0]
    result = runner.invoke(app, ["validate", str(analysis)])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [f"{analysis}: 0 error(s), 0 warning(s) (no --source)"]


def good_file(tmp_path: Path) -> Path:
    return write_json(tmp_path / "part.json", recorded(ECB))


def test_cli_a_correct_part_exits_0(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(good_file(tmp_path)), "--source", source_spec(ECB)])
    assert result.exit_code == 0, result.stdout
    assert result.stdout.splitlines()[-1].endswith(": 0 error(s), 0 warning(s)")


def test_cli_reads_a_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    file = tmp_path / "bom.json"
    file.write_text("\ufeff" + json.dumps(recorded(ECB), ensure_ascii=False), encoding="utf-8")
    result = runner.invoke(app, ["validate", str(file), "--source", source_spec(ECB)])
    assert result.exit_code == 0, (result.stdout, result.stderr)


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = str(good_file(tmp_path))
    not_json = tmp_path / "broken.json"
    not_json.write_text('{"scores": {', encoding="utf-8")
    array = write_json(tmp_path / "array.json", [recorded(ECB)])
    empty_source = tmp_path / "empty.txt"
    empty_source.write_text("", encoding="utf-8")
    return {
        "missing-file": ([str(tmp_path / "nope.json")], "nope.json"),
        "not-json": ([str(not_json)], "broken.json"),
        "json-array": ([str(array)], "array.json"),
        "missing-source": ([good, "--source", str(tmp_path / "gone.txt")], "gone.txt"),
        "empty-source": ([good, "--source", str(empty_source)], "empty.txt"),
        "no-such-jsonl-line": (
            [good, "--source", str(ARTICLES / "wire-briefs.jsonl:9")],
            "wire-briefs.jsonl",
        ),
    }


@pytest.mark.parametrize(
    "case", ["missing-file", "not-json", "json-array", "missing-source", "empty-source", "no-such-jsonl-line"]
)
def test_cli_an_unreadable_input_exits_2_with_one_error_line(tmp_path: Path, case: str) -> None:
    args, named = _bad_inputs(tmp_path)[case]
    result = runner.invoke(app, ["validate", *args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    error_lines = result.stderr.splitlines()
    assert len(error_lines) == 1 and error_lines[0].startswith("Error: "), result.stderr
    assert named in error_lines[0]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[" * 5000 + "]" * 5000, "malformed JSON: nested too deeply (more than 100 levels)"),
        (
            '{"scores": ' + "9" * 5000 + "}",
            f"malformed JSON: a number longer than {sys.get_int_max_str_digits():,} digits",
        ),
    ],
    ids=["nested-5000-deep", "5000-digit-number"],
)
def test_cli_json_python_reads_differently_or_not_at_all_is_refused_with_the_reason(
    tmp_path: Path, content: str, reason: str
) -> None:
    file = tmp_path / "odd.json"
    file.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["validate", str(file)])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr == f"Error: {file}: {reason}\n"


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (keep_first("en.tldr", 2), "en.tldr"),
        (keep_first("zh.faq", 1), "zh.faq"),
        (put("scores.impact", -1), "scores.impact"),
        (put("zh.tldr", "one string, not a list"), "zh.tldr"),
    ],
    ids=["en-two-tldr", "zh-one-faq", "negative-score", "tldr-not-a-list"],
)
def test_cli_a_schema_violation_is_a_finding_and_exits_1_not_2(
    tmp_path: Path, mutate: Mutation, path: str
) -> None:
    data = recorded(ECB)
    mutate(data)
    file = write_json(tmp_path / "part.json", data)
    result = runner.invoke(app, ["validate", str(file), "--source", source_spec(ECB), "--json"])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Error:" not in result.stderr
    findings = json.loads(result.stdout)["findings"]
    assert any(f["path"] == path and f["severity"] == "error" for f in findings), findings


# --- parity with figures written in words ---------------------------------------------------------------


def parity_warnings(article_id: str, data: Data) -> list[str]:
    return [f.one_line() for f in findings_for(article_id, data) if f.check == "parity"]


def test_a_figure_the_other_section_writes_in_words_is_not_a_parity_gap() -> None:
    """The Chinese TL;DR's 六个月 is the English 'first six months': no warning."""
    data = recorded(MEDICARE)
    assert "六个月" in data["zh"]["tldr"][0] and "six months" in data["en"]["tldr"][0]
    assert parity_warnings(MEDICARE, data) == []


def test_a_figure_missing_from_the_other_section_is_still_a_parity_warning() -> None:
    data = recorded(MEDICARE)
    for key in ("summary", "tldr", "faq", "title"):
        data["en"][key] = json.loads(json.dumps(data["en"][key]).replace("six months", "half-year"))
    warnings = parity_warnings(MEDICARE, data)
    assert any("六个月 is in the source but not in the English section" in line for line in warnings), (
        warnings
    )


def test_a_product_name_with_a_number_is_no_parity_gap() -> None:
    """The model the Chinese calls "极曜-3" is "Jiyao-3" in English: a name in both, not a figure."""
    data = recorded(ZH_AI)
    assert any(row["entity"] == "极曜-3" for row in data["zh"]["key_data"])
    assert parity_warnings(ZH_AI, data) == []
