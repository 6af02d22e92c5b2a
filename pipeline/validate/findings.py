"""A finding: one thing a check found wrong (error) or worth a look (warning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    lang: Literal["en", "zh"] | None
    path: str
    message: str
    text: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def one_line(self) -> str:
        where = f"{self.path}: " if self.path else ""
        quoted = f' ("{_clip(self.text)}")' if self.text else ""
        return f"[{self.severity} {self.check}] {where}{self.message}{quoted}"

    def to_dict(self) -> dict[str, str | None]:
        return {"check": self.check, "severity": self.severity, "lang": self.lang,
                "path": self.path, "message": self.message, "text": self.text}  # fmt: skip


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.is_error]


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
