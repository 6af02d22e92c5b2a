"""Prompt iteration against recorded fixtures: the engine of ``newsdesk eval``.

:func:`evaluate` replays every fixture article through the analyzer (``DIR/articles`` answered
from ``DIR/recordings``), runs every validator, and scores the run: per check and language, how
many articles were checked and how many pass (no error of that check in that language).
:func:`compare` sets a report against a baseline report: rate changes, articles that newly fail
or pass, new and resolved findings, and whether anything got worse. The renderers return
strings (or a rich table); :func:`write_eval_report` is the one function that writes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.table import Table
from rich.text import Text

from pipeline.analyze import Analyzer, ArticleOutcome, Conversation
from pipeline.config import Settings
from pipeline.emit.write import atomic_write_text
from pipeline.errors import ConfigError, InputError, debugging
from pipeline.ingest import InputFailure, Limits, load_articles
from pipeline.ingest.article import Article
from pipeline.model.replay import ReplayModel
from pipeline.prompts import PromptBook
from pipeline.schema import LANGS, FindingOut, Lang, Usage
from pipeline.validate.findings import Finding

# Every check the validators run, in the order reports show them.
CHECKS: tuple[str, ...] = ("schema", "structure", "language", "grounding", "parity", "entities", "markup")
# The checks that still run when an answer does not parse (the later checks need both answers).
PARSE_CHECKS: frozenset[str] = frozenset({"schema", "structure"})
DEFAULT_REPORT_NAME = "eval-report.json"

EvalStatus = Literal["ok", "failed", "stale"]
Validated = Literal["full", "parse", "none"]
_MAX_FINDINGS_SHOWN = 8


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArticleResult(_Frozen):
    """One fixture article after replay and validation."""

    id: str
    source: str = Field(description="The input, relative to the fixtures folder.")
    language: Literal["en", "zh", "other"]
    status: EvalStatus = Field(
        description="failed: no analysis; stale: ok, from recordings of older requests."
    )
    error: str | None = None
    calls: int
    stale: bool = Field(
        description="Some recording answers another request than today's (the prompts changed)."
    )
    validated: Validated = Field(
        description="full: every check ran; parse: an answer did not parse, so only the schema and "
        "structure checks ran; none: no answer reached the validators (e.g. a missing recording)."
    )
    findings: list[FindingOut] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status != "failed" and not any(f.severity == "error" for f in self.findings)

    def errors(self) -> list[FindingOut]:
        return [f for f in self.findings if f.severity == "error"]

    def checked(self, check: str) -> bool:
        return self.validated == "full" or (self.validated == "parse" and check in PARSE_CHECKS)


class InputProblem(_Frozen):
    """A fixture input that could not be read as an article."""

    source: str
    reason: str


class CheckRate(_Frozen):
    """How one check fared in one language over the fixtures."""

    check: str
    lang: Lang
    checked: int
    passing: int
    rate: float | None = Field(description="passing / checked, or null when no article was checked.")
    warnings: int = Field(description="Warning findings of this check in this language.")


class EvalReport(_Frozen):
    prompt_version: str
    model: str
    created_at: str
    fixtures: str
    counts: dict[str, int]
    articles: list[ArticleResult]
    input_failures: list[InputProblem] = Field(default_factory=list)
    rates: list[CheckRate]

    def rate(self, check: str, lang: Lang) -> CheckRate | None:
        return next((r for r in self.rates if r.check == check and r.lang == lang), None)

    def article(self, article_id: str) -> ArticleResult | None:
        return next((a for a in self.articles if a.id == article_id), None)

    @property
    def failing(self) -> list[ArticleResult]:
        return [a for a in self.articles if not a.passed]


class RateChange(_Frozen):
    check: str
    lang: Lang
    before: float | None
    after: float | None

    @property
    def delta(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return round(self.after - self.before, 4)


class FindingChange(_Frozen):
    article_id: str
    finding: FindingOut


class Comparison(_Frozen):
    baseline_prompt_version: str
    current_prompt_version: str
    rates: list[RateChange] = Field(description="Every check and language of either report.")
    newly_failing: list[str] = Field(description="Failing now; passing in (or absent from) the baseline.")
    newly_passing: list[str]
    new_findings: list[FindingChange] = Field(description="Of articles in both reports.")
    resolved_findings: list[FindingChange]
    only_in_current: list[str]
    only_in_baseline: list[str]
    got_worse: bool
    got_better: bool
    stale: list[str] = Field(
        default_factory=list,
        description="Replayed from recordings of other requests: the prompts changed and were not recorded "
        "again, so these answers say nothing about the change.",
    )

    @property
    def inconclusive(self) -> bool:
        """Some answers are stale: what the comparison shows is not the prompt change's doing."""
        return bool(self.stale)

    @property
    def worse_rates(self) -> list[RateChange]:
        return [r for r in self.rates if r.delta is not None and r.delta < 0]

    @property
    def better_rates(self) -> list[RateChange]:
        return [r for r in self.rates if r.delta is not None and r.delta > 0]

    @property
    def new_errors(self) -> list[FindingChange]:
        return [c for c in self.new_findings if c.finding.severity == "error"]

    @property
    def resolved_errors(self) -> list[FindingChange]:
        return [c for c in self.resolved_findings if c.finding.severity == "error"]


# --- replay -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Observed:
    findings: list[Finding]
    parsed: bool


class _ObservingAnalyzer(Analyzer):
    """An analyzer that remembers the latest findings of each article.

    A replayed answer that fails validation is re-asked, and the re-ask usually has no recording:
    the outcome is then a missing-recording failure without findings. The findings that caused the
    re-ask are what an evaluation needs, so they are kept here.
    """

    def __init__(self, model: ReplayModel, book: PromptBook, settings: Settings) -> None:
        super().__init__(model, book, settings)
        self.observed: dict[str, _Observed] = {}

    async def _check(self, article: Article, talks: dict[Lang, Conversation]) -> list[Finding]:
        findings = await super()._check(article, talks)
        parsed = all(talk.answer is not None for talk in talks.values())
        self.observed[article.id] = _Observed(list(findings), parsed)
        return findings


async def evaluate(fixtures_dir: Path, settings: Settings) -> EvalReport:
    """Replay every article under ``fixtures_dir/articles`` from ``fixtures_dir/recordings`` and score it."""
    articles_dir, recordings_dir = fixtures_dir / "articles", fixtures_dir / "recordings"
    for folder in (articles_dir, recordings_dir):
        if not folder.is_dir():
            raise ConfigError(
                f"{fixtures_dir}: no {folder.name}/ folder (expected articles/ and recordings/)"
            )
    book = PromptBook(settings)
    model = ReplayModel(recordings_dir)
    analyzer = _ObservingAnalyzer(model, book, settings)
    results: dict[str, ArticleResult] = {}
    problems: list[InputProblem] = []
    limits = Limits(settings.max_input_bytes, settings.max_input_tokens)
    try:
        for item in load_articles([articles_dir], limits):
            if isinstance(item, InputFailure):
                problems.append(
                    InputProblem(source=_relative(item.input_path, fixtures_dir), reason=item.reason)
                )
            elif item.id not in results:
                results[item.id] = await _evaluate_one(analyzer, item, fixtures_dir)
    finally:
        await model.aclose()
    return build_report(
        results.values(), problems, prompt_version=book.version, model=settings.model,
        fixtures=str(fixtures_dir),
    )  # fmt: skip


async def _evaluate_one(analyzer: _ObservingAnalyzer, article: Article, root: Path) -> ArticleResult:
    try:
        outcome = await analyzer.analyze(article)
    except Exception as exc:  # one article's bug never stops the evaluation
        if debugging():
            raise
        error = f"internal error ({type(exc).__name__}: {exc}); rerun with NEWSDESK_DEBUG=1 for the traceback"
        outcome = ArticleOutcome(None, Usage(), 0, [], False, error=error)
    return article_result(article, outcome, analyzer.observed.get(article.id), root)


def article_result(
    article: Article, outcome: ArticleOutcome, observed: _Observed | None, root: Path
) -> ArticleResult:
    """What the evaluation keeps of one outcome (with the observed findings when the outcome has none)."""
    findings, error = outcome.findings, outcome.error
    if outcome.analysis is None and not findings and observed is not None and observed.findings:
        findings = observed.findings  # the findings that led to a re-ask the recordings do not hold
        failed = sum(1 for f in findings if f.is_error)
        error = f"the recorded answer fails {failed} check(s); replay then stopped: {error}"
    validated: Validated = "none"
    if outcome.analysis is not None or (observed is not None and observed.parsed):
        validated = "full"
    elif observed is not None:
        validated = "parse"
    status: EvalStatus = "failed" if outcome.analysis is None else ("stale" if outcome.stale else "ok")
    return ArticleResult(
        id=article.id, source=_relative(article.input_path, root), language=article.language,
        status=status, error=error, calls=outcome.calls, stale=outcome.stale, validated=validated,
        findings=[FindingOut.model_validate(f.to_dict()) for f in findings],
    )  # fmt: skip


def _relative(label: str, root: Path) -> str:
    """`label` (a path, or `path:N` for a JSON Lines line) relative to `root` when it is under it."""
    prefix = str(root).rstrip(os.sep) + os.sep
    return label[len(prefix) :] if label.startswith(prefix) else label


def build_report(
    results: Iterable[ArticleResult],
    input_failures: Iterable[InputProblem] = (),
    *,
    prompt_version: str,
    model: str,
    fixtures: str,
    created_at: str | None = None,
) -> EvalReport:
    """The report over `results`: articles by id, counts by status, and the rates."""
    articles = sorted(results, key=lambda a: a.id)
    counts = {status: sum(1 for a in articles if a.status == status) for status in ("ok", "failed", "stale")}
    return EvalReport(
        prompt_version=prompt_version, model=model,
        created_at=created_at or datetime.now(UTC).isoformat(timespec="seconds"),
        fixtures=fixtures, counts=counts, articles=articles,
        input_failures=sorted(input_failures, key=lambda p: p.source), rates=compute_rates(articles),
    )  # fmt: skip


def finding_lang(finding: FindingOut) -> Lang:
    """The language a finding counts against (a finding without one belongs to the en call)."""
    return finding.lang or "en"


def compute_rates(articles: list[ArticleResult]) -> list[CheckRate]:
    """One row per check (the known ones first, then any other check found) and language."""
    found = {f.check for a in articles for f in a.findings}
    checks = CHECKS + tuple(sorted(found - set(CHECKS)))
    return [_rate(articles, check, lang) for check in checks for lang in LANGS]


def _rate(articles: list[ArticleResult], check: str, lang: Lang) -> CheckRate:
    def mine(f: FindingOut) -> bool:
        return f.check == check and finding_lang(f) == lang

    checked = [a for a in articles if a.checked(check)]
    passing = [a for a in checked if not any(mine(f) and f.severity == "error" for f in a.findings)]
    warnings = sum(1 for a in articles for f in a.findings if mine(f) and f.severity == "warning")
    rate = round(len(passing) / len(checked), 4) if checked else None
    return CheckRate(check=check, lang=lang, checked=len(checked), passing=len(passing), rate=rate,
                     warnings=warnings)  # fmt: skip


# --- comparison -------------------------------------------------------------------------------


def compare(current: EvalReport, baseline: EvalReport) -> Comparison:
    """What got better and what got worse from `baseline` to `current`."""
    rates = _rate_changes(current, baseline)
    before = {a.id: a for a in baseline.articles}
    after = {a.id: a for a in current.articles}
    common = [i for i in sorted(after) if i in before]
    newly_failing = [
        i for i in sorted(after) if not after[i].passed and (i not in before or before[i].passed)
    ]
    newly_passing = [i for i in common if after[i].passed and not before[i].passed]
    new = [c for i in common for c in _unmatched(i, after[i].findings, before[i].findings)]
    resolved = [c for i in common for c in _unmatched(i, before[i].findings, after[i].findings)]
    worse = (
        any(r.delta is not None and r.delta < 0 for r in rates)
        or bool(newly_failing)
        or any(c.finding.severity == "error" for c in new)
    )
    better = (
        any(r.delta is not None and r.delta > 0 for r in rates)
        or bool(newly_passing)
        or any(c.finding.severity == "error" for c in resolved)
    )
    return Comparison(
        baseline_prompt_version=baseline.prompt_version, current_prompt_version=current.prompt_version,
        rates=rates, newly_failing=newly_failing, newly_passing=newly_passing, new_findings=new,
        resolved_findings=resolved, only_in_current=[i for i in sorted(after) if i not in before],
        only_in_baseline=[i for i in sorted(before) if i not in after], got_worse=worse, got_better=better,
        stale=[a.id for a in current.articles if a.stale],
    )  # fmt: skip


def _rate_changes(current: EvalReport, baseline: EvalReport) -> list[RateChange]:
    keys = list(dict.fromkeys([(r.check, r.lang) for r in current.rates + baseline.rates]))
    changes = []
    for check, lang in keys:
        now, then = current.rate(check, lang), baseline.rate(check, lang)
        changes.append(RateChange(check=check, lang=lang, before=then.rate if then else None,
                                  after=now.rate if now else None))  # fmt: skip
    return changes


def finding_key(finding: FindingOut) -> tuple[str, str, str, str]:
    """How a finding is recognised across runs: check, language, field and severity (not the wording)."""
    return finding.check, finding_lang(finding), finding.path, finding.severity


def _unmatched(article_id: str, mine: list[FindingOut], theirs: list[FindingOut]) -> Iterator[FindingChange]:
    """The findings of `mine` with no counterpart in `theirs` (as many times as they occur more often)."""
    left = Counter(finding_key(f) for f in theirs)
    for finding in mine:
        key = finding_key(finding)
        if left[key]:
            left[key] -= 1
        else:
            yield FindingChange(article_id=article_id, finding=finding)


# --- files ------------------------------------------------------------------------------------


def eval_report_json(report: EvalReport) -> str:
    return report.model_dump_json(indent=2) + "\n"


def write_eval_report(report: EvalReport, path: Path) -> None:
    atomic_write_text(path, eval_report_json(report))


def load_eval_report(path: Path) -> EvalReport:
    """A report written by :func:`write_eval_report`; InputError when it cannot be read as one."""
    try:
        return EvalReport.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(str(path), f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except (ValidationError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(str(path), f"is not an eval report ({first})") from None


def eval_json(report: EvalReport, comparison: Comparison | None = None) -> str:
    """What `newsdesk eval --json` prints: the report, and the comparison when there is a baseline."""
    document = {
        "report": report.model_dump(mode="json"),
        "comparison": comparison.model_dump(mode="json") if comparison else None,
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


# --- rendering --------------------------------------------------------------------------------

_COLUMNS = ("check", "lang", "passing", "rate", "warnings")


def summary_line(report: EvalReport) -> str:
    c = report.counts
    counts = f"{c.get('ok', 0)} ok, {c.get('failed', 0)} failed, {c.get('stale', 0)} stale"
    unreadable = f", {len(report.input_failures)} unreadable input(s)" if report.input_failures else ""
    return (
        f"eval of {len(report.articles)} article(s) in {report.fixtures}: {counts}{unreadable} "
        f"(prompt version {report.prompt_version}, model {report.model})"
    )


def format_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def format_change(change: RateChange | None) -> str:
    """A rate change for the table: "=", "+7.7 pts", "-7.7 pts", "new" or "gone"."""
    if change is None or (change.before is None and change.after is None):
        return ""
    if change.before is None:
        return "new"
    if change.after is None:
        return "gone"
    delta = change.delta or 0.0
    return "=" if delta == 0 else f"{delta * 100:+.1f} pts"


def rate_rows(report: EvalReport, comparison: Comparison | None = None) -> list[tuple[str, ...]]:
    """The cells of the rates table (with a last "vs baseline" cell when there is a comparison)."""
    changes = {(c.check, c.lang): c for c in comparison.rates} if comparison else {}
    rows = []
    for r in report.rates:
        row: tuple[str, ...] = (
            r.check,
            r.lang,
            f"{r.passing}/{r.checked}",
            format_rate(r.rate),
            str(r.warnings),
        )
        if comparison is not None:
            row += (format_change(changes.get((r.check, r.lang))),)
        rows.append(row)
    return rows


def _headers(comparison: Comparison | None) -> tuple[str, ...]:
    return _COLUMNS + (("vs baseline",) if comparison is not None else ())


def render_rates(report: EvalReport, comparison: Comparison | None = None) -> str:
    """The rates as a fixed-width text table (text columns left-aligned, figures right-aligned)."""
    table = [_headers(comparison), *rate_rows(report, comparison)]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def one_line(finding: FindingOut) -> str:
    return Finding(finding.check, finding.severity, finding.lang, finding.path, finding.message,
                   finding.text).one_line()  # fmt: skip


def render_eval_details(report: EvalReport, comparison: Comparison | None = None) -> str:
    """Everything below the rates: unreadable inputs, failing and stale articles, the comparison."""
    blocks = [_input_failures(report), _failing(report), _stale(report)]
    if comparison is not None:
        blocks.append(render_comparison(comparison))
    return "\n\n".join(block for block in blocks if block)


def render_eval_table(report: EvalReport, comparison: Comparison | None = None) -> str:
    """The whole plain-text view of an evaluation (for pipes and logs)."""
    parts = [summary_line(report), render_rates(report, comparison), render_eval_details(report, comparison)]
    return "\n\n".join(part for part in parts if part) + "\n"


def _input_failures(report: EvalReport) -> str:
    if not report.input_failures:
        return ""
    lines = [f"Unreadable inputs ({len(report.input_failures)}):"]
    lines += [f"  {p.source}: {p.reason}" for p in report.input_failures]
    return "\n".join(lines)


def _failing(report: EvalReport) -> str:
    failing = report.failing
    if not failing:
        return "No failing articles."
    lines = [f"Failing articles ({len(failing)}):"]
    for article in failing:
        lines += _article_lines(article)
    return "\n".join(lines)


def _article_lines(article: ArticleResult) -> list[str]:
    stale = ", stale recording" if article.stale else ""
    lines = [f"  {article.id} ({article.source}) [{article.status}{stale}]"]
    if article.error:
        lines.append(f"    error: {article.error}")
    errors = article.errors()
    lines += [f"    {one_line(f)}" for f in errors[:_MAX_FINDINGS_SHOWN]]
    if len(errors) > _MAX_FINDINGS_SHOWN:
        lines.append(f"    ... and {len(errors) - _MAX_FINDINGS_SHOWN} more error(s)")
    return lines


def _stale(report: EvalReport) -> str:
    stale = [a for a in report.articles if a.stale]
    if not stale:
        return ""
    lines = [f"Stale recordings, made for other requests ({len(stale)}):"]
    lines += [f"  {a.id} ({a.source})" for a in stale]
    return "\n".join(lines)


def render_comparison(comparison: Comparison) -> str:
    """What got worse and what got better, and the verdict."""
    head = (
        f"Against the baseline (prompt version {comparison.baseline_prompt_version} -> "
        f"{comparison.current_prompt_version}):"
    )
    worse = _worse_lines(comparison)
    better = _better_lines(comparison)
    lines = [head]
    lines += ["Got worse:", *worse] if worse else []
    lines += ["Got better:", *better] if better else []
    new_warnings = _warning_lines(comparison.new_findings)
    lines += ["New warnings:", *new_warnings] if new_warnings else []
    resolved_warnings = _warning_lines(comparison.resolved_findings)
    lines += ["Resolved warnings:", *resolved_warnings] if resolved_warnings else []
    if comparison.only_in_baseline:
        lines.append(f"No longer evaluated: {', '.join(comparison.only_in_baseline)}")
    if comparison.inconclusive:
        stale = len(comparison.stale)
        lines.append(f"Verdict: INCONCLUSIVE: {stale} article(s) replayed stale recordings (answers to "
                     "the old prompts); record them again with --record, then rerun eval.")  # fmt: skip
    elif comparison.got_worse:
        lines.append("Verdict: WORSE than the baseline.")
    elif comparison.got_better:
        lines.append("Verdict: better than the baseline, nothing got worse.")
    else:
        lines.append("Verdict: no change against the baseline.")
    return "\n".join(lines)


def _rate_line(change: RateChange) -> str:
    return f"  {change.check}/{change.lang}: {format_rate(change.before)} -> {format_rate(change.after)}"


def _worse_lines(comparison: Comparison) -> list[str]:
    lines = [_rate_line(r) for r in comparison.worse_rates]
    lines += [f"  newly failing: {article_id}" for article_id in comparison.newly_failing]
    lines += [f"  new error: {c.article_id} {one_line(c.finding)}" for c in comparison.new_errors]
    return lines


def _better_lines(comparison: Comparison) -> list[str]:
    lines = [_rate_line(r) for r in comparison.better_rates]
    lines += [f"  newly passing: {article_id}" for article_id in comparison.newly_passing]
    lines += [f"  resolved error: {c.article_id} {one_line(c.finding)}" for c in comparison.resolved_errors]
    return lines


def _warning_lines(changes: list[FindingChange]) -> list[str]:
    return [f"  {c.article_id} {one_line(c.finding)}" for c in changes if c.finding.severity == "warning"]


def rich_eval_table(report: EvalReport, comparison: Comparison | None = None) -> Table:
    """The rates as a rich table for terminals; print :func:`render_eval_details` below it."""
    table = Table(title=Text(summary_line(report)), title_justify="left", show_lines=False)
    for i, header in enumerate(_headers(comparison)):
        table.add_column(header, justify="left" if i < 2 else "right")
    for rate, row in zip(report.rates, rate_rows(report, comparison), strict=True):
        cells = [Text(cell) for cell in row]
        cells[3].stylize(_rate_style(rate.rate))
        if comparison is not None and row[-1][:1] in ("-", "+"):
            cells[-1].stylize("red" if row[-1].startswith("-") else "green")
        table.add_row(*cells)
    return table


def _rate_style(rate: float | None) -> str:
    if rate is None:
        return "dim"
    return "green" if rate >= 1.0 else "red"
