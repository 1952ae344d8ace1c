"""Alembic migrations of the registry schema; applied by ``governance.db.migrate``."""
