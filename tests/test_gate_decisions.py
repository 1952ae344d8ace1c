"""A gate decision is stored as the gate computed it and read back whole; its audit event is built from the record;
migration 0009 gives decisions stored before it the floor they were made with."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from core.results import GateOutcome
from governance.db import MIGRATIONS_DIR, create_registry_engine, lock_for_write
from governance.registry import Registry
from tests.test_registry import register

OUTCOME = GateOutcome(
    passed=True, outcome="promoted", primary_metric="macro_f1", candidate_score=0.91, champion_score=None,
    reasons=["macro_f1 0.9100 meets the classical baseline (TF-IDF + LR) 0.8800", "no champion yet: the floor alone "
             "decides"], min_score=0.88, floor_source="classical baseline", min_improvement=0.0,
)


def _decide(registry: Registry, outcome: GateOutcome = OUTCOME, classical_baseline: float = 0.88) -> int:
    version = register(registry)
    registry.log_metrics(run_id=version.run_id, metrics={"classical_baseline_macro_f1": classical_baseline})
    registry.record_gate_decision(outcome, run_id=version.run_id, candidate_version_id=version.id,
                                  champion_version_id=None)
    return version.version


def test_a_decision_reads_back_as_the_gate_made_it(registry: Registry) -> None:
    number = _decide(registry)
    (stored,) = registry.gate_decisions("support-tickets")
    assert GateOutcome(**{name: getattr(stored, name) for name in GateOutcome.__dataclass_fields__}) == OUTCOME
    assert (stored.model_name, stored.candidate_version, stored.champion_version) == ("support-tickets", number, None)
    assert registry.get_version("support-tickets", number).gate_decision == stored
    (event,) = [e for e in registry.audit.events() if e.event_type == "gate_decision"]
    assert event.payload["reasons"] == "; ".join(OUTCOME.reasons) and event.payload["min_score"] == 0.88


def _migrate(url: str, action: str, revision: str) -> None:
    engine = create_registry_engine(url)
    try:
        with engine.begin() as conn:
            lock_for_write(conn)
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = conn
            getattr(command, action)(config, revision)
    finally:
        engine.dispose()


def test_migration_0009_infers_the_floor_of_older_decisions(registry_url: str) -> None:
    with Registry.open(registry_url) as registry:
        _decide(registry)
        _decide(registry, GateOutcome(**{**OUTCOME.__dict__, "min_score": 0.5, "floor_source": "min_score"}))
    _migrate(registry_url, "downgrade", "0008")
    _migrate(registry_url, "upgrade", "0009")
    engine = create_registry_engine(registry_url)
    try:
        with engine.connect() as conn:
            sources = conn.execute(text("SELECT floor_source FROM gate_decisions ORDER BY id")).scalars().all()
    finally:
        engine.dispose()
    assert sources == ["classical baseline", "min_score"]
