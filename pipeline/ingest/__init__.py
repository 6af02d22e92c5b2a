"""Ingestion: find the inputs, read each one into an :class:`Article`, or say why it cannot be read.

One bad input never stops the others: :func:`load_articles` yields an :class:`InputFailure`
for it and goes on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import ConfigError
from pipeline.ingest.article import (
    Article,
    SourceLanguage,
    content_hash,
    detect_language,
    make_article_id,
    truncate_to_tokens,
)
from pipeline.ingest.dates import normalize_published
from pipeline.ingest.decode import UndecodableError, declared_html_charset, decode_text, looks_binary
from pipeline.ingest.formats import (
    FormatError,
    RawArticle,
    article_from_mapping,
    parse_html,
    parse_json_object,
    parse_md,
    parse_txt,
)

__all__ = ["Article", "InputFailure", "Limits", "discover", "load_articles", "load_file"]

MIN_TEXT_CHARS = 20  # fewer visible characters than this is a stub, not an article
SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".json", ".jsonl")


@dataclass(frozen=True)
class Limits:
    max_input_bytes: int = 10_000_000
    max_input_tokens: int = 12_000


@dataclass(frozen=True)
class InputFailure:
    """An input that could not be read; `reason` is one line."""

    input_path: str
    reason: str

    @property
    def label(self) -> str:
        return self.input_path


Loaded = Article | InputFailure


def path_label(path: Path) -> str:
    """`path` as text that can go anywhere (reports, JSON, logs): a file name that is not valid in
    the file system's encoding (a GBK name from an unzipped archive) shows its bytes escaped."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return text


def check_out_apart(paths: Iterable[str | Path], out: Path) -> None:
    """The output folder must not be an input, nor hold one: a run would read its own pages, logs
    and reports as articles. (An output folder inside an input folder is fine: it is skipped.)"""
    home = real_path(out)
    for raw in paths:
        path = real_path(Path(raw))
        if path == home or home in path.parents:
            what = "is an input folder" if path == home else f"holds the input {raw}"
            raise ConfigError(
                f"--out {out} {what}: a run would read its own outputs as articles; write the "
                "outputs to another folder (one inside the input folder is fine: it is skipped)"
            )


def discover(paths: Iterable[str | Path], exclude: Path | None = None) -> Iterator[Path | InputFailure]:
    """Every input file under `paths`, in a stable order, each real file once; a file or folder
    that cannot be read is a failure naming it, and the others go on.

    Links to folders are followed, each real folder searched once (a link back up is no loop).
    `exclude` (the output folder) is never searched, so a run never reads its own outputs.
    """
    seen: set[Path] = set()
    skip = real_path(exclude) if exclude is not None else None
    for raw in paths:
        path = Path(raw)
        try:
            is_dir, is_file = path.is_dir(), path.is_file()
        except OSError as exc:  # in a folder this user may not enter
            yield InputFailure(path_label(path), _unreadable(exc))
            continue
        if is_dir:
            yield from _walk(path, seen, skip)
        elif is_file:
            if _first_visit(path, seen):
                yield path
        else:
            yield InputFailure(path_label(path), _not_a_file(path))


def _walk(root: Path, seen: set[Path], skip: Path | None = None) -> Iterator[Path | InputFailure]:
    problems: list[OSError] = []  # folders os.walk could not list, as it meets them
    walked = {real_path(root)}
    for folder, dirs, files in os.walk(root, onerror=problems.append, followlinks=True):
        yield from _folder_failures(problems)
        dirs[:] = _folders_to_search(Path(folder), dirs, walked, skip)
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            try:
                regular = path.is_file()
            except OSError as exc:
                yield InputFailure(path_label(path), _unreadable(exc))
                continue
            if not regular:
                yield InputFailure(path_label(path), _not_a_file(path))
            elif _first_visit(path, seen):
                yield path
    yield from _folder_failures(problems)


def _folders_to_search(folder: Path, names: list[str], walked: set[Path], skip: Path | None) -> list[str]:
    """The subfolders of `folder` to go into, in order: not hidden, not the output folder, and not
    a folder already searched (through a link to it, or a link back to a folder above)."""
    kept = []
    for name in sorted(names):
        real = real_path(folder / name)
        inside_out = skip is not None and (real == skip or skip in real.parents)  # a link into OUT too
        if name.startswith(".") or inside_out or real in walked:
            continue
        walked.add(real)
        kept.append(name)
    return kept


def _folder_failures(problems: list[OSError]) -> Iterator[InputFailure]:
    while problems:
        exc = problems.pop(0)
        yield InputFailure(path_label(Path(exc.filename or "?")), f"folder {_unreadable(exc)}")


def _unreadable(exc: OSError) -> str:
    return f"cannot be read: {exc.strerror or exc}"


def _not_a_file(path: Path) -> str:
    """Why `path` cannot be read as a file, in words."""
    try:
        if path.is_symlink() and not path.exists():
            return "a broken or looping symbolic link"
        if path.exists():
            return "not a regular file (a FIFO, socket or device)"
    except OSError as exc:
        return _unreadable(exc)
    return "no such file or directory"


def real_path(path: Path) -> Path:
    """`path` with every link resolved; as it stands (made absolute) when a link loops or a
    folder on the way cannot be entered."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, on Python 3.11 and 3.12
        return path.absolute()


def _first_visit(path: Path, seen: set[Path]) -> bool:
    real = real_path(path)
    if real in seen:
        return False
    seen.add(real)
    return True


def load_articles(
    paths: Iterable[str | Path], limits: Limits | None = None, exclude: Path | None = None
) -> Iterator[Loaded]:
    """Every article (or failure) under `paths`, the folder `exclude` left out."""
    limits = limits or Limits()
    for item in discover(paths, exclude):
        if isinstance(item, InputFailure):
            yield item
        else:
            yield from load_file(item, limits)


def load_file(path: Path, limits: Limits) -> Iterator[Loaded]:
    """The article(s) in one file; a `.jsonl` file gives one per line."""
    label = path_label(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        yield InputFailure(label, f"unsupported file type {suffix or '(none)'}; "
                                  f"use one of {', '.join(SUPPORTED_SUFFIXES)}")  # fmt: skip
        return
    if suffix == ".jsonl":
        yield from _load_jsonl(path, limits)
        return
    try:
        data = _read_bytes(path, limits)
        raw = _parse(suffix, data)
        yield _build(raw, label, path.stem, limits)
    except (FormatError, UndecodableError, OSError) as exc:
        yield InputFailure(label, _reason(exc))


def _read_bytes(path: Path, limits: Limits) -> bytes:
    size = path.stat().st_size
    if size > limits.max_input_bytes:
        raise FormatError(
            f"file is {size:,} bytes, over the {limits.max_input_bytes:,}-byte cap "
            "(raise max_input_bytes in the config to accept it)"
        )
    data = path.read_bytes()
    if not data.strip():
        raise FormatError("empty file")
    if looks_binary(data):
        raise FormatError("binary file, not text")
    return data


def _parse(suffix: str, data: bytes) -> RawArticle:
    if suffix in (".html", ".htm"):
        return parse_html(decode_text(data, declared_html_charset(data)))
    text = decode_text(data)
    if suffix == ".json":
        return parse_json_object(text)
    if suffix in (".md", ".markdown"):
        return parse_md(text)
    return parse_txt(text)


def _load_jsonl(path: Path, limits: Limits) -> Iterator[Loaded]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        yield InputFailure(path_label(path), _reason(exc))
        return
    with handle:
        found = False
        for number, line in enumerate(_capped_lines(handle, limits.max_input_bytes), start=1):
            label = f"{path_label(path)}:{number}"
            if line is None:
                found = True
                yield InputFailure(label, f"line is over the {limits.max_input_bytes:,}-byte cap")
                continue
            if not line.strip():
                continue
            found = True
            yield _load_jsonl_line(line, label, f"{path.stem}-{number}", limits)
        if not found:
            yield InputFailure(path_label(path), "empty file")


def _capped_lines(handle: BinaryIO, cap: int) -> Iterator[bytes | None]:
    """The lines of `handle`, reading at most `cap` + 1 bytes of each; None for a longer line."""
    while True:
        line = handle.readline(cap + 1)
        if not line:
            return
        if len(line) > cap and not line.endswith(b"\n"):
            while True:  # skip the rest of the over-long line without keeping it
                rest = handle.readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
            continue
        yield line


def _load_jsonl_line(line: bytes, label: str, name: str, limits: Limits) -> Loaded:
    if len(line) > limits.max_input_bytes:
        return InputFailure(label, f"line is over the {limits.max_input_bytes:,}-byte cap")
    try:
        raw = parse_json_object(line.decode("utf-8-sig").rstrip("\r\n"), line=True)
        return _build(raw, label, name, limits)
    except UnicodeDecodeError:
        return InputFailure(label, "line is not valid UTF-8")
    except FormatError as exc:
        return InputFailure(label, _reason(exc))


def _build(raw: RawArticle, label: str, name: str, limits: Limits) -> Loaded:
    text = raw.text.strip()
    visible = len("".join(text.split()))
    if visible < MIN_TEXT_CHARS:
        shown = f" (only {visible} character{'s' if visible > 1 else ''})" if visible else ""
        return InputFailure(label, f"no article text found{shown}")
    title = (raw.title or "").strip() or text.split("\n", 1)[0][:200]
    text, truncated = truncate_to_tokens(text, limits.max_input_tokens)
    sha = content_hash(title, text)
    notes = (
        (f"article cut to {limits.max_input_tokens} tokens at a paragraph or sentence boundary",)
        if truncated
        else ()
    )
    return Article(
        id=make_article_id(title, name, sha),
        title=title,
        text=text,
        input_path=label,
        source=raw.source,
        url=raw.url,
        published_at=normalize_published(raw.published_at),
        author=raw.author,
        language=_language(raw.language, f"{title}\n{text}"),
        content_sha256=sha,
        truncated=truncated,
        notes=notes,
    )


def _language(declared: str | None, text: str) -> SourceLanguage:
    code = (declared or "").lower().split("-")[0].split("_")[0]
    if code == "en":
        return "en"
    if code == "zh":
        return "zh"
    return detect_language(text)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# Re-exported for callers that parse a single mapping (the validate command, tests).
parse_mapping = article_from_mapping
