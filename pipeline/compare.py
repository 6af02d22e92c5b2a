"""What changed between two runs: the engine of ``newsdesk diff OUT_A OUT_B``.

Articles are matched by id across ``OUT/articles/*/analysis.json``. For each article the diff holds
the score changes, the tags added and removed, and for each language and section the items added,
removed and changed: TL;DR bullets, analysis paragraphs and insights in order, key-data rows by
entity (and position among rows of the same entity), FAQ items by question. A changed long text
carries an inline diff, word by word in English and character by character in Chinese.

:func:`diff_runs` reads; everything else is pure. All text is untrusted model output: the HTML page
escapes every piece of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache
from pathlib import Path
from typing import Literal

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict

from pipeline.emit.output import read_analysis
from pipeline.emit.write import atomic_write_text
from pipeline.errors import ConfigError
from pipeline.schema import LANGS, Analysis, Lang, Section, Tag

SectionName = Literal["title", "summary", "tldr", "key_data", "analysis", "insights", "faq"]
SECTIONS: tuple[SectionName, ...] = ("title", "summary", "tldr", "key_data", "analysis", "insights", "faq")
ScoreName = Literal["hot", "quality", "impact"]
SCORES: tuple[ScoreName, ...] = ("hot", "quality", "impact")
ChangeKind = Literal["added", "removed", "changed"]
SegmentOp = Literal["equal", "insert", "delete"]

LONG_TEXT = 80  # characters: a changed text longer than this gets an inline diff
PAIR_SIMILARITY = 0.4  # how alike two items must be to count as one item changed (else removed + added)

SECTION_LABELS: dict[Lang, dict[SectionName, str]] = {
    "en": {"title": "Title", "summary": "Summary", "tldr": "TL;DR", "key_data": "Key Data",
           "analysis": "Deep Analysis", "insights": "Industry Insights", "faq": "FAQ"},
    "zh": {"title": "标题", "summary": "摘要", "tldr": "TL;DR", "key_data": "核心数据",
           "analysis": "深度解读", "insights": "行业启示", "faq": "FAQ"},
}  # fmt: skip
LANG_ATTR: dict[Lang, str] = {"en": "en", "zh": "zh-Hans"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Segment(_Frozen):
    """A run of an inline diff: text both sides share, or text only the new (insert) or old (delete) has."""

    op: SegmentOp
    text: str


class ItemChange(_Frozen):
    kind: ChangeKind
    label: str  # "#n": the position in A (removed) or in B (added, changed); "" for title and summary
    old: str | None = None
    new: str | None = None
    inline: list[Segment] | None = None  # for long changed texts


class SectionDiff(_Frozen):
    lang: Lang
    section: SectionName
    changes: list[ItemChange]


class ScoreChange(_Frozen):
    name: ScoreName
    old: int
    new: int


class ArticleRef(_Frozen):
    id: str
    title: str
    language: Literal["en", "zh", "other"]


class ArticleDiff(_Frozen):
    article: ArticleRef
    notes: list[str]
    scores: list[ScoreChange]
    tags_added: list[Tag]
    tags_removed: list[Tag]
    sections: list[SectionDiff]

    @property
    def is_empty(self) -> bool:
        return not (self.notes or self.scores or self.tags_added or self.tags_removed or self.sections)

    def section(self, lang: Lang, name: SectionName) -> SectionDiff | None:
        return next((s for s in self.sections if s.lang == lang and s.section == name), None)


class DiffCounts(_Frozen):
    compared: int
    changed: int
    unchanged: int
    only_in_a: int
    only_in_b: int
    added: int
    removed: int
    changed_items: int
    scores: int
    tags_added: int
    tags_removed: int


class RunDiff(_Frozen):
    a: str
    b: str
    prompt_versions_a: list[str]
    prompt_versions_b: list[str]
    articles: list[ArticleDiff]  # the articles in both runs that differ, by id
    unchanged: list[str]
    only_in_a: list[ArticleRef]
    only_in_b: list[ArticleRef]
    unreadable: list[str]  # analysis.json files that could not be read, in either run

    @property
    def is_empty(self) -> bool:
        return not (self.articles or self.only_in_a or self.only_in_b)

    def article(self, article_id: str) -> ArticleDiff | None:
        return next((d for d in self.articles if d.article.id == article_id), None)

    def counts(self) -> DiffCounts:
        changes = [c for d in self.articles for s in d.sections for c in s.changes]
        return DiffCounts(
            compared=len(self.articles) + len(self.unchanged), changed=len(self.articles),
            unchanged=len(self.unchanged), only_in_a=len(self.only_in_a), only_in_b=len(self.only_in_b),
            added=sum(1 for c in changes if c.kind == "added"),
            removed=sum(1 for c in changes if c.kind == "removed"),
            changed_items=sum(1 for c in changes if c.kind == "changed"),
            scores=sum(len(d.scores) for d in self.articles),
            tags_added=sum(len(d.tags_added) for d in self.articles),
            tags_removed=sum(len(d.tags_removed) for d in self.articles),
        )  # fmt: skip


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    analyses: dict[str, Analysis]
    unreadable: list[str]


def read_run(out: Path) -> _Run:
    """Every analysis of an output folder by article id, and the files that could not be read."""
    folder = out / "articles"
    if not folder.is_dir():
        raise ConfigError(f"{out} is not a newsdesk output folder (no articles/ in it)")
    analyses: dict[str, Analysis] = {}
    unreadable: list[str] = []
    for path in sorted(folder.glob("*/analysis.json")):
        analysis = read_analysis(path)
        if analysis is None:
            unreadable.append(str(path))
        else:
            analyses.setdefault(analysis.article.id, analysis)
    return _Run(analyses, unreadable)


def diff_runs(a: Path, b: Path) -> RunDiff:
    """What changed from the run in output folder `a` to the run in `b`."""
    run_a, run_b = read_run(a), read_run(b)
    return diff_analyses(run_a.analyses, run_b.analyses, a=str(a), b=str(b),
                         unreadable=run_a.unreadable + run_b.unreadable)  # fmt: skip


def diff_analyses(
    old: dict[str, Analysis], new: dict[str, Analysis], *, a: str, b: str, unreadable: Sequence[str] = ()
) -> RunDiff:
    common = sorted(set(old) & set(new))
    diffs = [diff_article(old[i], new[i]) for i in common]
    return RunDiff(
        a=a, b=b,
        prompt_versions_a=sorted({x.generation.prompt_version for x in old.values()}),
        prompt_versions_b=sorted({x.generation.prompt_version for x in new.values()}),
        articles=[d for d in diffs if not d.is_empty],
        unchanged=[d.article.id for d in diffs if d.is_empty],
        only_in_a=[_ref(old[i]) for i in sorted(set(old) - set(new))],
        only_in_b=[_ref(new[i]) for i in sorted(set(new) - set(old))],
        unreadable=list(unreadable),
    )  # fmt: skip


def _ref(analysis: Analysis) -> ArticleRef:
    meta = analysis.article
    return ArticleRef(id=meta.id, title=meta.title, language=meta.language)


# --- one article ------------------------------------------------------------------------------


def diff_article(old: Analysis, new: Analysis) -> ArticleDiff:
    notes = []
    if old.article.content_sha256 != new.article.content_sha256:
        notes.append("the source article differs between the runs")
    scores = [
        ScoreChange(name=name, old=getattr(old.scores, name), new=getattr(new.scores, name))
        for name in SCORES
        if getattr(old.scores, name) != getattr(new.scores, name)
    ]
    sections = [
        SectionDiff(lang=lang, section=name, changes=changes)
        for lang in LANGS
        for name in SECTIONS
        if (changes := diff_section(_section(old, lang), _section(new, lang), lang, name))
    ]
    return ArticleDiff(
        article=_ref(new), notes=notes, scores=scores,
        tags_added=[t for t in new.tags if t not in old.tags],
        tags_removed=[t for t in old.tags if t not in new.tags], sections=sections,
    )  # fmt: skip


def _section(analysis: Analysis, lang: Lang) -> Section:
    return analysis.en if lang == "en" else analysis.zh


@dataclass(frozen=True)
class Item:
    """One comparable item of a section: `key` finds it again in the other run, `text` is shown."""

    key: str
    label: str  # "#n": the 1-based position in its run ("" for the title and the summary)
    text: str


def section_items(section: Section, name: SectionName) -> list[Item]:
    if name in ("title", "summary"):
        text: str = getattr(section, name)
        return [Item(name, "", text)]
    if name == "key_data":
        seen: dict[str, int] = {}
        items = []
        for i, row in enumerate(section.key_data):
            entity = _norm(row.entity)
            seen[entity] = seen.get(entity, 0) + 1
            text = f"{row.entity} | {row.info} | {row.metric if row.metric is not None else '—'}"
            items.append(Item(f"{entity}#{seen[entity]}", f"#{i + 1}", text))
        return items
    if name == "faq":
        return [Item(_norm(f.question), f"#{i + 1}", f"Q: {f.question} A: {f.answer}")
                for i, f in enumerate(section.faq)]  # fmt: skip
    texts: list[str] = getattr(section, name)
    return [Item(_norm(text), f"#{i + 1}", text) for i, text in enumerate(texts)]


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def diff_section(old: Section, new: Section, lang: Lang, name: SectionName) -> list[ItemChange]:
    return diff_items(section_items(old, name), section_items(new, name), lang)


def diff_items(old: list[Item], new: list[Item], lang: Lang) -> list[ItemChange]:
    """Added, removed and changed items, in order (items are matched by key, then by likeness)."""
    matcher = SequenceMatcher(None, [i.key for i in old], [i.key for i in new], autojunk=False)
    changes: list[ItemChange] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            changes += [
                changed(o, n, lang) for o, n in zip(old[i1:i2], new[j1:j2], strict=True) if o.text != n.text
            ]
        else:
            changes += _pair_up(old[i1:i2], new[j1:j2], lang)
    return changes


def _pair_up(old: list[Item], new: list[Item], lang: Lang) -> list[ItemChange]:
    """A block replaced by another: as many items as both have changed in place when the counts agree,
    else each old item is paired with the next new item alike enough to be its new version."""
    if len(old) == len(new):
        return [changed(o, n, lang) for o, n in zip(old, new, strict=True)]
    changes: list[ItemChange] = []
    start = 0
    for item in old:
        match = _most_alike(item, new[start:], lang)
        if match is None:
            changes.append(ItemChange(kind="removed", label=item.label, old=item.text))
            continue
        changes += [ItemChange(kind="added", label=n.label, new=n.text) for n in new[start : start + match]]
        changes.append(changed(item, new[start + match], lang))
        start += match + 1
    changes += [ItemChange(kind="added", label=n.label, new=n.text) for n in new[start:]]
    return changes


def _most_alike(item: Item, candidates: list[Item], lang: Lang) -> int | None:
    scored = [(similarity(item.text, c.text, lang), -i) for i, c in enumerate(candidates)]
    best = max(scored, default=None)
    return -best[1] if best is not None and best[0] >= PAIR_SIMILARITY else None


def changed(old: Item, new: Item, lang: Lang) -> ItemChange:
    long = max(len(old.text), len(new.text)) > LONG_TEXT
    inline = inline_diff(old.text, new.text, lang) if long else None
    return ItemChange(kind="changed", label=new.label, old=old.text, new=new.text, inline=inline)


# --- inline diffs -----------------------------------------------------------------------------

_EN_TOKEN = re.compile(r"\w+(?:[.,'’]\w+)*|\s+|[^\w\s]")
_ZH_TOKEN = re.compile(r"[A-Za-z]+(?:['’.][A-Za-z]+)*|\d+(?:[.,]\d+)*|\s+|.", re.DOTALL)


def tokens(text: str, lang: Lang) -> list[str]:
    """Words (with numbers kept whole) in English; characters, Latin words and numbers in Chinese."""
    return (_EN_TOKEN if lang == "en" else _ZH_TOKEN).findall(text)


def similarity(a: str, b: str, lang: Lang) -> float:
    return SequenceMatcher(None, tokens(a, lang), tokens(b, lang), autojunk=False).ratio()


_Piece = tuple[bool, str, str]  # (both sides share it, old text, new text)


def inline_diff(old: str, new: str, lang: Lang) -> list[Segment]:
    """The segments that turn `old` into `new`; whitespace alone never splits a change in two."""
    a, b = tokens(old, lang), tokens(new, lang)
    runs: list[_Piece] = [
        (op == "equal", "".join(a[i1:i2]), "".join(b[j1:j2]))
        for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    ]
    return list(_segments(_absorb_gaps(runs)))


def _absorb_gaps(runs: list[_Piece]) -> list[_Piece]:
    """Whitespace shared between two changes becomes part of the change."""
    out = list(runs)
    for i in range(1, len(out) - 1):
        same, text, _ = out[i]
        if same and not text.strip() and not out[i - 1][0] and not out[i + 1][0]:
            out[i] = (False, text, text)
    return out


def _segments(runs: list[_Piece]) -> Iterator[Segment]:
    removed = added = ""
    for same, old, new in runs:
        if same:
            yield from _flush(removed, added)
            removed = added = ""
            yield Segment(op="equal", text=old)
        else:
            removed, added = removed + old, added + new
    yield from _flush(removed, added)


def _flush(removed: str, added: str) -> Iterator[Segment]:
    if removed:
        yield Segment(op="delete", text=removed)
    if added:
        yield Segment(op="insert", text=added)


# --- text -------------------------------------------------------------------------------------


def render_diff_text(diff: RunDiff) -> str:
    """The diff for a terminal or a pipe, without colour: `+ ` added, `- ` removed, `~ ` changed."""
    lines = summary_lines(diff)
    for article in diff.articles:
        lines += ["", *article_lines(article)]
    for title, refs, mark in (("Only in A", diff.only_in_a, "-"), ("Only in B", diff.only_in_b, "+")):
        if refs:
            lines += ["", f"{title} ({len(refs)}):", *(f"  {mark} {r.id}: {_flat(r.title)}" for r in refs)]
    if diff.unreadable:
        lines += ["", f"Unreadable ({len(diff.unreadable)}):", *(f"  {path}" for path in diff.unreadable)]
    return "\n".join(lines) + "\n"


def summary_lines(diff: RunDiff) -> list[str]:
    c = diff.counts()
    lines = [
        f"diff {diff.a} -> {diff.b}",
        f"prompt version: {_versions(diff.prompt_versions_a)} -> {_versions(diff.prompt_versions_b)}",
        f"{c.compared} article(s) in both runs: {c.changed} changed, {c.unchanged} unchanged; "
        f"{c.only_in_a} only in A, {c.only_in_b} only in B",
    ]
    if diff.is_empty:
        return [*lines, "No differences."]
    return [
        *lines,
        f"items: {c.added} added, {c.removed} removed, {c.changed_items} changed; "
        f"{c.scores} score change(s); tags: {c.tags_added} added, {c.tags_removed} removed",
    ]


def _versions(versions: list[str]) -> str:
    return ", ".join(versions) or "-"


def article_lines(article: ArticleDiff) -> list[str]:
    """One article's changes, grouped by language, then section."""
    lines = [f"== {article.article.id}: {_flat(article.article.title)}"]
    lines += [f"  note: {note}" for note in article.notes]
    if article.scores:
        lines += ["  scores", *(f"    ~ {s.name}: {s.old} -> {s.new}" for s in article.scores)]
    if article.tags_added or article.tags_removed:
        lines.append("  tags")
        lines += [f"    + {_flat(t.en)} / {_flat(t.zh)}" for t in article.tags_added]
        lines += [f"    - {_flat(t.en)} / {_flat(t.zh)}" for t in article.tags_removed]
    for lang in LANGS:
        sections = [s for s in article.sections if s.lang == lang]
        if sections:
            lines.append(f"  {lang}")
        for section in sections:
            lines.append(f"    {section.section}")
            for change in section.changes:
                lines += [f"      {line}" for line in change_lines(change)]
    return lines


def change_lines(change: ItemChange) -> list[str]:
    """`+ label: text`, `- label: text`, or `~ label` with the old and new text (or an inline diff)."""
    where = f"{change.label}: " if change.label else ""
    if change.kind == "added":
        return [f"+ {where}{_flat(change.new or '')}"]
    if change.kind == "removed":
        return [f"- {where}{_flat(change.old or '')}"]
    if change.inline is not None:
        return [f"~ {where}{inline_text(change.inline)}"]
    return [
        f"~ {change.label}".rstrip(),
        f"    - {_flat(change.old or '')}",
        f"    + {_flat(change.new or '')}",
    ]


def inline_text(segments: list[Segment]) -> str:
    """An inline diff in wdiff style: `[-removed-]{+added+}`."""
    marks = {"equal": "{}", "delete": "[-{}-]", "insert": "{{+{}+}}"}
    return _flat("".join(marks[s.op].format(s.text) for s in segments))


def _flat(text: str) -> str:
    return " ".join(text.split())


# --- HTML -------------------------------------------------------------------------------------


@cache
def _env() -> Environment:
    return Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_diff_html(diff: RunDiff) -> str:
    """A standalone page (inline CSS, no script); every piece of text is escaped."""
    template = _env().from_string(_PAGE)
    return template.render(
        diff=diff, counts=diff.counts(), langs=LANGS, lang_attr=LANG_ATTR, labels=SECTION_LABELS,
        marks=_MARKS, versions=_versions, article_lang=_article_lang, css=Markup(_CSS),
    )  # fmt: skip


_MARKS = {"added": "+", "removed": "-", "changed": "~"}


def _article_lang(article: ArticleRef) -> str:
    """The lang attribute of an article's title: "" (unknown) for a source in another language."""
    return {"en": "en", "zh": "zh-Hans"}.get(article.language, "")


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "PingFang SC", "Microsoft YaHei", sans-serif;
       margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1d1d1f; line-height: 1.55; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-bottom: .2rem; }
h3 { font-size: 1.05rem; margin: 1rem 0 .3rem; } h4 { font-size: .95rem; margin: .7rem 0 .2rem; color: #555; }
.summary { background: #f5f5f7; border-radius: 8px; padding: .6rem 1rem; }
.summary dl { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem; margin: 0; }
.summary dt { font-weight: 600; } .summary dd { margin: 0; }
.article { border-top: 1px solid #ddd; margin-top: 1.5rem; padding-top: .5rem; }
.id { color: #777; font-size: .85rem; margin-top: 0; font-family: ui-monospace, monospace; }
ul.changes { list-style: none; padding-left: 0; margin: 0; }
ul.changes li { padding: .25rem .5rem; margin: .2rem 0; border-left: 3px solid #ccc; }
li.added { border-color: #2da44e; background: #f0fff4; }
li.removed { border-color: #cf222e; background: #fff5f5; }
li.changed { border-color: #bf8700; background: #fffbea; }
.mark { font-family: ui-monospace, monospace; font-weight: 700; margin-right: .4rem; }
.label { font-weight: 600; margin-right: .4rem; }
ins { background: #ccffd8; text-decoration: none; } del { background: #ffd7d5; }
del.old, ins.new { display: block; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>newsdesk diff</title>
<style>{{ css }}</style>
</head>
<body>
<h1>What changed: <code>{{ diff.a }}</code> &rarr; <code>{{ diff.b }}</code></h1>
<section class="summary">
<dl>
<dt>Prompt version</dt>
<dd>{{ versions(diff.prompt_versions_a) }} &rarr; {{ versions(diff.prompt_versions_b) }}</dd>
<dt>Articles in both runs</dt>
<dd>{{ counts.compared }}: {{ counts.changed }} changed, {{ counts.unchanged }} unchanged</dd>
<dt>Only in A / only in B</dt><dd>{{ counts.only_in_a }} / {{ counts.only_in_b }}</dd>
<dt>Items</dt>
<dd>{{ counts.added }} added, {{ counts.removed }} removed, {{ counts.changed_items }} changed</dd>
<dt>Scores</dt><dd>{{ counts.scores }} changed</dd>
<dt>Tags</dt><dd>{{ counts.tags_added }} added, {{ counts.tags_removed }} removed</dd>
</dl>
{% if diff.is_empty %}<p class="verdict">No differences.</p>{% endif %}
</section>
{% macro tag(t) %}{{ t.en }} / <span lang="zh-Hans">{{ t.zh }}</span>{% endmacro %}
{% for a in diff.articles %}
<article class="article" id="{{ a.article.id }}">
<h2 lang="{{ article_lang(a.article) }}">{{ a.article.title }}</h2>
<p class="id">{{ a.article.id }}</p>
{% for note in a.notes %}<p class="note">{{ note }}</p>{% endfor %}
{% if a.scores %}
<h3>Scores</h3>
<ul class="changes scores">
{% for s in a.scores %}
<li class="changed"><span class="mark">~</span><span class="label">{{ s.name }}</span>
{{- "" }}<del>{{ s.old }}</del> &rarr; <ins>{{ s.new }}</ins></li>
{% endfor %}
</ul>
{% endif %}
{% if a.tags_added or a.tags_removed %}
<h3>Tags</h3>
<ul class="changes tags">
{% for t in a.tags_added %}
<li class="added"><span class="mark">+</span><ins>{{ tag(t) }}</ins></li>
{% endfor %}
{% for t in a.tags_removed %}
<li class="removed"><span class="mark">-</span><del>{{ tag(t) }}</del></li>
{% endfor %}
</ul>
{% endif %}
{% for lang in langs %}
{% set sections = a.sections | selectattr("lang", "equalto", lang) | list %}
{% if sections %}
<section class="lang lang-{{ lang }}" lang="{{ lang_attr[lang] }}">
<h3>{{ "English" if lang == "en" else "中文" }}</h3>
{% for s in sections %}
<h4>{{ labels[lang][s.section] }}</h4>
<ul class="changes">
{% for c in s.changes %}
<li class="{{ c.kind }}"><span class="mark">{{ marks[c.kind] }}</span><span class="label">{{ c.label }}</span>
{%- if c.kind == "added" %}<ins>{{ c.new }}</ins>
{%- elif c.kind == "removed" %}<del>{{ c.old }}</del>
{%- elif c.inline is not none %}<span class="inline">
{%- for g in c.inline %}
{%- if g.op == "insert" %}<ins>{{ g.text }}</ins>
{%- elif g.op == "delete" %}<del>{{ g.text }}</del>
{%- else %}{{ g.text }}{% endif %}
{%- endfor %}</span>
{%- else %}<del class="old">{{ c.old }}</del><ins class="new">{{ c.new }}</ins>
{%- endif %}</li>
{% endfor %}
</ul>
{% endfor %}
</section>
{% endif %}
{% endfor %}
</article>
{% endfor %}
{% for title, refs in (("Only in A", diff.only_in_a), ("Only in B", diff.only_in_b)) if refs %}
<section class="only">
<h2>{{ title }}</h2>
<ul>
{% for r in refs %}
<li><code>{{ r.id }}</code> <span lang="{{ article_lang(r) }}">{{ r.title }}</span></li>
{% endfor %}
</ul>
</section>
{% endfor %}
{% if diff.unreadable %}
<section class="unreadable">
<h2>Unreadable</h2>
<ul>{% for p in diff.unreadable %}<li>{{ p }}</li>{% endfor %}</ul>
</section>
{% endif %}
</body>
</html>
"""


def write_diff_html(diff: RunDiff, path: Path) -> None:
    atomic_write_text(path, render_diff_html(diff))
