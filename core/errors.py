"""Errors that the command line turns into one-line messages and exit codes, and user warnings."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# `warn` logs here too; a flow forwards this logger to its Prefect run's log (flows/context.py).
log = logging.getLogger("steward")
log.addHandler(logging.NullHandler())  # outside a flow, stderr alone says it (no second copy from logging)


class StewardError(Exception):
    """Base class: a problem the user can fix; printed as one line, no traceback."""

    exit_code = 2


class BadInputError(StewardError):
    """Bad usage, a bad config, or unreadable data (exit 2)."""

    exit_code = 2


class ConfigError(BadInputError):
    """The config file is unreadable or invalid. Carries what could still be read from it (its model
    name and registry.url), so the rejection can be audited in the registry the config points at."""

    def __init__(
        self, message: str, path: Path | None = None, model_name: str | None = None, registry_url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.model_name = model_name
        self.registry_url = registry_url


class RegistryUnavailableError(BadInputError):
    """The registry database cannot be reached (down, or lost mid-command); nothing half-written stays."""


class CheckFailedError(StewardError):
    """A gate or check said no: validation failed, promotion refused, chain broken (exit 1)."""

    exit_code = 1


class UnexpectedError(StewardError):
    """Anything no one foresaw (a bug, or input no check knows yet): still one line, never a traceback;
    exit 70 (EX_SOFTWARE) so that scripts never take it for bad input or a failed gate."""

    exit_code = 70


def one_line(message: str) -> str:
    """The message with any line breaks (from quoted user data, say) folded into spaces."""
    return " ".join(message.split()) or "unknown error"


def exception_line(exc: BaseException) -> str:
    """A Steward error's own message; anything else as `Type: first line of its message`."""
    message = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, StewardError):
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def warn(message: str) -> None:
    """One `steward: warning:` line on stderr, and a record on the `steward` logger."""
    sys.stderr.write(f"steward: warning: {one_line(message)}\n")
    sys.stderr.flush()
    log.warning(message)
