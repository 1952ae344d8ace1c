"""Keep credentials out of everything the registry stores, returns or prints."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# scheme://user:password@host — the password part, wherever it appears inside a string.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+(?P<at>@)")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``; never raises, even for a malformed URL."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return redact_text(url)


def redact_text(text: str) -> str:
    """Mask the password of every URL embedded in free text (config values, error messages)."""
    return _URL_PASSWORD.sub(r"\g<head>***\g<at>", text)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with URL passwords masked in every string, keys included."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact(k): redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
