"""How a run shows itself: a rich progress bar and summary on a terminal, plain lines otherwise."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pipeline.config import Settings
from pipeline.dryrun import DryRun, request_tokens
from pipeline.emit.render import strip_controls
from pipeline.evaluate import (
    Comparison,
    EvalReport,
    eval_json,
    render_eval_details,
    render_eval_table,
    rich_eval_table,
)
from pipeline.ingest.article import Article, estimate_tokens
from pipeline.prompts import PromptBook
from pipeline.recordings import STATES as RECORDING_STATES
from pipeline.recordings import RecordingState
from pipeline.report import STATUSES, ArticleEntry, RunReport
from pipeline.schema import Lang
from pipeline.validate.findings import Finding

_STYLE = {"ok": "green", "failed": "red", "skipped": "cyan", "duplicate": "yellow", "not_started": "magenta"}


def entry_line(entry: ArticleEntry) -> str:
    """One printable line per entry; control characters from inputs or the model never reach a terminal."""
    return printable(_entry_line(entry))


def printable(text: str) -> str:
    """Untrusted text (a file name, an error, a server's message) as one terminal line: line breaks
    shown as \\n and \\r, other control characters (terminal escapes) removed."""
    return strip_controls(text.replace("\r", "\\r").replace("\n", "\\n"))


def _entry_line(entry: ArticleEntry) -> str:
    line = f"{entry.status:<9} {entry.source}"
    if entry.id:
        line += f" -> {entry.id}"
    if entry.error:
        line += f": {entry.error}"
    if entry.stale:
        line += " (stale recording)"
    return line


def summary_line(report: RunReport) -> str:
    counts = ", ".join(f"{report.counts.get(s, 0)} {s}" for s in STATUSES if report.counts.get(s))
    u = report.usage
    tokens = f"{u.prompt_tokens} prompt ({u.cached_tokens} cached) + {u.completion_tokens} completion tokens"
    parts = [(counts or "no inputs") + (f", {report.stale} stale" if report.stale else ""), tokens]
    if report.cost_usd is not None:
        parts.append(f"${report.cost_usd:.4f}")
    if report.endpoint_errors:
        parts.append(_endpoint_errors(report.endpoint_errors))
    if report.rate_limit_pause_s:
        parts.append(f"paused {report.rate_limit_pause_s:g}s for rate limits")
    parts.append(f"{report.duration_s}s")
    return f"run {report.run_id}: " + "; ".join(parts)


def _endpoint_errors(by_kind: dict[str, int]) -> str:
    """ "7 endpoint errors (429 x5, 503 x2)": what the endpoint answered instead of replies."""
    total = sum(by_kind.values())
    kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(by_kind.items(), key=lambda kc: -kc[1]))
    return f"{total} endpoint error{'s' if total != 1 else ''} ({kinds})"


class PlainProgress:
    """One line per article and a closing summary, for logs and pipes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def start(self, total: int) -> None:
        print(f"newsdesk: {total} input(s)", file=self.stream, flush=True)

    def advance(self, entry: ArticleEntry) -> None:
        print(entry_line(entry), file=self.stream, flush=True)

    def note(self, message: str) -> None:
        print(printable(message), file=self.stream, flush=True)

    def finish(self, report: RunReport) -> None:
        print(summary_line(report), file=self.stream, flush=True)


class RichProgress:
    """A progress bar while the run goes, then the articles that need attention and the summary."""

    ATTENTION_ROWS = 30  # failed, not started or stale; the report lists every article

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bar = Progress(TextColumn("[bold]newsdesk"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.description}"),
                            console=self.console, transient=True)  # fmt: skip
        self.task = self.bar.add_task("", total=0)
        self.attention: list[ArticleEntry] = []
        self.more = 0

    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total)
        self.bar.start()

    # Untrusted text goes in as Text, never as markup: a file named "a[/b].txt" must not be read as
    # a closing tag (rich raises on it) or "[blink]" as a style.

    def advance(self, entry: ArticleEntry) -> None:
        self.bar.advance(self.task)
        if entry.status in ("failed", "not_started") or entry.stale:
            self.bar.console.print(Text(entry_line(entry), style=_STYLE[entry.status]), highlight=False)
            if len(self.attention) < self.ATTENTION_ROWS:
                self.attention.append(entry)
            else:
                self.more += 1

    def note(self, message: str) -> None:
        self.bar.console.print(Text(printable(message), style="yellow"), highlight=False)

    def finish(self, report: RunReport) -> None:
        self.bar.stop()
        if self.attention:
            table = Table(title=f"Run {report.run_id}: articles that need attention", show_lines=False)
            for column in ("Status", "Input", "Calls", "Tokens", "Note"):
                table.add_column(column)
            for entry in self.attention:
                tokens = entry.usage.prompt_tokens + entry.usage.completion_tokens
                note = entry.error or ("stale recording" if entry.stale else "; ".join(entry.notes))
                status = Text(entry.status, style=_STYLE[entry.status])
                article = Text(printable(entry.source or entry.id or ""))  # the file an editor opens
                table.add_row(status, article, str(entry.attempts), str(tokens), Text(printable(note)))
            self.console.print(table)
            if self.more:
                self.console.print(
                    f"... and {self.more} more: run-report.json in the output folder lists all",
                    highlight=False,
                )
        self.console.print(summary_line(report), highlight=False)


def show_findings(findings: list[Finding], analysis: Path, source: Article | None, as_json: bool) -> None:
    """Print the findings of `newsdesk validate`: JSON, a table on a terminal, else plain lines."""
    errors = sum(1 for f in findings if f.is_error)
    warnings = len(findings) - errors
    if as_json:
        document = {
            "file": str(analysis),
            "source": source.input_path if source else None,
            "errors": errors,
            "warnings": warnings,
            "findings": [f.to_dict() for f in findings],
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return
    verdict = f"{analysis}: {errors} error(s), {warnings} warning(s)" + ("" if source else " (no --source)")
    if not sys.stdout.isatty():
        for finding in findings:
            print(finding.one_line())
        print(verdict)
        return
    console = Console()
    if findings:
        table = Table(show_lines=False)
        for column in ("Severity", "Check", "Lang", "Field", "Message"):
            table.add_column(column, overflow="fold")
        for f in findings:
            style = "red" if f.is_error else "yellow"
            table.add_row(f"[{style}]{f.severity}[/]", f.check, f.lang or "-", f.path, f.message)
        console.print(table)
    console.print(verdict, highlight=False)


def show_dry_run(result: DryRun, settings: Settings) -> None:
    cost = (
        f"${result.cost_usd:.4f}"
        if result.cost_usd is not None
        else f"unknown (no price for {settings.model})"
    )
    for failure in result.failures:  # the line a run prints for it
        entry = ArticleEntry(id=None, source=failure.input_path, status="failed", error=failure.reason)
        print(entry_line(entry))
    print(f"dry run: {result.articles} article(s), {result.failed_inputs} unreadable input(s), "
          f"{result.requests} request(s)")  # fmt: skip
    print(f"estimated tokens: {result.prompt_tokens} prompt + {result.completion_tokens} completion "
          f"(completion assumed at half of max_output_tokens per call); estimated cost: {cost}")  # fmt: skip


def show_prompts(book: PromptBook, article: Article, calls: list[Lang], as_json: bool) -> None:
    bodies = {call: book.request_body(call, book.messages(article, call), book.settings.max_output_tokens)
              for call in calls}  # fmt: skip
    if as_json:
        print(json.dumps(bodies, ensure_ascii=False, indent=2))
        return
    print(f"article {article.id} ({article.input_path}); prompt version {book.version}")
    for call, body in bodies.items():
        messages = body["messages"]
        print(
            f"\n=== call {call}: {len(messages)} message(s), about {request_tokens(body)} prompt tokens ==="
        )
        for i, message in enumerate(messages):
            tokens = estimate_tokens(message["content"])
            print(f"\n--- [{i}] {message['role']} (about {tokens} tokens) ---")
            print(message["content"])
        extra = {k: v for k, v in body.items() if k not in ("messages", "response_format")}
        print(f"\n--- parameters: {json.dumps(extra, ensure_ascii=False)}; response_format: "
              f"{body.get('response_format', {}).get('type', 'none (text)')} ---")  # fmt: skip


def _recording_line(state: RecordingState, current: str) -> str:
    if state.reason is not None:  # unreadable: the reason names the file
        return state.reason if state.call else f"{state.path}: {state.reason}"
    if not state.call:  # an orphan
        return state.path
    attempt = f" re-ask {state.attempt}" if state.attempt else ""
    why = ""
    if state.state == "stale" and state.recorded_version == current:  # the article or a setting changed
        why = " (its request changed; the prompts did not)"
    elif state.state == "stale" and state.recorded_version:
        why = f" (recorded with {state.recorded_version})"
    return f"{state.source} {state.call}{attempt}{why}"


def show_recording_states(states: list[RecordingState], version: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"prompt_version": version, "recordings": [asdict(s) for s in states]},
                         ensure_ascii=False, indent=2))  # fmt: skip
        return
    counts = {k: sum(1 for s in states if s.state == k) for k in RECORDING_STATES}
    for state in states:
        if state.state != "current":
            print(f"{state.state:<10} {printable(_recording_line(state, version))}")
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    print(f"prompt version {version}: {summary}")


def show_eval(report: EvalReport, comparison: Comparison | None, as_json: bool) -> None:
    if as_json:
        print(eval_json(report, comparison))
        return
    if not sys.stdout.isatty():
        print(render_eval_table(report, comparison), end="")
        return
    console = Console()
    console.print(rich_eval_table(report, comparison))
    console.print(render_eval_details(report, comparison), markup=False, highlight=False)
