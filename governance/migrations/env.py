"""Alembic environment: runs on the connection ``governance.db.migrate`` passes in (no alembic.ini)."""

from alembic import context

from governance.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through governance.db.migrate(engine), which supplies the connection")

context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
