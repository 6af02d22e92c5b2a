"""Signs that an answer followed instructions planted in the article (check ``injection``, errors).

* leaked instructions: the answer repeats sentences of the system prompt, or the article fence;
* links the source does not contain (an injected "visit https://..." the model obeyed);
* active markup (script, frames, embedded objects, images, links, forms, event handlers,
  ``javascript:``) the source does not contain.

Formatting tags (``<b>``, ``<em>``) and markup the source itself contains stay a ``markup`` warning:
everything is escaped when rendered.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pipeline.ingest.article import Article
from pipeline.schema import ModelPart
from pipeline.validate.findings import Finding
from pipeline.validate.rules import section_fields

_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'）)\]，。]+", re.IGNORECASE)
_ACTIVE = re.compile(
    r"<\s*/?\s*(?:script|iframe|frame|object|embed|img|svg|math|style|link|meta|base|form|input|button|a)\b[^>]*>?"
    r"|javascript:|vbscript:|data:text/html|\bon[a-z]+\s*=",
    re.IGNORECASE,
)
_FENCE = re.compile(r"\b(?:BEGIN|END) ARTICLE\b")


@lru_cache(maxsize=8)
def _instruction_sentences(system_prompt: str) -> tuple[str, ...]:
    """The distinctive sentences of the system prompt (eight words or more), normalised."""
    sentences = re.split(r"(?<=[.:;!?])\s+|\n+", system_prompt)
    return tuple(_normal(s) for s in sentences if len(s.split()) >= 8)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def check_injection(part: ModelPart, article: Article, system_prompt: str) -> list[Finding]:
    source = f"{article.title}\n{article.url or ''}\n{article.text}"
    source_lower = source.lower()
    instructions = _instruction_sentences(system_prompt)
    findings: list[Finding] = []
    for i, tag in enumerate(part.tags):
        for key, label in (("en", tag.en), ("zh", tag.zh)):
            problem = _problem(label, source, source_lower, instructions)
            if problem:
                findings.append(Finding("injection", "error", "en", f"tags[{i}].{key}", problem, label))
    for lang, section in (("en", part.en), ("zh", part.zh)):
        for path, text in section_fields(section):
            full_path = f"{lang}.{path}"
            problem = _problem(text, source, source_lower, instructions)
            if problem:
                findings.append(Finding("injection", "error", lang, full_path, problem, text))  # type: ignore[arg-type]
    return findings


def _problem(text: str, source: str, source_lower: str, instructions: tuple[str, ...]) -> str | None:
    normal = _normal(text)
    if _FENCE.search(text) or any(sentence in normal for sentence in instructions):
        return "the answer repeats the system instructions (an instruction in the article was followed)"
    for url in _URL.findall(text):
        if url.lower().rstrip(".,;") not in source_lower:
            return f"the answer links to {url}, which the source does not contain"
    for match in _ACTIVE.finditer(text):
        if match.group(0).lower() not in source_lower:
            return f"the answer contains markup ({match.group(0)[:40]}) that the source does not contain"
    return None
