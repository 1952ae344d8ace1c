"""Alembic migrations: an old database upgrades in place, and head matches the ORM models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from governance.db import create_registry_engine, migrate
from governance.events import ModelCreated
from governance.models import Base
from governance.registry import Registry

NEW_TABLES = {"validation_results", "gate_decisions", "drift_reports", "compressed_forms", "language_model_evaluations"}


def test_database_at_0001_upgrades_in_place(registry_url: str) -> None:
    engine = create_registry_engine(registry_url)
    migrate(engine, "0001")
    assert NEW_TABLES.isdisjoint(inspect(engine).get_table_names())
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO registered_models (name, description, require_approval, created_at) "
                "VALUES ('legacy', 'from 0001', false, CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()

    with Registry.open(registry_url) as registry:
        (legacy,) = registry.list_models()
        assert (legacy.name, legacy.description, legacy.version_count) == ("legacy", "from 0001", 0)
    engine = create_registry_engine(registry_url)
    try:
        assert set(inspect(engine).get_table_names()) >= NEW_TABLES
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == "0012"
    finally:
        engine.dispose()


def test_migrated_schema_matches_models(registry: Registry, registry_url: str) -> None:
    engine = create_registry_engine(registry_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_reopening_is_a_no_op(registry: Registry, registry_url: str) -> None:
    registry.audit.append("m", ModelCreated(require_approval=False))
    with Registry.open(registry_url) as again:
        assert [e.seq for e in again.audit.events()] == [1] and again.audit.verify().ok
