"""Who is acting, and how Steward knows it.

On PostgreSQL the actor is the database login (``session_user``): the server authenticated it, so an audit
event, a run's author and an approval name someone who proved who they are. SQLite cannot authenticate
anyone; there the actor is declared, by ``STEWARD_ACTOR`` or else the OS user, and every event says so.
"""

from __future__ import annotations

import functools
import getpass
import os
from dataclasses import dataclass
from typing import Literal, get_args

from sqlalchemy import Engine, text

# How an identity was established: a database login the server authenticated, or a name the process declared.
IdentitySource = Literal["database_login", "STEWARD_ACTOR", "os_user"]
IDENTITY_SOURCES: tuple[str, ...] = get_args(IdentitySource)


@dataclass(frozen=True)
class Identity:
    name: str
    source: IdentitySource

    @property
    def authenticated(self) -> bool:
        return self.source == "database_login"


def declared_identity() -> Identity:
    """``STEWARD_ACTOR`` if set, else the OS user: what a backend that cannot authenticate goes by."""
    declared = os.environ.get("STEWARD_ACTOR", "").strip()
    return Identity(declared, "STEWARD_ACTOR") if declared else Identity(_os_user(), "os_user")


def identity_of(engine: Engine) -> Identity:
    """The login of ``engine`` where the database authenticates it, the declared identity elsewhere."""
    if engine.dialect.name != "postgresql":
        return declared_identity()
    with engine.connect() as conn:
        return Identity(conn.scalar(text("SELECT session_user")), "database_login")


@functools.cache
def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"
