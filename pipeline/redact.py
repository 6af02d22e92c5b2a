"""Keep secrets off disk: every text that leaves the process can be passed through a Redactor."""

from __future__ import annotations

import json
import re
from typing import Any

_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}")
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")


# What is sent as the key to a local server that needs none (vLLM, Ollama, llama.cpp): not a secret.
NO_KEY = "unused"
# Model text is scrubbed of keys at least this long: a shorter "key" is a local server's
# placeholder ("test"), and taking it out of answers would garble ordinary words.
MIN_SCRUBBED_IN_ANSWERS = 8


class Redactor:
    """Replace known secrets (and anything that looks like a bearer token or an API key)."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets = [s for s in (secrets or []) if s and len(s) >= 4 and s != NO_KEY]
        self._in_answers = [s for s in self.secrets if len(s) >= MIN_SCRUBBED_IN_ANSWERS]

    def __call__(self, text: str) -> str:
        text = self._known(text)
        text = _BEARER.sub(r"\1[redacted]", text)
        return _KEYLIKE.sub("[redacted]", text)

    def _known(self, text: str, secrets: list[str] | None = None) -> str:
        """`text` without the known secrets (or those given), whole or masked."""
        for secret in self.secrets if secrets is None else secrets:
            text = text.replace(secret, "[redacted]")
            if len(secret) >= 12:  # providers echo keys masked, as in "sk-ab***...wxyz"
                text = re.sub(rf"\S*[*.]{{3,}}\S*{re.escape(secret[-4:])}", "[redacted]", text)
        return text

    def scrub_json(self, data: dict[str, Any]) -> dict[str, Any]:
        """A reply body with the known secrets taken out of its strings (a server that echoes the
        key must not get it into the journal, a recording or an article). Only the known secrets:
        the model's text may name things that merely look like keys. The same object when no
        secret's last characters occur in it at all, which one serialisation finds out."""
        text = json.dumps(data, ensure_ascii=False)
        if not any(secret[-4:] in text for secret in self._in_answers):
            return data
        scrubbed: dict[str, Any] = self._in_strings(data)
        return scrubbed

    def _in_strings(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._known(value, self._in_answers)
        if isinstance(value, dict):
            return {self._in_strings(k): self._in_strings(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._in_strings(item) for item in value]
        return value
