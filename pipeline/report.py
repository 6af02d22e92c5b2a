"""The run report: what happened to every input, and the totals."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from pipeline.schema import FindingOut, Usage

Status = Literal["ok", "failed", "skipped", "duplicate", "not_started", "out_of_shard"]
STATUSES: tuple[Status, ...] = ("ok", "failed", "skipped", "duplicate", "not_started")


class ArticleEntry(BaseModel):
    id: str | None
    source: str
    status: Status
    error: str | None = None
    outputs: list[str] = Field(default_factory=list)
    attempts: int = 0
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    stale: bool = False
    # what the endpoint answered instead of a reply, by kind ("429", "503", "timeout", "connection",
    # "malformed reply", and a refusal that is not retried, such as "401")
    endpoint_errors: dict[str, int] = Field(default_factory=dict)
    duplicate_of: str | None = None
    fatal: bool = Field(False, exclude=True)  # an endpoint failure that halts the run
    notes: list[str] = Field(default_factory=list)
    findings: list[FindingOut] = Field(default_factory=list)


class RunReport(BaseModel):
    run_id: str
    mode: Literal["live", "replay", "record", "batch"]
    model: str
    prompt_version: str
    started_at: str
    finished_at: str | None = None
    duration_s: float | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    budget_usd: float | None = None
    stale: int = 0
    endpoint_errors: dict[str, int] = Field(default_factory=dict)  # of every article, by kind
    rate_limit_pause_s: float = 0.0  # how long the endpoint's 429s paused every request of the run
    halted: str | None = None  # why the run stopped starting articles (an endpoint failure), if it did
    index_error: str | None = None  # why index.html and feed.xml were not rebuilt, if they were not
    flush_error: str | None = None  # why the articles' files could not be flushed to disk at the end
    articles: list[ArticleEntry] = Field(default_factory=list)

    def add(self, entry: ArticleEntry) -> None:
        """Count one entry into the totals (the entries themselves are spooled to disk by the runner)."""
        if not self.counts:
            self.counts = {status: 0 for status in STATUSES}
        self.counts[entry.status] = self.counts.get(entry.status, 0) + 1
        self.usage = self.usage + entry.usage
        if entry.cost_usd is not None:
            self.cost_usd = round((self.cost_usd or 0.0) + entry.cost_usd, 6)
        self.stale += int(entry.stale)
        for kind, count in entry.endpoint_errors.items():
            self.endpoint_errors[kind] = self.endpoint_errors.get(kind, 0) + count

    def tally(self) -> None:
        """Recount the totals from `articles` (for a report built in memory)."""
        self.counts, self.usage, self.cost_usd, self.stale, self.endpoint_errors = {}, Usage(), None, 0, {}
        for entry in self.articles:
            self.add(entry)
        if not self.counts:
            self.counts = {status: 0 for status in STATUSES}

    @property
    def exit_code(self) -> int:
        """0 when every article is ok, skipped or a duplicate, and the index was rebuilt and the
        articles' files flushed to disk; 1 otherwise."""
        failed = self.counts.get("failed", 0) or self.counts.get("not_started", 0)
        return 1 if failed or self.index_error or self.flush_error else 0
