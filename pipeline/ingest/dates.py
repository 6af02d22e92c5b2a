"""Publication dates as articles write them, turned into ISO 8601 where the form is a known one.

Headers and feeds write dates many ways: "2026-06-06T10:30:00Z", "June 6, 2026", "6 June 2026",
"Sat, 06 Jun 2026 10:30:00 GMT", "2026年6月6日 10:30", "2026/6/6". A known form becomes
"2026-06-06" (or "2026-06-06T10:30", with its offset when the text gives one), so that pages show
it, the index sorts by it and the feed carries it; anything else is kept as written (and shown as
written). A time with no zone stays without one: the article's local time is not known.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from email.utils import parsedate_to_datetime

_MONTHS = {
    name: number
    for number, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",),
         ("jun", "june"), ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"),
         ("oct", "october"), ("nov", "november"), ("dec", "december")],
        start=1,
    )
    for name in names
}  # fmt: skip

# an optional time after the date: " 10:30", "T10:30:00", ", 3:04 p.m.", "日10:30"
_TIME = (
    r"(?:(?:[ T,]+|(?<=[日号]))(?:at\s+)?(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?"
    r"\s*(?P<ampm>[ap]\.?m\.?)?)?"
)
_WEEKDAY = r"(?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+)?"
_MONTH = r"(?P<month_name>[a-z]{3,9})\.?"
_FORMS = [
    # 2026年6月6日 10:30, 2026年06月06日
    re.compile(rf"(?P<year>\d{{4}})\s*年\s*(?P<month>\d{{1,2}})\s*月\s*(?P<day>\d{{1,2}})\s*[日号]{_TIME}"),
    # 2026/6/6, 2026.06.06 10:30
    re.compile(rf"(?P<year>\d{{4}})(?P<sep>[/.])(?P<month>\d{{1,2}})(?P=sep)(?P<day>\d{{1,2}}){_TIME}"),
    # June 6, 2026; Saturday, June 6 2026 10:30 am
    re.compile(rf"{_WEEKDAY}{_MONTH}\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<year>\d{{4}}){_TIME}"),
    # 6 June 2026
    re.compile(rf"{_WEEKDAY}(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+{_MONTH},?\s+(?P<year>\d{{4}}){_TIME}"),
]


def normalize_published(raw: str | None) -> str | None:
    """`raw` as an ISO 8601 date or date-time when it is written in a known form, else as written
    (stripped); None when there is nothing."""
    text = " ".join((raw or "").split())
    if not text:
        return None
    if _is_iso(text):
        return text
    return _from_rfc2822(text) or _from_forms(text) or text


def _is_iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return bool(re.match(r"\d{4}-\d{2}-\d{2}", text))  # fromisoformat also takes "20260606"


def _from_forms(text: str) -> str | None:
    lowered = text.lower()
    for form in _FORMS:
        match = form.match(lowered)
        if match is not None:
            return _iso(match)
    return None


def _iso(match: re.Match[str]) -> str | None:
    parts = match.groupdict()
    month = _MONTHS.get(parts["month_name"] or "") if "month_name" in parts else int(parts["month"])
    if month is None:
        return None
    try:
        day = date(int(parts["year"]), month, int(parts["day"]))
    except ValueError:  # "February 30"
        return None
    if parts["hour"] is None:
        return day.isoformat()
    hour, minute = int(parts["hour"]), int(parts["minute"])
    if parts["ampm"]:
        if not 1 <= hour <= 12:
            return day.isoformat()
        hour = hour % 12 + (12 if parts["ampm"].startswith("p") else 0)
    try:
        moment = datetime(day.year, day.month, day.day, hour, minute, int(parts["second"] or 0))
    except ValueError:  # "25:61": the date alone is sure
        return day.isoformat()
    return moment.isoformat(timespec="seconds" if parts["second"] else "minutes")


def _from_rfc2822(text: str) -> str | None:
    """ "Sat, 06 Jun 2026 10:30:00 GMT", as RSS feeds and e-mail write dates: only with a zone
    (the forms above read the rest)."""
    if not re.search(r"\d{1,2}:\d{2}", text):
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return moment.isoformat(timespec="seconds") if moment.tzinfo is not None else None
