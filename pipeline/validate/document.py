"""Validate a saved analysis (a full ``analysis.json`` or only the part the model writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.ingest import InputFailure, Limits, load_file
from pipeline.ingest.article import Article
from pipeline.ingest.formats import FormatError, read_json
from pipeline.prompts import Glossary
from pipeline.schema import ChineseAnswer, EnglishAnswer, ModelPart
from pipeline.validate.answer import parse_answer
from pipeline.validate.findings import Finding
from pipeline.validate.injection import check_injection
from pipeline.validate.rules import check_part
from pipeline.validate.source import check_against_source


def read_analysis_document(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; InputError when it cannot be read as one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(path), f"cannot be read ({_reason(exc)})") from None
    try:
        data = read_json(text)
    except FormatError as exc:
        raise InputError(str(path), str(exc)) from None
    if not isinstance(data, dict):
        raise InputError(str(path), "is not a JSON object with scores, tags, en and zh")
    return data


def load_source(spec: str, limits: Limits, content_sha256: str | None = None) -> Article:
    """The article at `spec`: a file, or `file.jsonl:N` for one line of a JSON Lines file.

    A file of several articles needs the line, unless the analysis names its article's hash.
    """
    path, line = Path(spec), None
    if not path.exists() and ":" in spec:
        head, _, tail = spec.rpartition(":")
        if tail.isdigit():
            path, line = Path(head), int(tail)
    if not path.is_file():
        raise InputError(spec, "no such file")
    loaded = list(load_file(path, limits))
    if line is not None:
        loaded = [item for item in loaded if item.input_path == f"{path}:{line}"]
    if not loaded:
        raise InputError(spec, "no article found (for a .jsonl file, name the line: FILE:N)")
    if len(loaded) > 1:
        matching: list[Article | InputFailure] = [
            a for a in loaded if isinstance(a, Article) and a.content_sha256 == content_sha256
        ]
        if not matching:
            raise InputError(spec, f"holds {len(loaded)} articles; name the one to check as {spec}:N")
        loaded = matching
    first = loaded[0]
    if not isinstance(first, Article):
        raise InputError(first.input_path, first.reason)
    return first


def validate_document(
    data: dict[str, Any], source: Article | None, glossary: Glossary, system_prompt: str = ""
) -> list[Finding]:
    """Every finding for a saved analysis; the source checks run only when a source is given."""
    en_part = {key: data[key] for key in ("scores", "tags", "en") if key in data}
    zh_part = {key: data[key] for key in ("zh",) if key in data}
    en, en_findings = parse_answer("en", json.dumps(en_part, ensure_ascii=False))
    zh, zh_findings = parse_answer("zh", json.dumps(zh_part, ensure_ascii=False))
    findings = en_findings + zh_findings
    if source is not None and _made_from_another_source(data, source):
        findings.append(Finding(
            "source", "warning", None, "article.content_sha256",
            f"{source.input_path} is not the article this analysis was made from (its content hash "
            "differs from article.content_sha256): the source checks below compare with another text",
        ))  # fmt: skip
    if isinstance(en, EnglishAnswer) and isinstance(zh, ChineseAnswer):
        part = ModelPart(scores=en.scores, tags=en.tags, en=en.en, zh=zh.zh)
        findings += check_part(part)
        if source is not None:
            findings += check_against_source(part, source, glossary)
            findings += check_injection(part, source, system_prompt)
    return findings


def _made_from_another_source(data: dict[str, Any], source: Article) -> bool:
    article = data.get("article")
    recorded = article.get("content_sha256") if isinstance(article, dict) else None
    return isinstance(recorded, str) and recorded != source.content_sha256


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
