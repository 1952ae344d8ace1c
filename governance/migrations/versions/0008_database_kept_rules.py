"""Rules the database keeps itself, whatever client writes: audit events are append-only (both backends); on
PostgreSQL every recorded actor, author and creator is the login that wrote the row, and the champion of a
model that requires approval moves only for a `steward_approver` member who did not train the version.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

APPEND_ONLY_MESSAGE = "audit events are append-only"

_SQLITE_TRIGGERS = {
    f"audit_events_no_{action.lower()}": f"""
        CREATE TRIGGER audit_events_no_{action.lower()} BEFORE {action} ON audit_events
        BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END
    """
    for action in ("UPDATE", "DELETE")
}

_PG_FUNCTIONS = f"""
CREATE FUNCTION steward_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY_MESSAGE} (% refused for %)', TG_OP, session_user
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- TG_ARGV[0] names a column that must hold the login inserting the row and never change afterwards.
CREATE FUNCTION steward_written_by_login() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    written text := to_jsonb(NEW) ->> TG_ARGV[0];
BEGIN
    IF TG_OP = 'INSERT' AND written IS DISTINCT FROM session_user::text THEN
        RAISE EXCEPTION '%.% must be the login that writes it (%), not %', TG_TABLE_NAME, TG_ARGV[0],
            session_user, written USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'UPDATE' AND written IS DISTINCT FROM to_jsonb(OLD) ->> TG_ARGV[0] THEN
        RAISE EXCEPTION '%.% cannot be changed', TG_TABLE_NAME, TG_ARGV[0] USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

-- Approvers are the members of steward_approver once `steward registry init-roles` made it; before that, anyone.
CREATE FUNCTION steward_is_approver() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'steward_approver')
        OR pg_has_role(session_user, 'steward_approver', 'MEMBER')
$$;

CREATE FUNCTION steward_guard_champion() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_after aliases := COALESCE(NEW, OLD);
    author text;
BEGIN
    IF row_after.alias <> 'champion'
        OR NOT (SELECT require_approval FROM registered_models WHERE id = row_after.model_id) THEN
        RETURN row_after;
    END IF;
    IF NOT steward_is_approver() THEN
        RAISE EXCEPTION 'the champion of a model that requires approval moves only for steward_approver members, not %',
            session_user USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT runs.author INTO author FROM model_versions JOIN runs ON runs.id = model_versions.run_id
            WHERE model_versions.id = NEW.version_id;
        IF author = session_user::text THEN
            RAISE EXCEPTION '% trained this version and cannot approve it as champion', session_user
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN row_after;
END $$;

CREATE FUNCTION steward_guard_approval_policy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.require_approval AND NOT NEW.require_approval AND NOT steward_is_approver() THEN
        RAISE EXCEPTION 'only steward_approver members may lift require_approval, not %', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
"""

_PG_TRIGGERS = """
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION steward_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION steward_append_only();
CREATE TRIGGER audit_events_actor_is_login BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION steward_written_by_login('actor');
CREATE TRIGGER runs_author_is_login BEFORE INSERT OR UPDATE ON runs
    FOR EACH ROW EXECUTE FUNCTION steward_written_by_login('author');
CREATE TRIGGER model_versions_creator_is_login BEFORE INSERT OR UPDATE ON model_versions
    FOR EACH ROW EXECUTE FUNCTION steward_written_by_login('created_by');
CREATE TRIGGER alias_history_actor_is_login BEFORE INSERT OR UPDATE ON alias_history
    FOR EACH ROW EXECUTE FUNCTION steward_written_by_login('actor');
CREATE TRIGGER aliases_guard_champion BEFORE INSERT OR UPDATE OR DELETE ON aliases
    FOR EACH ROW EXECUTE FUNCTION steward_guard_champion();
CREATE TRIGGER registered_models_guard_policy BEFORE UPDATE ON registered_models
    FOR EACH ROW EXECUTE FUNCTION steward_guard_approval_policy();
"""

_PG_DROP = """
DROP TRIGGER audit_events_append_only ON audit_events;
DROP TRIGGER audit_events_no_truncate ON audit_events;
DROP TRIGGER audit_events_actor_is_login ON audit_events;
DROP TRIGGER runs_author_is_login ON runs;
DROP TRIGGER model_versions_creator_is_login ON model_versions;
DROP TRIGGER alias_history_actor_is_login ON alias_history;
DROP TRIGGER aliases_guard_champion ON aliases;
DROP TRIGGER registered_models_guard_policy ON registered_models;
DROP FUNCTION steward_append_only(), steward_written_by_login(), steward_guard_champion(),
    steward_guard_approval_policy(), steward_is_approver();
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTIONS)
        op.execute(_PG_TRIGGERS)
    else:
        for statement in _SQLITE_TRIGGERS.values():
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_DROP)
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
