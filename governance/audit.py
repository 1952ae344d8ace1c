"""Append-only, hash-chained audit log.

Event ``n`` stores ``prev_hash`` (the hash of event ``n-1``, 64 zeros for the first) and ``hash``, the
SHA-256 of the canonical JSON of its own body. Editing, deleting or reordering rows breaks either a hash
or a link, and ``verify`` names the first event where that happens. Appends hold the registry write lock
(``governance.db``) while reading the chain head, so concurrent writers queue and never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, or_, select

from governance.db import lock_for_write, reachable, read_only
from governance.events import EventPayload
from governance.identity import Identity, identity_of
from governance.models import AuditEvent
from governance.redact import redact

GENESIS_HASH = "0" * 64
_TABLE = AuditEvent.__table__
_COLUMNS = (
    _TABLE.c.seq,
    _TABLE.c.created_at,
    _TABLE.c.actor,
    _TABLE.c.event_type,
    _TABLE.c.subject,
    _TABLE.c.payload,
    _TABLE.c.prev_hash,
    _TABLE.c.hash,
)
_HEAD = select(_TABLE.c.seq, _TABLE.c.hash).order_by(_TABLE.c.seq.desc()).limit(1)
_INSERT = insert(_TABLE)
_VERIFY_BATCH = 20_000


def canonical_json(value: Any) -> str:
    """The one JSON spelling that is hashed: sorted keys, no spaces, UTF-8 kept, odd objects as str."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(
    seq: int, created_at: str, actor: str, event_type: str, subject: str, payload: str, prev_hash: str
) -> str:
    """SHA-256 of the canonical JSON of an event body; ``payload`` is the stored canonical JSON text."""
    body = {
        "seq": seq,
        "created_at": created_at,
        "actor": actor,
        "event_type": event_type,
        "subject": subject,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EventIn:
    """An event to append. Its actor is the registry's identity (``AuditLog.identity``), never the caller's word."""

    subject: str
    payload: EventPayload


@dataclass(frozen=True)
class AuditEventRecord:
    seq: int
    created_at: str
    actor: str
    event_type: str
    subject: str
    payload: Any
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    events_checked: int
    first_broken_seq: int | None
    reason: str | None


class AuditLog:
    """The audit trail of one registry database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._read_engine = read_only(engine)
        self._identity: Identity | None = None

    @property
    def identity(self) -> Identity:
        """Who this process acts as: the database login (asked once), or the declared identity (asked each
        time, so a changed ``STEWARD_ACTOR`` counts)."""
        if self._identity is None or not self._identity.authenticated:
            with reachable(self._engine):
                self._identity = identity_of(self._engine)
        return self._identity

    def append(self, subject: str, payload: EventPayload) -> AuditEventRecord:
        """Append one event in its own transaction."""
        with reachable(self._engine), self._engine.begin() as conn:
            return self.append_in(conn, subject, payload)

    def append_in(self, conn: Connection, subject: str, payload: EventPayload) -> AuditEventRecord:
        """Append inside the caller's write transaction on a registry engine (``db.create_registry_engine``).

        The event then commits or rolls back together with the caller's other writes.
        """
        (row,) = _chain(_locked_head(conn), [EventIn(subject, payload)], self.identity)
        conn.execute(_INSERT, row)
        return _record(row)

    def append_many(self, events: Iterable[EventIn], *, batch_size: int = 5_000) -> int:
        """Append events in transactions of ``batch_size`` (bulk loads); returns how many were appended."""
        total = 0
        identity = self.identity
        for batch in _batches(events, batch_size):
            with reachable(self._engine), self._engine.begin() as conn:
                conn.execute(_INSERT, _chain(_locked_head(conn), batch, identity))
            total += len(batch)
        return total

    def events(self, subject_prefix: str | None = None, limit: int | None = None) -> list[AuditEventRecord]:
        """Events in chain order. ``subject_prefix`` NAME keeps subjects NAME and NAME:*; ``limit`` keeps
        the newest ``limit`` events."""
        stmt = select(*_COLUMNS).order_by(_TABLE.c.seq.desc())
        if subject_prefix is not None:
            subject = _TABLE.c.subject
            stmt = stmt.where(or_(subject == subject_prefix, subject.startswith(subject_prefix + ":", autoescape=True)))
        if limit is not None:
            stmt = stmt.limit(limit)
        with reachable(self._engine), self._read_engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_record(row._asdict()) for row in reversed(rows)]

    def verify(self) -> ChainVerification:
        """Recompute every hash and link in seq order, streaming; stops at the first broken event."""
        checked = 0
        prev_hash = GENESIS_HASH
        with reachable(self._engine), self._read_engine.connect() as conn:
            result = conn.execution_options(yield_per=_VERIFY_BATCH).execute(select(*_COLUMNS).order_by(_TABLE.c.seq))
            for expected_seq, row in enumerate(result.tuples(), start=1):
                problem = _check(row, expected_seq, prev_hash)
                if problem is not None:
                    return ChainVerification(False, checked, *problem)
                prev_hash = row[7]
                checked += 1
        return ChainVerification(True, checked, None, None)


def _locked_head(conn: Connection) -> tuple[int, str]:
    """The last (seq, hash), read under the registry write lock.

    SQLite transactions on a registry engine start with BEGIN IMMEDIATE, so they hold the lock already. On
    PostgreSQL the advisory lock is taken first (again, if the caller has it: it is re-entrant), and the head
    is read by a later statement, whose snapshot sees every append committed before the lock was granted.
    """
    lock_for_write(conn)
    head = conn.execute(_HEAD).first()
    return (0, GENESIS_HASH) if head is None else (head[0], head[1])


def _chain(head: tuple[int, str], events: Iterable[EventIn], identity: Identity) -> list[dict[str, Any]]:
    """Rows for ``events`` by ``identity``, linked onto ``head`` (the last stored seq and hash). Each payload
    says how the actor was established (``actor_source``: a database login, or a declared name)."""
    seq, prev_hash = head
    rows = []
    for item in events:
        seq += 1
        row = {
            "seq": seq,
            "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "actor": identity.name,
            "event_type": str(item.payload.event_type),
            "subject": item.subject,
            "payload": canonical_json(redact({**item.payload.body(), "actor_source": identity.source})),
            "prev_hash": prev_hash,
        }
        prev_hash = row["hash"] = event_hash(**row)
        rows.append(row)
    return rows


def _check(row: tuple, expected_seq: int, prev_hash: str) -> tuple[int, str] | None:
    """(first broken seq, reason) for a stored row, or None when it links and hashes correctly."""
    seq, created_at, actor, event_type, subject, payload, stored_prev, stored_hash = row
    if seq != expected_seq:
        if seq > expected_seq:
            return expected_seq, f"event {expected_seq} is missing (event {seq} follows {expected_seq - 1})"
        return seq, f"event {seq} is out of sequence (expected {expected_seq})"
    if stored_prev != prev_hash:
        return seq, f"event {seq} does not link to event {seq - 1} (prev_hash mismatch)"
    if event_hash(seq, created_at, actor, event_type, subject, payload, stored_prev) != stored_hash:
        return seq, f"event {seq} was altered (its hash does not match its contents)"
    return None


def _record(row: Mapping[str, Any]) -> AuditEventRecord:
    return AuditEventRecord(**{**row, "payload": json.loads(row["payload"])})


def _batches(events: Iterable[EventIn], size: int) -> Iterator[list[EventIn]]:
    batch: list[EventIn] = []
    for item in events:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
