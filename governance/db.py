"""Engines, write serialisation and schema migrations for the registry database.

Every write transaction takes one database-wide write lock before it reads anything it depends on
(the audit chain head, the next version number): ``BEGIN IMMEDIATE`` on SQLite, a transaction-level
advisory lock on PostgreSQL. Writers in any number of processes therefore queue instead of forking
the audit chain or duplicating version numbers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from core.errors import BadInputError, RegistryUnavailableError
from governance.models import json_dumps
from governance.redact import mask_url, redact_text

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Arbitrary constant shared by every Steward process ("Steward" in ASCII).
PG_WRITE_LOCK_KEY = 0x53746577617264
# Execution option that marks an engine whose transactions only read (plain deferred BEGIN on SQLite).
_READ_ONLY = "steward_read_only"
_LOCK_STMT = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=PG_WRITE_LOCK_KEY)


def create_registry_engine(url: str | URL) -> Engine:
    """An engine for the registry; SQLite gets WAL, a 30 s busy timeout, foreign keys and BEGIN IMMEDIATE."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, json_serializer=json_dumps)
    _create_parent_dir(parsed)
    engine = create_engine(parsed, json_serializer=json_dumps)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def error_reason(exc: BaseException) -> str:
    """First line of the underlying driver error, with any URL password masked."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)


@contextmanager
def reachable(engine: Engine) -> Iterator[None]:
    """Turn a refused or lost database connection (server down, stopped mid-command) into a one-line
    `RegistryUnavailableError`; the transaction in flight rolls back, so nothing half-written stays."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        masked = engine.url.render_as_string(hide_password=True)
        raise RegistryUnavailableError(f"registry {masked} is unavailable: {error_reason(exc)}") from exc


def read_only(engine: Engine) -> Engine:
    """The same engine (same pool) for transactions that never write: SQLite readers then do not queue."""
    return engine.execution_options(**{_READ_ONLY: True})


def _create_parent_dir(url: URL) -> None:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from pysqlite so that _sqlite_on_begin decides how each transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "foreign_keys = ON", "synchronous = NORMAL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    read_only_tx = conn.get_execution_options().get(_READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only_tx else "BEGIN IMMEDIATE")


def lock_for_write(conn: Connection) -> None:
    """Take the registry-wide write lock for the current transaction (SQLite already has it from BEGIN)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_STMT)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` under the write lock, so concurrent openers migrate once."""
    with engine.begin() as conn:
        lock_for_write(conn)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def open_migrated(url: str, what: str) -> Engine:
    """An engine on `url` with the schema at the newest migration; a database that cannot be reached or
    migrated is a one-line `BadInputError` naming `what` ("registry", "prediction log") and the masked URL."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    engine = None
    try:
        engine = create_registry_engine(url)
        migrate(engine)
    except (SQLAlchemyError, CommandError, ImportError, OSError, ValueError) as exc:
        if engine is not None:
            engine.dispose()
        raise BadInputError(f"cannot open {what} {mask_url(url)}: {error_reason(exc)}") from None
    return engine


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``server_url``, dropped on exit (tests, benchmarks)."""
    name = f"steward_scratch_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
