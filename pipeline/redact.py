"""Keep secrets off disk: every text that leaves the process can be passed through a Redactor."""

from __future__ import annotations

import re

_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}")
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")


class Redactor:
    """Replace known secrets (and anything that looks like a bearer token or an API key)."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets = [s for s in (secrets or []) if s and len(s) >= 4]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
            if len(secret) >= 12:  # providers echo keys masked, as in "sk-ab***...wxyz"
                text = re.sub(rf"\S*[*.]{{3,}}\S*{re.escape(secret[-4:])}", "[redacted]", text)
        text = _BEARER.sub(r"\1[redacted]", text)
        return _KEYLIKE.sub("[redacted]", text)
