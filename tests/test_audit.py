"""The hash-chained audit log: linking, tamper detection, bulk and concurrent appends."""

from __future__ import annotations

import getpass
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from governance.audit import GENESIS_HASH, EventIn, canonical_json, event_hash
from governance.events import StageStarted
from governance.registry import Registry
from tests.conftest import tamper

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=10,
)


def step(i: int, stage: str = "naïve ✓") -> StageStarted:
    """An event body to append (any typed payload serves)."""
    return StageStarted(run_id=str(i), stage=stage)


def fill(registry: Registry, count: int) -> None:
    for i in range(count):
        registry.audit.append(f"m:{i}", step(i))


def test_events_link_into_a_chain(registry: Registry) -> None:
    fill(registry, 3)
    events = registry.audit.events()
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.prev_hash for e in events] == [GENESIS_HASH, events[0].hash, events[1].hash]
    for event in events:
        body = canonical_json(event.payload)
        assert event.hash == event_hash(
            event.seq, event.created_at, event.actor, event.event_type, event.subject, body, event.prev_hash
        )
    source = registry.identity.source
    assert events[2].payload == {"run_id": "2", "stage": "naïve ✓", "actor_source": source}
    assert events[2].event_type == "stage_started"
    assert events[2].created_at.endswith("+00:00")
    assert registry.audit.verify().ok


def test_events_filter_by_model_name(registry: Registry) -> None:
    for subject in ("a", "a:1", "ab:1", "a_b:1", "axb:1", "b:a"):
        registry.audit.append(subject, step(0))
    assert [e.subject for e in registry.audit.events("a")] == ["a", "a:1"]
    assert [e.subject for e in registry.audit.events("a_b")] == ["a_b:1"]
    assert [e.seq for e in registry.audit.events(limit=2)] == [5, 6]


TAMPERING = {
    "edited payload": (["UPDATE audit_events SET payload = '{}' WHERE seq = 5"], 5, "altered"),
    "deleted row": (["DELETE FROM audit_events WHERE seq = 5"], 5, "missing"),
    "swapped rows": (
        [
            "UPDATE audit_events SET seq = -1 WHERE seq = 3",
            "UPDATE audit_events SET seq = 3 WHERE seq = 7",
            "UPDATE audit_events SET seq = 7 WHERE seq = -1",
        ],
        3,
        "does not link",
    ),
    "overwritten hash": (["UPDATE audit_events SET hash = prev_hash WHERE seq = 6"], 6, "altered"),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_verify_names_first_tampered_event(registry: Registry, registry_url: str, case: str) -> None:
    statements, broken_seq, reason = TAMPERING[case]
    fill(registry, 10)
    tamper(registry_url, *statements)
    result = registry.audit.verify()
    assert (result.ok, result.first_broken_seq, result.events_checked) == (False, broken_seq, broken_seq - 1)
    assert reason in result.reason and str(broken_seq) in result.reason


def test_rehashed_edit_breaks_the_next_link(registry: Registry, registry_url: str) -> None:
    fill(registry, 4)
    forged = registry.audit.events()[1]
    payload = canonical_json({"forged": True})
    new_hash = event_hash(
        2, forged.created_at, forged.actor, forged.event_type, forged.subject, payload, forged.prev_hash
    )
    forge = "UPDATE audit_events SET payload = :p, hash = :h WHERE seq = 2"
    tamper(registry_url, forge, params={"p": payload, "h": new_hash})
    result = registry.audit.verify()
    assert (result.ok, result.first_broken_seq) == (False, 3) and "does not link" in result.reason


def test_append_many_continues_the_chain(registry: Registry) -> None:
    fill(registry, 2)
    added = registry.audit.append_many((EventIn("m", step(i)) for i in range(20)), batch_size=7)
    events = registry.audit.events()
    assert added == 20 and [e.seq for e in events] == list(range(1, 23))
    assert registry.audit.verify() == registry.audit.verify().__class__(True, 22, None, None)


def test_empty_log_verifies(registry: Registry) -> None:
    result = registry.audit.verify()
    assert (result.ok, result.events_checked) == (True, 0)


def test_the_actor_is_the_login_where_the_database_authenticates(
    registry: Registry, registry_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the login, whatever STEWARD_ACTOR says. SQLite: STEWARD_ACTOR, else the OS user, and
    each event says which."""
    monkeypatch.setenv("STEWARD_ACTOR", "alice")
    registry.audit.append("m", step(1))
    monkeypatch.delenv("STEWARD_ACTOR")
    registry.audit.append("m", step(2))
    first, second = [(e.actor, e.payload["actor_source"]) for e in registry.audit.events()]
    if registry_url.startswith("postgresql"):
        assert first == second == ("postgres", "database_login")
    else:
        assert (first, second) == (("alice", "STEWARD_ACTOR"), (getpass.getuser(), "os_user"))


def test_the_database_refuses_to_change_audit_events(registry: Registry, registry_url: str) -> None:
    fill(registry, 3)
    engine = create_engine(registry_url)
    statements = ["UPDATE audit_events SET payload = '{}' WHERE seq = 2", "DELETE FROM audit_events WHERE seq = 3"]
    if registry_url.startswith("postgresql"):
        statements.append("TRUNCATE audit_events")
    try:
        for statement in statements:
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
    finally:
        engine.dispose()
    assert registry.audit.verify() == registry.audit.verify().__class__(True, 3, None, None)


@given(payload=st.dictionaries(st.text(), json_values, max_size=5))
def test_canonical_json_ignores_key_order(payload: dict) -> None:
    assert canonical_json(dict(reversed(list(payload.items())))) == canonical_json(payload)


@given(field=st.integers(min_value=0, max_value=6), change=st.text(min_size=1, max_size=5))
def test_hash_covers_every_field(field: int, change: str) -> None:
    body = [4, "2026-01-01T00:00:00.000000+00:00", "alice", "run_started", "m:1", "{}", GENESIS_HASH]
    tampered = list(body)
    tampered[field] = tampered[field] + 1 if field == 0 else tampered[field] + change
    assert event_hash(*tampered) != event_hash(*body)


def _append_worker(url: str, worker: int, count: int) -> None:
    with Registry.open(url) as reg:
        for i in range(count):
            reg.audit.append(f"worker-{worker}", step(i))


def test_concurrent_processes_never_fork_the_chain(registry_url: str) -> None:
    """8 processes open a fresh database at once (racing the migration too) and append 250 events each."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=8, mp_context=context) as pool:
        for future in [pool.submit(_append_worker, registry_url, w, 250) for w in range(8)]:
            future.result()
    with Registry.open(registry_url) as reg:
        events = reg.audit.events()
        assert [e.seq for e in events] == list(range(1, 2001))
        assert sorted(int(e.payload["run_id"]) for e in events if e.subject == "worker-3") == list(range(250))
        assert reg.audit.verify() == reg.audit.verify().__class__(True, 2000, None, None)
