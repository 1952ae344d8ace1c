"""PostgreSQL roles for the registry: who may read, who may train, who may approve.

Grants say which tables a role may touch; the triggers of migration 0008 add what grants cannot say: the
champion of a model that requires approval moves only for a `steward_approver` member who did not train the
version, every recorded actor is the writing login, and audit events are never updated, deleted or truncated.
People get logins that are members of these roles (README, "Who may do what").
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from core.errors import BadInputError


@dataclass(frozen=True)
class RoleGrant:
    name: str
    grants: str  # what the role may do, in words


READER = RoleGrant("steward_reader", "read every table")
TRAINER = RoleGrant("steward_trainer", "read; record runs, versions, metrics, drift, audit events; "
                                       "move aliases except a protected champion")
APPROVER = RoleGrant("steward_approver", "what a trainer may, and promote the champion of a model that "
                                         "requires approval when someone else trained it")
ROLES = (READER, TRAINER, APPROVER)
WRITERS = f"{TRAINER.name}, {APPROVER.name}"
EVERYONE = ", ".join(role.name for role in ROLES)

# Idempotent: CREATE ROLE only where missing, GRANT/REVOKE are no-ops when already so. Tables added by later
# migrations need `init-roles` again (the README says so); so does a registry restored from a dump.
_GRANTS = f"""
GRANT USAGE ON SCHEMA public TO {EVERYONE};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {EVERYONE};
GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {WRITERS};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {WRITERS};
GRANT DELETE ON served_predictions TO {WRITERS};
REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {WRITERS};
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM PUBLIC, {EVERYONE};
"""


def init_roles(conn: Connection) -> list[RoleGrant]:
    """Create the three roles where missing and (re)apply their grants on this registry database."""
    if conn.dialect.name != "postgresql":
        raise BadInputError("roles need a PostgreSQL registry: SQLite has no logins (it trusts STEWARD_ACTOR)")
    for role in ROLES:
        exists = conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": role.name})
        if not exists:
            conn.execute(text(f"CREATE ROLE {role.name} NOLOGIN"))
    database = conn.scalar(text("SELECT current_database()"))
    conn.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO {EVERYONE}'))
    conn.exec_driver_sql(_GRANTS)
    return list(ROLES)
