"""Turn a reply's text into a typed answer, or into findings that say why it is not one."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from pipeline.schema import ChineseAnswer, EnglishAnswer
from pipeline.validate.findings import Finding

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)

ANSWER_MODELS: dict[str, type[BaseModel]] = {"en": EnglishAnswer, "zh": ChineseAnswer}


def extract_json(content: str) -> Any:
    """The JSON object in a reply, tolerating a Markdown fence or prose around it."""
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start = text.find("{")
        if start == -1:
            raise
        value, _ = json.JSONDecoder().raw_decode(text, start)  # the first object; prose after it is ignored
        return value


def parse_answer(call: Literal["en", "zh"], content: str | None) -> tuple[BaseModel | None, list[Finding]]:
    """The typed answer of one call, or the schema findings that block it."""
    if not content or not content.strip():
        return None, [Finding("schema", "error", call, "", "the reply is empty")]
    try:
        data = extract_json(content)
    except json.JSONDecodeError as exc:
        return None, [Finding("schema", "error", call, "", f"the reply is not valid JSON ({exc.msg})")]
    try:
        return ANSWER_MODELS[call].model_validate(data), []
    except ValidationError as exc:
        return None, [_schema_finding(call, error) for error in exc.errors()]


def field_path(loc: Any) -> str:
    """("en", "tldr", 0) -> "en.tldr[0]", the style every finding uses."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _schema_finding(call: Literal["en", "zh"], error: Any) -> Finding:
    path = field_path(error["loc"])
    value = error.get("input")
    text = value if isinstance(value, str) else None
    check = "structure" if error["type"] in _STRUCTURE_TYPES else "schema"
    return Finding(check, "error", call, path, str(error["msg"]), text)


_STRUCTURE_TYPES = {
    "too_short", "too_long", "string_too_short", "string_too_long",
    "less_than_equal", "greater_than_equal",
}  # fmt: skip
