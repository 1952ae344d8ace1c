"""Errors that the command line turns into one-line messages and exit codes."""


class StewardError(Exception):
    """Base class: a problem the user can fix; printed as one line, no traceback."""

    exit_code = 2


class BadInputError(StewardError):
    """Bad usage, a bad config, or unreadable data (exit 2)."""

    exit_code = 2


class CheckFailedError(StewardError):
    """A gate or check said no: validation failed, promotion refused, chain broken (exit 1)."""

    exit_code = 1
