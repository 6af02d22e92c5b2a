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


def _repeats_instructions(lowered: str, instructions: tuple[str, ...]) -> bool:
    """Whether the lower-cased text contains one of the sentences, whatever its spacing."""
    words = lowered.split()
    present = set(words)
    # a sentence inside the text has its inner words as whole words of the text: most texts lack them
    candidates = [s for s in instructions if _key_word(s) in present]
    if not candidates:
        return False
    normal = " ".join(words)
    return any(sentence in normal for sentence in candidates)


@lru_cache(maxsize=256)
def _key_word(sentence: str) -> str:
    """The longest inner word of a sentence (the first and last may be cut in the text)."""
    return max(sentence.split()[1:-1], key=len)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def check_injection(part: ModelPart, article: Article, system_prompt: str) -> list[Finding]:
    source = f"{article.title}\n{article.url or ''}\n{article.text}"
    source_lower = source.lower()
    instructions = _instruction_sentences(system_prompt)
    if _problem(_all_text(part), source, source_lower, instructions) is None:
        return []  # the usual case, settled in one pass over the whole answer
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


def _all_text(part: ModelPart) -> str:
    """Every field of the answer on its own line. A problem in any one field is a problem here too:
    each pattern stops at a line break, and a sentence that spans two fields only costs the
    field-by-field pass."""
    texts = [text for tag in part.tags for text in (tag.en, tag.zh)]
    texts += [text for section in (part.en, part.zh) for _, text in section_fields(section)]
    return "\n".join(texts)


def _problem(text: str, source: str, source_lower: str, instructions: tuple[str, ...]) -> str | None:
    # Each pattern runs only where a plain substring every match of it has is present: a link has
    # "http" or "www.", markup a "<", an event handler a "=", a script URL "script:" and a data URL
    # "data:text/html".
    lowered = text.lower()
    if ("ARTICLE" in text and _FENCE.search(text)) or _repeats_instructions(lowered, instructions):
        return "the answer repeats the system instructions (an instruction in the article was followed)"
    if "http" in lowered or "www." in lowered:
        for url in _URL.findall(text):
            if url.lower().rstrip(".,;") not in source_lower:
                return f"the answer links to {url}, which the source does not contain"
    if "<" in text or "=" in text or "script:" in lowered or "data:text/html" in lowered:
        for match in _ACTIVE.finditer(text):
            if match.group(0).lower() not in source_lower:
                return f"the answer contains markup ({match.group(0)[:40]}) that the source does not contain"
    return None
