"""Shared fixtures: registry URLs (a fresh SQLite file and PostgreSQL database per test), the tiny
model, and one Prefect test server for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from governance.db import scratch_database
from governance.registry import Registry
from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from tests.tiny_model import tiny_model_dir  # noqa: F401 - shared fixture

# The same quiet, offline environment the command line sets for itself.
for _key, _value in QUIET_THIRD_PARTY_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


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
    if pg_admin_url is None:
        pytest.skip("no PostgreSQL server at STEWARD_TEST_PG_URL")
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
