"""The command line: thin commands over the library.

Errors become a one-line ``Error: ...`` and a non-zero exit; set ``NEWSDESK_DEBUG=1`` to get
the traceback instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import traceback
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from pipeline.compare import diff_runs, render_diff_text, write_diff_html
from pipeline.config import Settings, resolve_settings
from pipeline.console import (
    PlainProgress,
    RichProgress,
    printable,
    show_dry_run,
    show_eval,
    show_findings,
    show_prompts,
    show_recording_states,
)
from pipeline.dryrun import DryRun, dry_run
from pipeline.emit.index import write_index
from pipeline.emit.output import write_article
from pipeline.emit.render import SiteInfo
from pipeline.errors import ConfigError, InputError, LockedError, NewsdeskError, OutputError, debugging
from pipeline.evaluate import DEFAULT_REPORT_NAME, evaluate, load_eval_report, write_eval_report
from pipeline.evaluate import compare as compare_eval
from pipeline.ingest import Limits, check_out_apart
from pipeline.model.base import ChatModel
from pipeline.model.cache import JOURNAL_DIR, JournaledModel
from pipeline.model.replay import RecordingModel, ReplayModel
from pipeline.prompts import PromptBook
from pipeline.recordings import recording_states
from pipeline.redact import NO_KEY, Redactor
from pipeline.report import RunReport
from pipeline.runner import Progress, RunMode, Runner, RunOptions, parse_shard
from pipeline.schema import Analysis, Lang
from pipeline.validate.document import load_source, read_analysis_document, validate_document

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: the rich one shows a flag as "--force <bool>", as if it took a value
    pretty_exceptions_enable=False,
    help="Turn raw news articles into bilingual (English + Simplified Chinese) analysis.",
)
fixtures_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Recorded model calls used for replay."
)
app.add_typer(fixtures_app, name="fixtures")

EXIT_CODES = {ConfigError: 2, InputError: 2, LockedError: 3}  # InputError: a file given to a command


@app.callback()
def newsdesk() -> None:
    """Turn raw news articles into bilingual (English + Simplified Chinese) analysis."""


def fail(exc: NewsdeskError, code: int | None = None) -> NoReturn:
    """The one-line error and its exit code; with NEWSDESK_DEBUG the traceback first, same code."""
    if code is None:
        code = next((c for kind, c in EXIT_CODES.items() if isinstance(exc, kind)), 1)
    redact = Redactor(_secrets())  # a message may quote the key
    if debugging():
        print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
    typer.echo(printable(redact(f"Error: {exc}")), err=True)
    raise typer.Exit(code)


@contextmanager
def writing_to(path: Path) -> Iterator[None]:
    """A file or folder the user named that cannot be written: an OutputError naming it."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({exc.strerror or exc})") from None


def api_key(settings: Settings) -> str:
    key = os.environ.get(settings.api_key_env, "")
    if key:
        return key
    if settings.base_url:
        return NO_KEY  # local servers (vLLM, Ollama, llama.cpp) often need no key
    raise ConfigError(f"no API key: set ${settings.api_key_env}, or use --replay DIR to run from recordings")


def build_model(
    settings: Settings, replay: Path | None, record: Path | None, out: Path, strict_replay: bool = False
) -> tuple[ChatModel, RunMode, JournaledModel | None]:
    """The model for a run: replay, or live (optionally recording), journaled under OUT/.calls."""
    if replay and record:
        raise ConfigError("--replay and --record exclude each other")
    if replay:
        if not replay.is_dir():
            raise ConfigError(f"--replay {replay}: no such folder of recordings")
        return ReplayModel(replay, strict=strict_replay), "replay", None
    from pipeline.model.live import LiveModel

    key = api_key(settings)
    journal = JournaledModel(LiveModel(settings, key, Redactor([key])), out / JOURNAL_DIR)
    if record:  # outside the journal: an answer is journaled even when its recording cannot be saved
        return RecordingModel(journal, record), "record", journal
    return journal, "live", journal


@app.command("run")
def run_command(
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH", help="Article files or folders (searched recursively).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    replay: Annotated[Path | None, typer.Option(help="Answer from recordings in DIR (no network).")] = None,
    record: Annotated[Path | None, typer.Option(help="Call the model and save every call in DIR.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name.")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint (else $OPENAI_BASE_URL).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Articles processed at once.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Client-side cap on requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Client-side cap on tokens per minute.")] = None,
    budget_usd: Annotated[
        float | None, typer.Option(help="Start no article that could exceed this spend.")
    ] = None,
    shard: Annotated[str | None, typer.Option(help="K/N: take the K-th of N deterministic shares.")] = None,
    batch_api: Annotated[
        bool, typer.Option("--batch-api", help="Use the OpenAI Batch API (half price).")
    ] = False,
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo articles whose outputs already exist.")
    ] = False,
    strict_replay: Annotated[
        bool, typer.Option("--strict-replay", help="Fail articles whose recordings are stale.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render every request; report tokens and cost; call nothing.")
    ] = False,
) -> None:
    """Analyse every article under PATHS and write HTML, Markdown and JSON to --out.

    Exit 0 when every article is ok or skipped, 1 when any failed or was not started,
    2 on a usage or configuration error, 3 when another run holds the output folder,
    130 when stopped by Ctrl-C or SIGTERM.
    """
    try:
        flags = {"model": model, "base_url": base_url, "concurrency": concurrency, "rpm": rpm, "tpm": tpm,
                 "budget_usd": budget_usd}  # fmt: skip
        settings = resolve_settings(flags, config)
        _secrets(settings)  # an error line from now on is redacted of the key this config names
        if settings.budget_usd is not None and settings.price() is None:
            raise ConfigError(f"--budget-usd needs a price for model {settings.model!r}: add "
                              f'[prices."{settings.model}"] with input and output to the config')  # fmt: skip
        options = RunOptions(out=out, force=force, shard=_shard(shard))
        book = PromptBook(settings)
        if dry_run:
            check_out_apart(paths, out)
            estimate = dry_run_estimate(paths, settings, book, out)
            show_dry_run(estimate, settings)
            raise typer.Exit(1 if estimate.failures else 0)  # as a run exits when an input fails
        if strict_replay and not replay:
            raise ConfigError("--strict-replay goes with --replay DIR")
        chat, mode, journal = build_model(settings, replay, record, out, strict_replay)
        if batch_api:
            if mode == "replay":
                raise ConfigError("--batch-api calls the Batch API; it cannot be combined with --replay")
            from pipeline.batch import run_batch

            report = asyncio.run(
                _stoppable(
                    run_batch(settings, book, chat, journal, paths, options, _progress(), api_key(settings))
                )
            )
        else:
            runner = Runner(settings, chat, book, _progress(), journal, Redactor(_secrets(settings)))
            options.mode = mode
            report = asyncio.run(_run(runner, chat, paths, options))
    except NewsdeskError as exc:
        fail(exc)
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM
        typer.echo("Interrupted: the finished articles are written; run again to do the rest", err=True)
        raise typer.Exit(130) from None
    if report.halted:
        typer.echo(f"Error: the run stopped early: {report.halted}", err=True)
    if report.index_error:
        typer.echo(f"Error: index.html and feed.xml were not rebuilt: {report.index_error}", err=True)
    if report.flush_error:
        message = f"the articles' files could not be flushed to disk: {report.flush_error}"
        typer.echo(f"Error: {message}; the next run checks them again", err=True)
    raise typer.Exit(report.exit_code)


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _progress() -> Progress:
    return RichProgress() if sys.stderr.isatty() else PlainProgress()


async def _run(runner: Runner, chat: ChatModel, paths: list[Path], options: RunOptions) -> RunReport:
    try:
        return await _stoppable(runner.run(paths, options))
    finally:
        await chat.aclose()


async def _stoppable(run: Coroutine[Any, Any, RunReport]) -> RunReport:
    """`run`, stopped by SIGTERM (`systemctl stop`, a scheduler's timeout) as by Ctrl-C: the
    articles in flight are cancelled, the log says so, the lock is released."""
    task = asyncio.ensure_future(run)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError):  # no signals here (not Linux, not the main thread)
        return await task
    try:
        return await task
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


@app.command("render")
def render_command(
    analysis: Annotated[Path, typer.Argument(help="A saved analysis.json.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (articles/<id>/, index, feed).")],
    config: Annotated[Path | None, typer.Option(help="TOML config file (site name).")] = None,
) -> None:
    """Render a saved analysis.json to HTML and Markdown, without a model."""
    try:
        settings = resolve_settings({}, config)
        parsed = parse_analysis(analysis, read_analysis_document(analysis))
        site = SiteInfo(settings.site_name, settings.site_name_zh, settings.site_url)
        with writing_to(out):
            written = write_article(out, parsed, site)
            write_index(out, site)
    except OutputError as exc:
        fail(exc, 2)
    except NewsdeskError as exc:
        fail(exc)
    for path in written:
        typer.echo(path)


def parse_analysis(path: Path, data: dict[str, object]) -> Analysis:
    try:
        return Analysis.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(str(path), f"is not a complete analysis.json ({first['msg']} at {where})") from None


@app.command("prompts")
def prompts_command(
    article: Annotated[str, typer.Argument(help="An article file (FILE.jsonl:N for one line).")],
    lang: Annotated[str | None, typer.Option(help="Only the en or zh call.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the exact request bodies as JSON.")] = False,
) -> None:
    """Show the exact messages that would be sent for ARTICLE, with token estimates."""
    try:
        if lang not in (None, "en", "zh"):
            raise ConfigError("--lang takes en or zh")
        settings = resolve_settings({}, config)
        book = PromptBook(settings)
        source = load_source(article, Limits(settings.max_input_bytes, settings.max_input_tokens))
    except NewsdeskError as exc:
        fail(exc)
    calls: list[Lang] = ["en", "zh"] if lang is None else (["en"] if lang == "en" else ["zh"])
    try:
        show_prompts(book, source, calls, as_json)
    except NewsdeskError as exc:  # a template that fails to render
        fail(exc)


def dry_run_estimate(paths: list[Path], settings: Settings, book: PromptBook, out: Path) -> DryRun:
    return dry_run(paths, settings, book, out)


@fixtures_app.command("status")
def fixtures_status_command(
    articles: Annotated[Path, typer.Argument(help="The fixture articles.")] = Path("fixtures/articles"),
    recordings: Annotated[Path, typer.Option(help="The recordings folder.")] = Path("fixtures/recordings"),
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the states as JSON.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 unless every recording is current.")] = False,
) -> None:
    """List recordings that are current, stale, missing, unreadable or orphaned for the current prompts."""
    try:
        settings = resolve_settings({}, config)
        book = PromptBook(settings)
        limits = Limits(settings.max_input_bytes, settings.max_input_tokens)
        states = recording_states([articles], recordings, book, limits)
    except NewsdeskError as exc:
        fail(exc)
    show_recording_states(states, book.version, as_json)
    raise typer.Exit(1 if check and any(s.state != "current" for s in states) else 0)


@app.command("eval")
def eval_command(
    folder: Annotated[Path, typer.Argument(help="Fixtures: articles/ and recordings/.")] = Path("fixtures"),
    baseline: Annotated[Path | None, typer.Option(help="An earlier eval report to compare with.")] = None,
    report_path: Annotated[
        Path, typer.Option("--report", help="Where to write this eval's JSON report.")
    ] = Path(DEFAULT_REPORT_NAME),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report (and comparison) as JSON.")
    ] = False,
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
) -> None:
    """Replay the fixtures, run every validator, and show pass rates per check and language.

    With --baseline, show what got better and worse; exit 1 when anything got worse, or when stale
    recordings (answers to the old prompts) make the comparison meaningless.
    """
    try:
        settings = resolve_settings({}, config)
        report = asyncio.run(evaluate(folder, settings))
        comparison = compare_eval(report, load_eval_report(baseline)) if baseline else None
        with writing_to(report_path):
            write_eval_report(report, report_path)
    except OutputError as exc:
        fail(exc, 2)
    except NewsdeskError as exc:
        fail(exc)
    show_eval(report, comparison, as_json)
    failed_gate = comparison is not None and (comparison.got_worse or comparison.inconclusive)
    raise typer.Exit(1 if failed_gate else 0)


@app.command("diff")
def diff_command(
    out_a: Annotated[Path, typer.Argument(help="The earlier run's output folder.")],
    out_b: Annotated[Path, typer.Argument(help="The later run's output folder.")],
    html: Annotated[Path | None, typer.Option(help="Also write the diff as an HTML page.")] = None,
) -> None:
    """Show what changed between two runs, section by section and language by language."""
    try:
        result = diff_runs(out_a, out_b)
        if html is not None:
            with writing_to(html):
                write_diff_html(result, html)
    except OutputError as exc:
        fail(exc, 2)
    except NewsdeskError as exc:
        fail(exc)
    typer.echo(render_diff_text(result), nl=False)


@app.command("validate")
def validate_command(
    analysis: Annotated[Path, typer.Argument(help="analysis.json, or only the part the model writes.")],
    source: Annotated[
        str | None, typer.Option(help="The source article (any input format; FILE.jsonl:N for a line).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    config: Annotated[Path | None, typer.Option(help="TOML config file (for the glossary).")] = None,
) -> None:
    """Check a saved analysis (and, with --source, its faithfulness to the article).

    Exit 0 when there is no error, 1 when there is any, 2 when an input cannot be read.
    """
    try:
        settings = resolve_settings({}, config)
        book = PromptBook(settings)
        data = read_analysis_document(analysis)
        limits = Limits(settings.max_input_bytes, settings.max_input_tokens)
        sha = (
            (data.get("article") or {}).get("content_sha256")
            if isinstance(data.get("article"), dict)
            else None
        )
        article = load_source(source, limits, sha) if source else None
    except NewsdeskError as exc:
        fail(exc)
    findings = validate_document(data, article, book.glossary, book.system_prompt)
    show_findings(findings, analysis, article, as_json)
    raise typer.Exit(1 if any(f.is_error for f in findings) else 0)


_KEY_VARIABLES = {"OPENAI_API_KEY"}  # and the api_key_env of any config this process resolved


def _secrets(settings: Settings | None = None) -> list[str]:
    """The secrets this process knows (the API key), for redaction."""
    if settings is not None:
        _KEY_VARIABLES.add(settings.api_key_env)
    return [os.environ[name] for name in sorted(_KEY_VARIABLES) if os.environ.get(name)]


# click's UsageError, found from typer's BadParameter (typer vendors click from 0.29 on, and
# imported it before): a flag or argument a command cannot take
_UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.Abort:  # Ctrl-C at a prompt
        raise SystemExit(130) from None
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `newsdesk` alone: its help
            exc.show()  # type: ignore[attr-defined]
            raise SystemExit(2) from None
        raise SystemExit(_usage_error(exc)) from None
    except Exception as exc:  # a bug; with NEWSDESK_DEBUG its traceback, redacted
        redact = Redactor(_secrets())
        if debugging():
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        else:
            line = f"Error: internal error ({type(exc).__name__}: {exc}); rerun with NEWSDESK_DEBUG=1"
            print(printable(redact(line + " for the traceback")), file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def _usage_error(exc: Exception) -> int:
    """One line, `Error: ...`, naming the help to read; exit 2."""
    context = getattr(exc, "ctx", None)
    command = getattr(context, "command_path", None) or _command_in_argv()
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    print(printable(f"Error: {message} (see `{command} --help`)"), file=sys.stderr)
    return 2


def _command_in_argv() -> str:
    """`newsdesk run` (or `newsdesk fixtures status`) from the command line, when an error comes
    without the command it was met in (an option missing its value)."""
    words, group = ["newsdesk"], typer.main.get_command(app)
    for arg in sys.argv[1:]:
        commands = getattr(group, "commands", {})
        if arg not in commands:
            break
        words.append(arg)
        group = commands[arg]
    return " ".join(words)
