"""Prompts: jinja2 templates rendered in a sandbox into the messages of each model call.

Message order puts what is shared first so that providers can cache the prefix:
1. system: the fixed instructions (identical for every call of every article);
2. user: the fenced article and its glossary (identical for both calls of one article);
3. user: the task of this call (``en`` or ``zh``); re-asks append after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.ingest.article import Article
from pipeline.schema import SCHEMA_VERSION, ChineseAnswer, EnglishAnswer, Lang
from pipeline.validate.findings import Finding

TEMPLATE_NAMES = ("system.j2", "article.j2", "task_en.j2", "task_zh.j2", "reask.j2")
ANSWER_MODELS: dict[str, type[BaseModel]] = {"en": EnglishAnswer, "zh": ChineseAnswer}
_LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "other": "another language"}

Message = dict[str, str]
# OpenAI's strict subset rejects string length keywords; the local validators enforce them.
_UNSUPPORTED_KEYWORDS = frozenset({"minLength", "maxLength"})


@cache
def _strict_schema(call: Lang) -> dict[str, Any]:
    from openai.lib._pydantic import to_strict_json_schema  # heavy import, needed only here

    schema: dict[str, Any] = _without_keys(to_strict_json_schema(ANSWER_MODELS[call]), _UNSUPPORTED_KEYWORDS)
    return schema


def _without_keys(node: Any, keys: frozenset[str]) -> Any:
    if isinstance(node, dict):
        return {k: _without_keys(v, keys) for k, v in node.items() if k not in keys}
    if isinstance(node, list):
        return [_without_keys(v, keys) for v in node]
    return node


def builtin_prompts_dir() -> Path:
    """The packaged templates in an installed wheel, else the repository's `prompts/`."""
    packaged = Path(__file__).parent / "_prompts"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "prompts"


@dataclass(frozen=True)
class Term:
    en: str
    zh: str
    aliases: tuple[str, ...] = ()
    kind: str = "term"

    def names(self) -> tuple[str, ...]:
        return (self.en, self.zh, *self.aliases)


@dataclass
class Glossary:
    terms: list[Term] = field(default_factory=list)

    @cached_property
    def by_name(self) -> dict[str, list[Term]]:
        """Terms by each of their names, lower-cased."""
        index: dict[str, list[Term]] = {}
        for term in self.terms:
            for name in term.names():
                if name:
                    index.setdefault(name.lower(), []).append(term)
        return index

    @cached_property
    def _keyed(self) -> tuple[dict[bytes, list[_LatinName]], dict[str, list[tuple[int, str]]]]:
        """Each name with its term's position: Latin names under their first word (lower-cased),
        other names under their first character. A name can occur only where its key does."""
        by_word: dict[bytes, list[_LatinName]] = {}
        by_char: dict[str, list[tuple[int, str]]] = {}
        for i, term in enumerate(self.terms):
            for name in term.names():
                if not name:
                    continue
                if name.isascii():
                    words = _ASCII_WORD.findall(name.lower())
                    one_word = _ASCII_WORD.fullmatch(name.lower()) is not None
                    entry = _LatinName(i, name, frozenset(word.encode() for word in words), one_word)
                    by_word.setdefault(words[0].encode() if words else b"", []).append(entry)
                else:
                    by_char.setdefault(name[0], []).append((i, name))
        return by_word, by_char

    def found_in(self, text: str) -> list[Term]:
        """The terms any of whose names occur in `text` (Latin names as whole words, any case)."""
        return [self.terms[i] for i in self.positions_in(text)]

    def positions_in(self, text: str) -> list[int]:
        """The positions in `terms` of the terms found in `text`, in order."""
        lowered = text.lower()
        by_word, by_char = self._keyed
        words = _ascii_words(lowered)
        # Where lower-casing kept every character in place and made no Latin letter or digit of
        # any other character (the Kelvin sign alone does), every word of a name found whole is a
        # word of the text: a one-word name is found by that alone, and a longer one is searched
        # for only when all its words are there.
        by_words = len(lowered) == len(text) and "\u212a" not in text
        found: set[int] = set()
        for word in words & by_word.keys():
            for name in by_word[word]:
                if name.term in found or (by_words and not name.words <= words):
                    continue
                if (by_words and name.one_word) or mentions(text, lowered, name.name):
                    found.add(name.term)
        if not text.isascii():  # other names are not ASCII: none occurs in ASCII text
            for char in set(text) & by_char.keys():
                found.update(i for i, name in by_char[char] if name in text)
        return sorted(found)


class _LatinName(NamedTuple):
    term: int  # the term's position in the glossary
    name: str
    words: frozenset[bytes]  # its runs of [a-z0-9], lower-cased
    one_word: bool  # it is one such run: it occurs whole wherever that is a word of the text


def _ascii_words(lowered: str) -> set[bytes]:
    """The runs of [a-z0-9] in `lowered`, and b"" (the key of names without any). In UTF-8 every
    other character is bytes outside that range, so a byte translation and a split find the runs
    (at a third of the cost of a regex, which makes a string of each)."""
    return {b"", *lowered.encode("utf-8", "surrogatepass").translate(_NOT_WORD_TO_SPACE).split()}


_NOT_WORD_TO_SPACE = bytes(c if chr(c) in "abcdefghijklmnopqrstuvwxyz0123456789" else 32 for c in range(256))
_ASCII_WORD = re.compile(r"[a-z0-9]+")


def _fields(record: Article | Term) -> dict[str, Any]:
    """A dataclass as a plain dict for the templates: `{{ article.title }}` reads the same, and the
    sandbox looks up dict items without its per-attribute safety checks (most of a render's time)."""
    names = _ARTICLE_FIELDS if isinstance(record, Article) else _TERM_FIELDS
    return {name: getattr(record, name) for name in names}


_ARTICLE_FIELDS = tuple(item.name for item in dataclasses.fields(Article))
_TERM_FIELDS = tuple(item.name for item in dataclasses.fields(Term))


def mentions(text: str, lowered: str, name: str) -> bool:
    """Whether `text` names `name`: Latin names whole-word and case-insensitively, others verbatim.

    `lowered` is ``text.lower()``. Latin names are found with str.find in it and their edges
    checked in `text`, much faster than a regex scan; when lower-casing changed the text's
    length (positions would not line up), the regex decides.
    """
    if not name:
        return False
    if not name.isascii():
        return name in text
    needle = name.lower()
    if len(lowered) != len(text):
        return needle in lowered and _whole_word(name).search(text) is not None
    start = lowered.find(needle)
    while start >= 0:
        end = start + len(needle)
        if not _latin_or_digit_at(text, start - 1) and not _latin_or_digit_at(text, end):
            return True
        start = lowered.find(needle, start + 1)
    return False


def _latin_or_digit_at(text: str, index: int) -> bool:
    return 0 <= index < len(text) and text[index].isascii() and text[index].isalnum()


@lru_cache(maxsize=4096)
def _whole_word(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", re.IGNORECASE)


def load_glossary(paths: list[Path]) -> Glossary:
    terms: dict[tuple[str, str], Term] = {}
    for path in paths:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"glossary {path} cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"glossary {path} is not UTF-8 text; save it as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"glossary {path} is not valid TOML: {exc}") from None
        entries = data.get("term", [])
        if not isinstance(entries, list):
            raise ConfigError(f"glossary {path}: 'term' must be a list of [[term]] tables")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not entry.get("en") or not entry.get("zh"):
                raise ConfigError(f"glossary {path}: term {i + 1} needs both 'en' and 'zh'")
            if not isinstance(entry.get("aliases", []), list):
                raise ConfigError(f"glossary {path}: the aliases of term {i + 1} must be a list")
            aliases = tuple(str(a) for a in entry.get("aliases", []))
            term = Term(str(entry["en"]), str(entry["zh"]), aliases, str(entry.get("kind", "term")))
            terms[(term.en, term.zh)] = term  # a later file overrides an identical entry
    return Glossary(list(terms.values()))


_DICT_ATTRIBUTES = frozenset(name for cls in dict.__mro__ for name in vars(cls))


class _PromptEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, reading the items of the plain dicts the templates are given (`article.title`)
    straight away instead of first failing to find an attribute of that name, an exception each
    time (half a render's time). A name that dicts have as an attribute (`items`) goes the
    sandbox's way, which prefers the attribute, as before."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


class PromptBook:
    """The templates, the glossary and the request settings of one run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        builtin = builtin_prompts_dir()
        dirs = [d for d in (settings.prompts_dir, builtin) if d is not None]
        for folder in dirs:
            if not folder.is_dir():
                raise ConfigError(f"prompts folder {folder} does not exist")
        self._dirs = dirs
        self.env = _PromptEnvironment(
            loader=ChoiceLoader([FileSystemLoader(str(d)) for d in dirs]),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            auto_reload=False,  # the prompt version is of the templates as read at the start of the run
        )
        for name in TEMPLATE_NAMES:  # each read and compiled now: a broken one fails the run before any call
            self._template(name)
        glossary_paths = [d / "glossary.toml" for d in reversed(dirs) if (d / "glossary.toml").is_file()]
        self.glossary = load_glossary(glossary_paths + list(settings.glossary_files))
        self._glossary_paths = glossary_paths + list(settings.glossary_files)
        # each term as the templates read it, made once: the sandbox lets no template change one
        self._term_fields = [_fields(term) for term in self.glossary.terms]
        self._article_cache: dict[str, str] = {}
        self._render_once()

    def _render_once(self) -> None:
        """Render every template once: one that fails only when rendered (an undefined name in the
        Chinese task, say) fails the run before any call, not every article with it."""
        probe = Article(id="probe", title="Probe", text="Probe text.", input_path="", content_sha256="0" * 64)
        for call in ("en", "zh"):
            self.messages(probe, call)
        self.reask([Finding("grounding", "error", "en", "en.title", "a probe finding", "1")], ["1"])
        self._article_cache.clear()

    def _template(self, name: str) -> Template:
        try:
            return self.env.get_template(name)
        except TemplateError as exc:
            raise ConfigError(f"prompt template {name}: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"prompt template {name} is not UTF-8 text; save it as UTF-8") from None

    def _render(self, name: str, **context: Any) -> str:
        try:
            return self._template(name).render(**context).strip()
        except TemplateError as exc:
            raise ConfigError(f"prompt template {name}: {exc}") from None

    def schema_for(self, call: Lang) -> dict[str, Any]:
        """The strict JSON schema sent for a call (string length caps are checked locally instead)."""
        return _strict_schema(call)

    def messages(self, article: Article, call: Lang) -> list[Message]:
        """The first request of one call: the shared system and article messages, then the task."""
        return [
            {"role": "system", "content": self._system},
            {"role": "user", "content": self._article_message(article)},
            {"role": "user", "content": self._task(call)},
        ]

    @cached_property
    def _system(self) -> str:
        return self._render("system.j2", site_name=self.settings.site_name)

    @property
    def system_prompt(self) -> str:
        """The rendered system message (the injection check looks for it in answers)."""
        return self._system

    @cache  # noqa: B019 -- one PromptBook per run; two calls
    def _task(self, call: Lang) -> str:
        inline_schema = None
        if self.settings.output_mode != "json_schema":
            inline_schema = json.dumps(self.schema_for(call), ensure_ascii=False)
        return self._render(f"task_{call}.j2", schema=inline_schema)

    def _article_message(self, article: Article) -> str:
        """The fenced article and its glossary terms; rendered once for both calls of an article."""
        cached = self._article_cache
        if article.content_sha256 not in cached:
            if len(cached) > 64:
                cached.clear()
            found = self.glossary.positions_in(f"{article.title}\n{article.text}")
            cached[article.content_sha256] = self._render(
                "article.j2", article=_fields(article), fence=article.content_sha256[:12],
                terms=[self._term_fields[i] for i in found], language_name=_LANGUAGE_NAMES[article.language],
            )  # fmt: skip
        return cached[article.content_sha256]

    def reask(self, findings: list[Finding], source_figures: list[str]) -> Message:
        content = self._render("reask.j2", findings=findings, source_figures=source_figures)
        return {"role": "user", "content": content}

    def request_body(self, call: Lang, messages: list[Message], max_tokens: int) -> dict[str, Any]:
        """The exact JSON body of a chat.completions request."""
        s = self.settings
        body: dict[str, Any] = {"model": s.model, "messages": messages}
        if s.temperature is not None:
            body["temperature"] = s.temperature
        body[s.token_limit_param] = max_tokens
        if s.output_mode == "json_schema":
            name = "english_answer" if call == "en" else "chinese_answer"
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": self.schema_for(call), "strict": True},
            }
        elif s.output_mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    @cached_property
    def version(self) -> str:
        """A short hash of everything that shapes a request except the article and the model name."""
        digest = hashlib.sha256()
        for name in TEMPLATE_NAMES:
            source, _, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
            digest.update(name.encode() + b"\0" + source.encode() + b"\0")
        for path in self._glossary_paths:
            digest.update(path.read_bytes())
        for call in ("en", "zh"):
            digest.update(json.dumps(self.schema_for(call), sort_keys=True).encode())
        s = self.settings
        params = [SCHEMA_VERSION, s.output_mode, s.temperature, s.max_output_tokens, s.token_limit_param,
                  s.site_name]  # fmt: skip
        digest.update(json.dumps(params).encode())
        return digest.hexdigest()[:12]
