"""The article record every later stage works from, and the pure helpers that build it."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

SourceLanguage = Literal["en", "zh", "other"]

HAN_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han characters (CJK blocks), for a [...] class
HAN = re.compile(f"[{HAN_CLASS}]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z]")
_OTHER_LETTER = re.compile(r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u05ff\u0600-\u06ff\u0e00-\u0e7f]")
_WORD = re.compile(r"[A-Za-z']+")
_ENGLISH_STOPWORDS = frozenset(
    "the a an and of to in is are was were for on with that this by as at from it its be has have "  # noqa: SIM905
    "said will or not but which their they he she we after over more than".split()
)


@dataclass(frozen=True)
class Article:
    """One raw article, decoded and ready for the prompts."""

    id: str
    title: str
    text: str
    input_path: str
    source: str | None = None
    url: str | None = None
    published_at: str | None = None
    author: str | None = None
    language: SourceLanguage = "en"
    content_sha256: str = ""
    truncated: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        """How reports and messages name this article."""
        return self.input_path


def content_hash(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\n\n{text}".encode()).hexdigest()


def slugify(text: str, max_len: int = 60) -> str:
    """A lowercase ASCII slug; empty when the text has no ASCII letters or digits."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > max_len:
            break
        slug = candidate
    return slug


def make_article_id(title: str, fallback_name: str, sha256: str) -> str:
    """A stable, filesystem-safe id: a slug of the title (or of the file name) plus a short hash."""
    slug = slugify(title)
    if sum(1 for word in slug.split("-") if re.search("[a-z]", word)) < 2:
        slug = slugify(fallback_name) or slug or "article"
    return f"{slug}-{sha256[:10]}"


def detect_language(text: str) -> SourceLanguage:
    """`zh` for Chinese, `en` for English, `other` for anything else."""
    sample = text[:20000]
    han = len(HAN.findall(sample))
    kana = len(_KANA.findall(sample))
    hangul = len(_HANGUL.findall(sample))
    latin = len(_LATIN.findall(sample))
    other = len(_OTHER_LETTER.findall(sample))
    letters = han + kana + hangul + latin + other
    if letters == 0:
        return "other"
    if kana > 0.05 * letters or hangul > 0.2 * letters:
        return "other"
    if han >= 0.3 * letters or (han > 0 and han * 3 >= latin):
        return "zh"
    if latin >= 0.7 * letters and _looks_english(sample):
        return "en"
    return "other"


def _looks_english(text: str) -> bool:
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return False
    hits = sum(1 for w in words if w in _ENGLISH_STOPWORDS)
    return hits >= 0.12 * len(words)


def estimate_tokens(text: str) -> int:
    """A conservative token estimate: one per Han character, one per four other characters."""
    han = len(HAN.findall(text))
    return han + (len(text) - han + 3) // 4


def truncate_to_tokens(text: str, budget: int) -> tuple[str, bool]:
    """Cut `text` at a paragraph boundary so that it fits `budget` tokens."""
    if estimate_tokens(text) <= budget:
        return text, False
    kept: list[str] = []
    used = 0
    for paragraph in text.split("\n\n"):
        cost = estimate_tokens(paragraph) + 1
        if used + cost > budget:
            break
        kept.append(paragraph)
        used += cost
    if not kept:  # one giant first paragraph: keep the sentences that fit
        kept = [_cut_sentences(text.split("\n\n", 1)[0], budget)]
    return "\n\n".join(kept).strip(), True


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def _cut_sentences(paragraph: str, budget: int) -> str:
    kept = ""
    for sentence in _SENTENCE_END.split(paragraph):
        if estimate_tokens(kept + sentence) > budget:
            break
        kept += sentence
    if kept:
        return kept
    cut = len(paragraph)  # no sentence fits: the longest prefix that does
    while cut > 0 and estimate_tokens(paragraph[:cut]) > budget:
        cut = cut * 3 // 4
    return paragraph[:cut]
