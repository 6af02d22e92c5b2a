"""`newsdesk eval`: replay the fixtures, score every check per language, compare with a baseline."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import Settings
from pipeline.errors import ConfigError, InputError
from pipeline.evaluate import (
    CHECKS,
    EvalReport,
    compare,
    eval_json,
    evaluate,
    load_eval_report,
    render_comparison,
    render_eval_table,
    rich_eval_table,
    write_eval_report,
)
from pipeline.schema import LANGS
from tests.conftest import FIXTURES, plant_parity_gap

DUKE = "duke-energy-orders-8-5-gwh-of-iron-air-batteries-in-largest-7f7822e172"
RRR = "zh-rrr-cut-c355db2d2c"
FIXTURE_COUNT = 13


def run_eval(folder: Path) -> EvalReport:
    return asyncio.run(evaluate(folder, Settings()))


def copy_fixtures(tmp_path: Path) -> Path:
    folder = tmp_path / "fixtures"
    for name in ("articles", "recordings"):
        shutil.copytree(FIXTURES / name, folder / name)
    return folder


def edit_recording(folder: Path, article_id: str, call: str, edit: Callable[[dict[str, Any]], None]) -> None:
    path = folder / "recordings" / article_id / f"{call}-0.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    edit(document)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")


def edit_answer(folder: Path, article_id: str, call: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the JSON answer inside response.choices[0].message.content."""

    def rewrite(document: dict[str, Any]) -> None:
        message = document["response"]["choices"][0]["message"]
        answer = json.loads(message["content"])
        edit(answer)
        message["content"] = json.dumps(answer, ensure_ascii=False)

    edit_recording(folder, article_id, call, rewrite)


def plant_ungrounded_figure(answer: dict[str, Any]) -> None:
    summary = answer["en"]["summary"]
    assert "$780 million" in summary
    answer["en"]["summary"] = summary.replace("$780 million", "$980 million")


@pytest.fixture(scope="module")
def baseline() -> EvalReport:
    return run_eval(FIXTURES)


@pytest.fixture(scope="module")
def warned(tmp_path_factory: pytest.TempPathFactory) -> EvalReport:
    folder = copy_fixtures(tmp_path_factory.mktemp("warned"))
    plant_parity_gap(folder / "recordings")
    return run_eval(folder)


@pytest.fixture(scope="module")
def defective(tmp_path_factory: pytest.TempPathFactory) -> EvalReport:
    folder = copy_fixtures(tmp_path_factory.mktemp("defective"))
    edit_answer(folder, DUKE, "en", plant_ungrounded_figure)
    return run_eval(folder)


# --- the bundled fixtures ---------------------------------------------------------------------


def test_bundled_fixtures_all_pass(baseline: EvalReport) -> None:
    assert len(baseline.articles) == FIXTURE_COUNT
    assert [a.status for a in baseline.articles] == ["ok"] * FIXTURE_COUNT
    assert baseline.counts == {"ok": FIXTURE_COUNT, "failed": 0, "stale": 0}
    assert not baseline.failing and not baseline.input_failures
    assert all(a.calls == 2 and a.validated == "full" and not a.stale for a in baseline.articles)
    assert [(r.check, r.lang) for r in baseline.rates] == [(c, lang) for c in CHECKS for lang in LANGS]
    for rate in baseline.rates:
        assert (rate.checked, rate.passing, rate.rate) == (FIXTURE_COUNT, FIXTURE_COUNT, 1.0), rate


def test_warnings_are_counted_but_do_not_fail(warned: EvalReport) -> None:
    warnings = [(a.id, f) for a in warned.articles for f in a.findings]
    assert warnings and all(f.severity == "warning" for _, f in warnings)
    parity = [f for _, f in warnings if f.check == "parity"]
    assert parity, "the planted parity gap is a warning"
    counted = sum(r.warnings for r in warned.rates if r.check == "parity")
    assert counted == len(parity)
    assert all(r.rate == 1.0 for r in warned.rates if r.check == "parity")
    assert warned.counts == {"ok": FIXTURE_COUNT, "failed": 0, "stale": 0}


def test_articles_are_in_a_stable_order(baseline: EvalReport) -> None:
    ids = [a.id for a in baseline.articles]
    assert ids == sorted(ids)
    sources = {a.id: a.source for a in baseline.articles}
    assert sources[RRR] == "articles/zh-rrr-cut.txt", "sources are relative to the fixtures folder"


def test_plain_table_of_a_clean_run(baseline: EvalReport) -> None:
    text = render_eval_table(baseline)
    assert f"eval of {FIXTURE_COUNT} article(s)" in text
    assert "No failing articles." in text
    rows = [line.split() for line in text.splitlines() if line.split()[:1] and line.split()[0] in CHECKS]
    assert len(rows) == len(CHECKS) * len(LANGS)
    assert all(row[2] == f"{FIXTURE_COUNT}/{FIXTURE_COUNT}" and row[3] == "100.0%" for row in rows)


# --- a planted defect and the baseline comparison ---------------------------------------------


def test_planted_defect_fails_grounding_in_english(defective: EvalReport) -> None:
    grounding_en, grounding_zh = defective.rate("grounding", "en"), defective.rate("grounding", "zh")
    assert grounding_en is not None and grounding_zh is not None
    assert (grounding_en.checked, grounding_en.passing) == (FIXTURE_COUNT, FIXTURE_COUNT - 1)
    assert grounding_en.rate == round((FIXTURE_COUNT - 1) / FIXTURE_COUNT, 4)
    assert grounding_zh.rate == 1.0
    assert [a.id for a in defective.failing] == [DUKE]
    duke = defective.article(DUKE)
    assert duke is not None and duke.status == "failed" and duke.validated == "full"
    errors = duke.errors()
    assert [(f.check, f.lang, f.path) for f in errors] == [("grounding", "en", "en.summary")]
    assert errors[0].text == "$980 million"
    others = [a for a in defective.articles if a.id != DUKE]
    assert all(a.status == "ok" for a in others)


def test_failing_article_is_listed_in_the_table(defective: EvalReport) -> None:
    text = render_eval_table(defective)
    failing = text[text.index("Failing articles (1):") :]
    assert DUKE in failing
    assert "[error grounding] en.summary: $980 million is not in the source" in failing
    grounding_en = next(line for line in text.splitlines() if line.split()[:2] == ["grounding", "en"])
    assert "12/13" in grounding_en and "92.3%" in grounding_en


def test_comparison_flags_what_got_worse(defective: EvalReport, baseline: EvalReport) -> None:
    comparison = compare(defective, baseline)
    assert comparison.got_worse
    assert comparison.newly_failing == [DUKE]
    assert not comparison.newly_passing
    assert [(r.check, r.lang) for r in comparison.worse_rates] == [("grounding", "en")]
    assert [(c.article_id, c.finding.check, c.finding.path) for c in comparison.new_errors] == [
        (DUKE, "grounding", "en.summary")
    ]
    text = render_eval_table(defective, comparison)
    worse = text[text.index("Got worse:") :]
    assert "grounding/en: 100.0% -> 92.3%" in worse
    assert f"newly failing: {DUKE}" in worse
    assert "Verdict: WORSE than the baseline." in text
    assert "-7.7 pts" in text


def test_reverse_comparison_reports_it_got_better(defective: EvalReport, baseline: EvalReport) -> None:
    comparison = compare(baseline, defective)
    assert not comparison.got_worse
    assert comparison.got_better
    assert comparison.newly_passing == [DUKE]
    assert not comparison.newly_failing and not comparison.new_errors
    assert [(r.check, r.lang) for r in comparison.better_rates] == [("grounding", "en")]
    assert [(c.article_id, c.finding.path) for c in comparison.resolved_errors] == [(DUKE, "en.summary")]
    text = render_eval_table(baseline, comparison)
    assert "Got worse:" not in text
    assert f"newly passing: {DUKE}" in text
    assert "Verdict: better than the baseline" in text


def test_identical_reports_compare_as_unchanged(baseline: EvalReport) -> None:
    comparison = compare(baseline, baseline)
    assert not comparison.got_worse and not comparison.got_better
    assert not comparison.new_findings and not comparison.resolved_findings
    assert all(r.delta == 0 for r in comparison.rates)
    assert "Verdict: no change against the baseline." in render_eval_table(baseline, comparison)


def test_an_extra_warning_is_not_a_regression(baseline: EvalReport) -> None:
    # one more parity warning on an article: listed as new, but nothing got worse
    data = baseline.model_dump()
    article = next(a for a in data["articles"] if a["id"] == RRR)
    message = "0.5 is in the source but not in the Chinese section"
    warning = {"check": "parity", "severity": "warning", "lang": "en", "path": "en.tldr[0]", "text": "0.5"}
    article["findings"].append(warning | {"message": message})
    current = EvalReport.model_validate(data)
    comparison = compare(current, baseline)
    assert [(c.article_id, c.finding.path) for c in comparison.new_findings] == [(RRR, "en.tldr[0]")]
    assert not comparison.got_worse
    assert "New warnings:" in render_eval_table(current, comparison)


def test_rich_table_shows_the_rates(defective: EvalReport, baseline: EvalReport) -> None:
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(rich_eval_table(defective, compare(defective, baseline)))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "vs baseline" in output and "92.3%" in output and "-7.7 pts" in output


# --- the report file --------------------------------------------------------------------------


def test_report_round_trips_through_its_json_file(defective: EvalReport, tmp_path: Path) -> None:
    path = tmp_path / "eval" / "report.json"
    write_eval_report(defective, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert {"prompt_version", "created_at", "articles", "rates"} <= data.keys()
    assert load_eval_report(path) == defective
    assert not list(path.parent.glob(".*.tmp")), "written atomically, no temporary file left"


def test_json_output_holds_report_and_comparison(defective: EvalReport, baseline: EvalReport) -> None:
    document = json.loads(eval_json(defective, compare(defective, baseline)))
    assert document["comparison"]["got_worse"] is True
    assert document["comparison"]["newly_failing"] == [DUKE]
    assert EvalReport.model_validate(document["report"]) == defective
    assert json.loads(eval_json(defective))["comparison"] is None


def test_unreadable_baseline_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"articles": 3}', encoding="utf-8")
    with pytest.raises(InputError, match="is not an eval report"):
        load_eval_report(bad)
    with pytest.raises(InputError, match="cannot be read"):
        load_eval_report(tmp_path / "missing.json")


# --- stale, missing and unparsable recordings -------------------------------------------------


def test_stale_recording_is_reported_stale(tmp_path: Path) -> None:
    folder = copy_fixtures(tmp_path)
    edit_recording(folder, RRR, "zh", lambda document: document.update(request_sha256="0" * 64))
    report = run_eval(folder)
    rrr = report.article(RRR)
    assert rrr is not None and rrr.status == "stale" and rrr.stale
    assert rrr.passed, "a stale answer that passes every check still passes"
    assert report.counts == {"ok": FIXTURE_COUNT - 1, "failed": 0, "stale": 1}
    assert [a.id for a in report.articles if a.stale] == [RRR]
    text = render_eval_table(report)
    assert "Stale recordings" in text and RRR in text


def test_a_comparison_with_stale_answers_is_inconclusive_and_fails_the_gate(
    tmp_path: Path, baseline: EvalReport
) -> None:
    """After a prompt change that was not recorded again, the old answers pass as before: the
    comparison must not read as 'no change'."""
    folder = copy_fixtures(tmp_path)
    edit_recording(folder, RRR, "zh", lambda document: document.update(request_sha256="0" * 64))
    current = run_eval(folder)
    comparison = compare(current, baseline)
    assert comparison.stale == [RRR] and comparison.inconclusive and not comparison.got_worse
    assert render_comparison(comparison).splitlines()[-1].startswith("Verdict: INCONCLUSIVE: 1 article(s)")
    stale_rates = [(r.lang, r.warnings) for r in current.rates if r.check == "stale"]
    assert dict(stale_rates) == {"en": 0, "zh": 1}, "the stale warning counts for the stale call's language"

    saved = tmp_path / "baseline.json"
    write_eval_report(baseline, saved)
    result = CliRunner().invoke(app, ["eval", str(folder), "--baseline", str(saved), "--report",
                                      str(tmp_path / "now.json")])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "Verdict: INCONCLUSIVE" in result.output


def test_missing_recording_fails_without_counting_as_checked(tmp_path: Path) -> None:
    folder = copy_fixtures(tmp_path)
    (folder / "recordings" / RRR / "zh-0.json").unlink()
    report = run_eval(folder)
    rrr = report.article(RRR)
    assert rrr is not None and rrr.status == "failed" and rrr.validated == "none"
    assert rrr.error is not None and "no recording" in rrr.error
    assert all((r.checked, r.passing) == (FIXTURE_COUNT - 1,) * 2 for r in report.rates)
    assert compare(report, run_eval(FIXTURES)).newly_failing == [RRR]


def test_unparsable_answer_fails_the_schema_check_only(tmp_path: Path) -> None:
    folder = copy_fixtures(tmp_path)

    def break_json(document: dict[str, Any]) -> None:
        document["response"]["choices"][0]["message"]["content"] = "Sorry, here is no JSON."

    edit_recording(folder, DUKE, "en", break_json)
    report = run_eval(folder)
    duke = report.article(DUKE)
    assert duke is not None and duke.status == "failed" and duke.validated == "parse"
    schema_en, grounding_en = report.rate("schema", "en"), report.rate("grounding", "en")
    assert schema_en is not None and (schema_en.checked, schema_en.passing) == (
        FIXTURE_COUNT,
        FIXTURE_COUNT - 1,
    )
    assert (
        grounding_en is not None and (grounding_en.checked, grounding_en.passing) == (FIXTURE_COUNT - 1,) * 2
    )


def test_folder_without_recordings_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "articles").mkdir()
    with pytest.raises(ConfigError, match="recordings"):
        run_eval(tmp_path)
