"""The command line: thin commands over the library.

Errors become a one-line ``Error: ...`` and a non-zero exit; set ``NEWSDESK_DEBUG=1`` to get
the traceback instead.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from pipeline.config import Settings, resolve_settings
from pipeline.console import PlainProgress, RichProgress, show_findings
from pipeline.errors import ConfigError, InputError, LockedError, NewsdeskError
from pipeline.ingest import Limits
from pipeline.model.base import ChatModel
from pipeline.model.replay import RecordingModel, ReplayModel
from pipeline.prompts import PromptBook
from pipeline.redact import Redactor
from pipeline.runner import Progress, RunMode, Runner, RunOptions
from pipeline.validate.document import load_source, read_analysis_document, validate_document

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Turn raw news articles into bilingual (English + Simplified Chinese) analysis.",
)

EXIT_CODES = {ConfigError: 2, LockedError: 3}


@app.callback()
def newsdesk() -> None:
    """Turn raw news articles into bilingual (English + Simplified Chinese) analysis."""


def fail(exc: NewsdeskError) -> NoReturn:
    if os.environ.get("NEWSDESK_DEBUG"):
        raise exc
    code = next((c for kind, c in EXIT_CODES.items() if isinstance(exc, kind)), 1)
    typer.echo(f"Error: {exc}", err=True)
    raise typer.Exit(code)


def api_key(settings: Settings) -> str:
    key = os.environ.get(settings.api_key_env, "")
    if key:
        return key
    if settings.base_url:
        return "unused"  # local servers (vLLM, Ollama, llama.cpp) often need no key
    raise ConfigError(f"no API key: set ${settings.api_key_env}, or use --replay DIR to run from recordings")


def build_model(settings: Settings, replay: Path | None, record: Path | None) -> tuple[ChatModel, RunMode]:
    if replay and record:
        raise ConfigError("--replay and --record exclude each other")
    if replay:
        if not replay.is_dir():
            raise ConfigError(f"--replay {replay}: no such folder of recordings")
        return ReplayModel(replay), "replay"
    from pipeline.model.live import LiveModel

    key = api_key(settings)
    live = LiveModel(settings, key, Redactor([key]))
    return (RecordingModel(live, record), "record") if record else (live, "live")


@app.command("run")
def run_command(
    paths: Annotated[list[Path], typer.Argument(help="Article files or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    replay: Annotated[Path | None, typer.Option(help="Answer from recordings in DIR (no network).")] = None,
    record: Annotated[Path | None, typer.Option(help="Call the model and save every call in DIR.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name.")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint (else $OPENAI_BASE_URL).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Articles processed at once.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
    force: Annotated[bool, typer.Option(help="Redo articles whose outputs already exist.")] = False,
) -> None:
    """Analyse every article under PATHS and write HTML, Markdown and JSON to --out."""
    try:
        flags = {"model": model, "base_url": base_url, "concurrency": concurrency}
        settings = resolve_settings(flags, config)
        book = PromptBook(settings)
        chat, mode = build_model(settings, replay, record)
        progress: Progress = RichProgress() if sys.stderr.isatty() else PlainProgress()
        runner = Runner(settings, chat, book, progress)
        report = asyncio.run(_run(runner, chat, paths, RunOptions(out=out, mode=mode, force=force)))
    except NewsdeskError as exc:
        fail(exc)
    raise typer.Exit(report.exit_code)


async def _run(runner: Runner, chat: ChatModel, paths: list[Path], options: RunOptions):  # type: ignore[no-untyped-def]
    try:
        return await runner.run(paths, options)
    finally:
        await chat.aclose()


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
        article = load_source(source, limits) if source else None
    except InputError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    except NewsdeskError as exc:
        fail(exc)
    findings = validate_document(data, article, book.glossary)
    show_findings(findings, analysis, article, as_json)
    raise typer.Exit(1 if any(f.is_error for f in findings) else 0)


def main() -> None:
    app()
