"""Every error newsdesk raises on purpose derives from :class:`NewsdeskError`.

    NewsdeskError
    ├── ConfigError          bad flag, config file or environment (exit 2)
    ├── LockedError          another run holds the output folder (exit 3)
    ├── OutputError          the output folder, or a file a command was told to write, cannot be written
    │                        (exit 1 during a run; 2 before it starts and for eval, diff, render)
    ├── InputError           one input cannot be read as an article (that input fails, the batch goes on)
    ├── ModelError           the model could not give a usable answer for one call
    │   ├── ModelUnavailable     transport failures that outlived the retries, 4xx from the endpoint
    │   ├── ReplyTruncated       the reply hit the token limit
    │   ├── ReplyRefused         the model refused
    │   ├── ReplyFiltered        a content filter stopped the reply
    │   ├── RecordingMissing     replay found no recording for a call (or cannot read it)
    │   ├── RecordingUnwritable  --record cannot save a call (the run stops; the answer is journaled)
    │   └── RecordingStale       --strict-replay found a recording of another request
    └── AnswerRejected       the answer still failed validation after every re-ask

Messages are written for the person running newsdesk: they say what went wrong and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.model.base import ModelReply
    from pipeline.validate.findings import Finding


def debugging() -> bool:
    """Whether NEWSDESK_DEBUG asks for tracebacks ("1", "true", "yes" or "on"; "0" does not)."""
    return os.environ.get("NEWSDESK_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


class NewsdeskError(Exception):
    """Base of every error newsdesk raises on purpose."""


class ConfigError(NewsdeskError):
    """A flag, the config file or the environment is wrong."""


class LockedError(NewsdeskError):
    """Another run is writing to the same output folder."""


class OutputError(NewsdeskError):
    """The output folder cannot be written (read-only, full, gone)."""


class InputError(NewsdeskError):
    """One input cannot be turned into an article."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ModelError(NewsdeskError):
    """The model gave no usable answer for one call."""


class ModelUnavailable(ModelError):
    """The endpoint could not be reached or refused the request.

    `fatal` means every other request would fail the same way (a bad key, an unknown model, an
    endpoint that is down or does not speak the API), so the run stops starting articles.
    """

    def __init__(
        self, message: str, *, fatal: bool = False, endpoint_errors: Mapping[str, int] | None = None
    ) -> None:
        super().__init__(message)
        self.fatal = fatal
        self.endpoint_errors = dict(endpoint_errors or {})  # every attempt's, by kind ("429", "503")


class ReplyTruncated(ModelError):
    """The reply was cut off by the token limit."""


class ReplyRefused(ModelError):
    """The model refused to answer."""


class ReplyFiltered(ModelError):
    """A content filter stopped the reply."""


class RecordingMissing(ModelError):
    """Replay mode has no recording for a call."""


class RecordingUnwritable(ModelError):
    """--record could not save a call (the answer itself is journaled: it is not paid for again).
    Every later recording would fail the same way, so the run stops starting articles. `reply` is
    the answer, whose cost the article's entry still counts."""

    fatal = True

    def __init__(self, message: str, reply: ModelReply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class RecordingStale(ModelError):
    """Strict replay found a recording of another request than the one sent today."""


class AnswerRejected(NewsdeskError):
    """The answer failed validation after every re-ask."""

    def __init__(self, message: str, findings: list[Finding]) -> None:
        super().__init__(message)
        self.findings = findings
