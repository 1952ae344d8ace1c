"""Shared fixtures: registry URLs (a fresh SQLite file and PostgreSQL database per test), the tiny
model, and one Prefect test server for the session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from governance.db import scratch_database
from governance.registry import Registry
from governance.roles import APPROVER, READER, TRAINER
from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from tests.tiny_model import tiny_llama_dir, tiny_model_dir  # noqa: F401 - shared fixtures

# The same quiet, offline environment the command line sets for itself.
for _key, _value in QUIET_THIRD_PARTY_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
# Under CI (`.ci/run` sets CI=true) a test never skips for a service or dataset that CI is meant to provide.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHARED_DATA = Path(os.environ.get("STEWARD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def require(available: object, what: str) -> None:
    """Go on when `available`; else skip on a developer's machine, with the reason, and fail under CI, where
    `.ci/run` installs or starts everything the suite needs: a green CI run has tested what it claims."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"CI must test this with {what}, which is missing (.ci/run installs or starts it)", pytrace=False)
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="session")
def pg_admin_url() -> str | None:
    """STEWARD_TEST_PG_URL when a server answers there, else None."""
    url = os.environ.get("STEWARD_TEST_PG_URL", DEFAULT_PG_URL)
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return url
    except OperationalError:
        return None
    finally:
        engine.dispose()


@pytest.fixture
def pg_url(pg_admin_url: str | None) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    require(pg_admin_url, "a PostgreSQL server at STEWARD_TEST_PG_URL")
    with scratch_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry' / 'registry.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    with Registry.open(registry_url) as opened:
        yield opened


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server and database for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness: None) -> str:
    """The session Prefect server's API URL, for `steward` subprocesses (so none starts its own server)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


@pytest.fixture
def steward_env(prefect_api_url: str) -> dict[str, str]:
    """The environment of a `steward` subprocess: quiet, offline, one torch thread, the session's Prefect."""
    env = {**os.environ, **QUIET_THIRD_PARTY_DEFAULTS, "PREFECT_API_URL": prefect_api_url}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("STEWARD_REGISTRY_URL", None)
    return env


Params = Mapping[str, object] | Sequence[Mapping[str, object]] | None


def tamper(url: str, *statements: str, params: Params = None) -> None:
    """Raw SQL in one transaction, past the registry API and past the audit table's append-only triggers,
    as someone who owns the database could: SQLite loses the triggers, PostgreSQL's superuser disables them.
    ``params`` binds every statement (a list: once per row)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            else:
                triggers = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'"
                for name in conn.scalars(text(triggers)).all():
                    conn.execute(text(f'DROP TRIGGER "{name}"'))
            for statement in statements:
                conn.execute(text(statement), params)
            if conn.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
    finally:
        engine.dispose()


ActAs = Callable[..., AbstractContextManager[Registry]]


@pytest.fixture
def act_as(registry_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ActAs]:
    """``with act_as("alice") as registry:`` a registry handle acting as alice: on PostgreSQL a real login
    (created here, a member of ``roles``: by default trainer and approver), on SQLite the declared
    STEWARD_ACTOR. Logins made here are dropped after the test."""
    logins: list[str] = []
    if make_url(registry_url).get_backend_name() == "postgresql":
        with Registry.open(registry_url) as owner:
            owner.init_roles()

    @contextmanager
    def acting(name: str, roles: tuple[str, ...] = (TRAINER.name, APPROVER.name)) -> Iterator[Registry]:
        url = registry_url
        if make_url(registry_url).get_backend_name() == "postgresql":
            url = login(registry_url, name, roles)
            logins.append(name)
        with monkeypatch.context() as env:
            env.setenv("STEWARD_ACTOR", name)
            with Registry.open(url) as registry:
                yield registry

    yield acting
    drop_logins(registry_url, logins)


def login(url: str, name: str, roles: tuple[str, ...]) -> str:
    """A LOGIN role ``name`` (trust authentication here) in exactly ``roles``; its URL on ``url``'s database."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if not conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": name}):
                conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
            for role in (READER, TRAINER, APPROVER):
                verb = "GRANT {} TO" if role.name in roles else "REVOKE {} FROM"
                conn.execute(text(f'{verb.format(role.name)} "{name}"'))
    finally:
        engine.dispose()
    return make_url(url).set(username=name).render_as_string(hide_password=False)


def drop_logins(url: str, names: list[str]) -> None:
    if not names:
        return
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for name in dict.fromkeys(names):
                conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
    finally:
        engine.dispose()
