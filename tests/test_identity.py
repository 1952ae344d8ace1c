"""Who may do what, provably: approvals by the authenticated login, roles and rules the database enforces
(real PostgreSQL logins), and the append-only audit table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from governance.registry import Registry
from governance.roles import APPROVER, READER, TRAINER
from steward.cli import main
from tests.conftest import drop_logins, login
from tests.test_bad_input import one_error_line
from tests.test_registry import MODEL, register

PEOPLE = {"alice": (TRAINER.name,), "bob": (APPROVER.name,), "rita": (READER.name,)}


@pytest.fixture
def logins(pg_url: str) -> Iterator[dict[str, str]]:
    """A registry with its roles, and a login per person: alice trains, bob approves, rita reads."""
    with Registry.open(pg_url) as owner:
        owner.init_roles()
    urls = {name: login(pg_url, name, roles) for name, roles in PEOPLE.items()}
    yield urls
    drop_logins(pg_url, list(PEOPLE))


@pytest.fixture
def protected_version(logins: dict[str, str]) -> None:
    """Version 1 of a model that requires approval, trained by alice."""
    with Registry.open(logins["alice"]) as alice:
        register(alice, require_approval=True)


def raw(url: str, statement: str) -> None:
    """One statement past the registry API, as someone with that login and a SQL prompt could."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.usefixtures("protected_version")
def test_the_author_claiming_another_approver_is_refused(
    logins: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEWARD_ACTOR", "somebody-else")  # ignored: PostgreSQL knows who logged in
    promote = ["registry", "promote", f"{MODEL}:1", "--registry", logins["alice"]]
    assert main([*promote, "--approver", "somebody-else"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        "--approver 'somebody-else' is not who is acting: this registry knows you as 'alice' (database_login); "
        "an approval is recorded as the identity that makes it"
    )
    assert main(promote) == 1
    assert "requires approval by someone other than the run's author (alice)" in one_error_line(capsys.readouterr().err)
    with Registry.open(logins["bob"]) as bob:
        refused = bob.audit.events(MODEL)[-1]
        assert bob.alias_version(MODEL, "champion") is None
    assert (refused.event_type, refused.actor, refused.payload["actor_source"]) == (
        "promotion_refused", "alice", "database_login")


@pytest.mark.postgres
@pytest.mark.usefixtures("protected_version")
def test_an_approver_login_promotes(logins: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "promote", f"{MODEL}:1", "--approver", "bob", "--registry", logins["bob"]]) == 0
    assert "approved by bob" in capsys.readouterr().out
    with Registry.open(logins["rita"]) as rita:
        promoted = rita.audit.events(MODEL)[-1]
        assert rita.alias_version(MODEL, "champion").version == 1
        assert rita.audit.verify().ok
    assert (promoted.event_type, promoted.actor, promoted.payload["approver"], promoted.payload["author"]) == (
        "model_promoted", "bob", "bob", "alice")


@pytest.mark.postgres
@pytest.mark.usefixtures("protected_version")
def test_a_trainer_cannot_move_a_protected_champion_even_with_raw_sql(logins: dict[str, str]) -> None:
    model = f"(SELECT id FROM registered_models WHERE name = '{MODEL}')"
    with pytest.raises(DBAPIError, match="moves only for steward_approver members, not alice"):
        raw(logins["alice"], f"INSERT INTO aliases (model_id, alias, version_id) "
                             f"SELECT {model}, 'champion', id FROM model_versions")
    with pytest.raises(DBAPIError, match="only steward_approver members may lift require_approval"):
        raw(logins["alice"], "UPDATE registered_models SET require_approval = false")
    with pytest.raises(DBAPIError, match="permission denied"):
        raw(logins["rita"], "UPDATE registered_models SET require_approval = false")
    with Registry.open(logins["bob"]) as bob:
        assert bob.alias_version(MODEL, "champion") is None
        assert bob.requires_approval(MODEL)


@pytest.mark.postgres
def test_the_database_keeps_the_four_eyes_rule_for_approvers_too(logins: dict[str, str]) -> None:
    """bob may approve, but not his own version, not even with raw SQL."""
    with Registry.open(logins["bob"]) as bob:
        register(bob, require_approval=True)
        with pytest.raises(DBAPIError, match="bob trained this version and cannot approve it as champion"):
            raw(logins["bob"], "INSERT INTO aliases (model_id, alias, version_id) "
                               "SELECT model_id, 'champion', id FROM model_versions")


@pytest.mark.postgres
@pytest.mark.usefixtures("protected_version")
@pytest.mark.parametrize("person", list(PEOPLE))
@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET payload = '{}'", "DELETE FROM audit_events", "TRUNCATE audit_events",
])
def test_no_application_role_can_change_audit_events(logins: dict[str, str], person: str, statement: str) -> None:
    with pytest.raises(DBAPIError, match="permission denied"):
        raw(logins[person], statement)
    with Registry.open(logins["rita"]) as rita:
        assert rita.audit.verify().ok and rita.audit.verify().events_checked > 0


@pytest.mark.postgres
@pytest.mark.usefixtures("protected_version")
def test_a_login_cannot_record_someone_else_as_the_actor(logins: dict[str, str]) -> None:
    forged = ("INSERT INTO audit_events (seq, created_at, actor, event_type, subject, payload, prev_hash, hash) "
              "SELECT max(seq) + 1, 'now', 'bob', 'model_promoted', 'm', '{}', 'x', 'x' FROM audit_events")
    with pytest.raises(DBAPIError, match=r"audit_events\.actor must be the login that writes it"):
        raw(logins["alice"], forged)
    with pytest.raises(DBAPIError, match=r"runs\.author cannot be changed"):
        raw(logins["alice"], "UPDATE runs SET author = 'carol'")


@pytest.mark.postgres
def test_init_roles_is_idempotent(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        assert main(["registry", "init-roles", "--registry", pg_url]) == 0
    assert "steward_reader" in capsys.readouterr().out
    with Registry.open(pg_url) as owner:
        assert [e.event_type for e in owner.audit.events("registry")] == ["roles_initialised"] * 2


def test_init_roles_needs_postgresql(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "init-roles", "--registry", sqlite_url]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("roles need a PostgreSQL registry")
