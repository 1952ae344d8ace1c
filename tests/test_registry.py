"""Registry operations, lineage, aliases, approval and credential masking, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.errors import BadInputError, CheckFailedError
from core.results import DriftResult, DriftSignal, GateOutcome
from governance.records import ModelVersionRecord, RunRecord, ValidationResultIn
from governance.registry import Registry, mask_url
from tests.conftest import ActAs

MODEL = "support-tickets"
SHA_A = "a" * 64
SHA_B = "b" * 64
SECRET_URL = "postgresql+psycopg2://postgres:s3cret@127.0.0.1:5432/x"


def start_run(reg: Registry, model: str = MODEL, **kwargs: object) -> RunRecord:
    return reg.start_run(
        kind="retrain",
        model_name=model,
        config={"name": model, "seed": 13},
        seed=13,
        code_version="abc123",
        package_versions={"torch": "2.13.0"},
        **kwargs,
    )


def register(reg: Registry, model: str = MODEL, **kwargs: object) -> ModelVersionRecord:
    run = start_run(reg, model)
    return reg.register_version(
        model_name=model,
        run_id=run.id,
        artifact_path="/nonexistent/artifacts",
        files={"model.safetensors": SHA_A},
        base_model="minilm",
        **kwargs,
    )


def event_types(reg: Registry, subject: str | None = None) -> list[str]:
    return [e.event_type for e in reg.audit.events(subject)]


def rows(url: str, sql: str) -> list[tuple]:
    """Raw rows, read past the registry API."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def scalar(url: str, sql: str) -> object:
    return rows(url, sql)[0][0]


def test_lineage_datasets_files_and_metrics(registry: Registry, registry_url: str, tmp_path: Path) -> None:
    train = registry.record_dataset(
        role="train", source="data/train.csv", fingerprint=SHA_A, rows=120, schema={"text": "str"}
    )
    test = registry.record_dataset(role="test", source="data/test.csv", fingerprint=SHA_A, rows=40, schema={})
    again = registry.record_dataset(role="train", source="elsewhere.csv", fingerprint=SHA_A, rows=1, schema={})
    assert again == train and test.id != train.id
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    run = start_run(registry)
    v1 = registry.register_version(
        model_name=MODEL,
        run_id=run.id,
        artifact_path=str(tmp_path),
        files={"model.safetensors": SHA_A, "tokenizer.json": SHA_B},
        base_model="minilm",
        datasets={"train": train.id, "test": test.id},
    )
    registry.log_metrics(run_id=run.id, metrics={"macro_f1": 0.5, "accuracy": 0.7}, version_id=v1.id)
    registry.log_metrics(run_id=run.id, metrics={"macro_f1": 0.8}, version_id=v1.id, dataset_id=test.id)
    v2 = register(registry, parent_version=1)

    detail = registry.get_version(MODEL, 1)
    assert (v1.version, v2.version, v2.parent_version, v1.parent_version) == (1, 2, 1, None)
    assert [(f.relative_path, f.sha256, f.size_bytes) for f in detail.files] == [
        ("model.safetensors", SHA_A, 5),
        ("tokenizer.json", SHA_B, None),
    ]
    assert {role: d.id for role, d in detail.datasets.items()} == {"train": train.id, "test": test.id}
    assert detail.metrics == {"macro_f1": 0.8, "accuracy": 0.7}
    assert detail.run == run and detail.version == v1 and detail.gate_decision is None
    assert v1.created_at.tzinfo is not None and run.started_at.utcoffset().total_seconds() == 0
    assert [v.version for v in registry.list_versions(MODEL)] == [2, 1]
    assert [v.version for v in registry.list_versions(MODEL, limit=1)] == [2]
    (summary,) = registry.list_models()
    assert (summary.name, summary.latest_version, summary.version_count, summary.aliases) == (MODEL, 2, 2, {})
    assert scalar(registry_url, "SELECT count(*) FROM artifact_files") == 3
    assert scalar(registry_url, "SELECT count(*) FROM version_datasets") == 2
    assert event_types(registry, f"{MODEL}:1") == ["version_registered", "metrics_logged", "metrics_logged"]
    assert registry.audit.verify().ok


def test_unknown_names_are_bad_input(registry: Registry) -> None:
    register(registry)
    with pytest.raises(BadInputError, match=r"^no model named 'nope'$"):
        registry.get_version("nope", 1)
    with pytest.raises(BadInputError, match=rf"^model '{MODEL}' has no version 7$"):
        registry.get_version(MODEL, 7)
    with pytest.raises(BadInputError, match="no run 'missing'"):
        registry.get_run("missing")
    with pytest.raises(BadInputError, match="sha256"):
        registry.register_version(
            model_name=MODEL, run_id="r", artifact_path="/a", files={"w": "xyz"}, base_model="minilm"
        )


def test_failed_write_leaves_no_row_and_no_event(registry: Registry, registry_url: str) -> None:
    run = start_run(registry)
    events_before = len(registry.audit.events())
    with pytest.raises(BadInputError, match="no dataset with id 999"):
        registry.register_version(
            model_name="fresh",
            run_id=run.id,
            artifact_path="/a",
            files={"w": SHA_A},
            base_model="minilm",
            datasets={"train": 999},
        )
    assert len(registry.audit.events()) == events_before
    assert scalar(registry_url, "SELECT count(*) FROM registered_models") == 0
    assert scalar(registry_url, "SELECT count(*) FROM model_versions") == 0


def test_run_lifecycle_and_stale_runs(registry: Registry) -> None:
    done = start_run(registry, flow_run_id="flow-1")
    assert (done.status, done.flow_run_id, done.finished_at) == ("running", "flow-1", None)
    finished = registry.finish_run(done.id, status="completed")
    assert finished.status == "completed" and finished.finished_at is not None
    with pytest.raises(BadInputError, match="already completed"):
        registry.finish_run(done.id, status="failed")
    with pytest.raises(BadInputError, match="must be one of"):
        registry.finish_run(done.id, status="done")
    hung = start_run(registry)
    assert registry.fail_stale_runs(3600) == []
    assert registry.fail_stale_runs(0) == [hung.id]
    assert (registry.get_run(hung.id).status, registry.get_run(hung.id).error) == (
        "failed",
        "stale: process died",
    )
    assert event_types(registry, MODEL) == ["run_started", "run_completed", "run_started", "run_failed"]


def test_promote_and_roll_back_twice(registry: Registry, act_as: ActAs) -> None:
    for _ in range(3):
        register(registry)
    with act_as("bob") as bob:
        for version in (1, 2, 3):
            move = bob.promote(MODEL, version, reason=f"v{version} wins")
    assert (move.version, move.previous_version, move.action, move.actor) == (3, 2, "promote", "bob")
    with act_as("carol") as carol:
        first = carol.rollback(MODEL, reason="regression")
        second = carol.rollback(MODEL)
    assert [(m.previous_version, m.version, m.action) for m in (first, second)] == [
        (3, 2, "rollback"),
        (2, 1, "rollback"),
    ]
    assert registry.alias_version(MODEL, "champion").version == 1
    with pytest.raises(CheckFailedError, match="no champion before version 1"):
        registry.rollback(MODEL)
    with act_as("dave") as dave:
        dave.set_alias(MODEL, 2, "staging")
    assert registry.list_models()[0].aliases == {"champion": 1, "staging": 2}
    assert registry.get_version(MODEL, 2).aliases == ["staging"]
    assert registry.alias_version(MODEL, "absent") is None
    alias_events = {"model_promoted", "champion_rolled_back", "alias_set"}
    moves = [e for e in registry.audit.events(MODEL) if e.event_type in alias_events]
    assert [(e.event_type, e.subject, e.actor) for e in moves] == [
        ("model_promoted", f"{MODEL}:1", "bob"),
        ("model_promoted", f"{MODEL}:2", "bob"),
        ("model_promoted", f"{MODEL}:3", "bob"),
        ("champion_rolled_back", f"{MODEL}:2", "carol"),
        ("champion_rolled_back", f"{MODEL}:1", "carol"),
        ("alias_set", f"{MODEL}:2", "dave"),
    ]


def test_rollback_without_champion_fails(registry: Registry) -> None:
    register(registry)
    with pytest.raises(CheckFailedError, match="no champion to roll back"):
        registry.rollback(MODEL)


def test_author_cannot_approve_own_version(act_as: ActAs) -> None:
    with act_as("alice") as alice:
        register(alice, require_approval=True)
        assert alice.get_version(MODEL, 1).run.author == "alice"
        with pytest.raises(CheckFailedError, match="refused"):
            alice.promote(MODEL, 1)
        with pytest.raises(BadInputError, match="'bob' is not who is acting: this registry knows you as 'alice'"):
            alice.promote(MODEL, 1, approver="bob")
        assert alice.alias_version(MODEL, "champion") is None
        refused = alice.audit.events(MODEL)[-1]
    assert (refused.event_type, refused.actor, refused.payload["author"]) == ("promotion_refused", "alice", "alice")
    with act_as("bob") as bob:
        move = bob.promote(MODEL, 1, approver="bob")
        promoted = bob.audit.events(MODEL)[-1]
        assert bob.audit.verify().ok
    assert (move.version, move.actor) == (1, "bob")
    assert (promoted.event_type, promoted.actor, promoted.payload["approver"]) == ("model_promoted", "bob", "bob")


def test_approval_cannot_be_bypassed_with_set_alias(registry: Registry) -> None:
    register(registry, require_approval=True)
    with pytest.raises(CheckFailedError, match="requires approval"):
        registry.set_alias(MODEL, 1, "champion")
    assert registry.set_alias(MODEL, 1, "challenger").alias == "challenger"
    assert registry.alias_version(MODEL, "champion") is None


def test_author_may_promote_when_approval_not_required(act_as: ActAs) -> None:
    with act_as("alice") as alice:
        register(alice)
        assert alice.promote(MODEL, 1).version == 1


def test_a_registration_never_lifts_the_approval_rule(registry: Registry) -> None:
    register(registry, require_approval=True)
    register(registry, require_approval=False)
    assert registry.requires_approval(MODEL)
    assert registry.audit.events(MODEL)[-1].payload["require_approval"] is True


def test_validation_gate_and_drift_records(registry: Registry) -> None:
    champion, candidate = register(registry), register(registry)
    run = start_run(registry)
    registry.record_validation(
        run_id=run.id,
        dataset_id=None,
        results=[
            ValidationResultIn("expect_column_values_to_not_be_null", "text", True, 0, {}),
            ValidationResultIn("expect_table_row_count_to_be_between", None, False, {"rows": 3}, {"min": 50}),
        ],
    )
    stored = registry.validation_results(run.id)
    assert [(r.column, r.success, r.observed) for r in stored] == [
        ("text", True, 0),
        (None, False, {"rows": 3}),
    ]
    outcome = GateOutcome(
        passed=True,
        outcome="promoted",
        primary_metric="macro_f1",
        candidate_score=0.81,
        champion_score=0.78,
        reasons=["beats champion by 0.03"],
        min_score=0.5,
        floor_source="min_score",
        min_improvement=0.01,
    )
    decision = registry.record_gate_decision(
        outcome, run_id=run.id, candidate_version_id=candidate.id, champion_version_id=champion.id
    )
    assert (decision.candidate_version, decision.champion_version) == (2, 1)
    assert (decision.run_id, decision.candidate_version_id, decision.champion_version_id) == (
        run.id, candidate.id, champion.id,
    )
    assert (decision.reasons, decision.min_score, decision.floor_source, decision.alias) == (
        ["beats champion by 0.03"], 0.5, "min_score", "champion",
    )
    assert registry.get_version(MODEL, 2).gate_decision == decision
    assert registry.gate_decisions(MODEL) == [decision]
    gate_event = registry.audit.events(f"{MODEL}:2")[-1]
    assert gate_event.event_type == "gate_decision" and gate_event.payload["candidate_score"] == 0.81
    calm = registry.record_drift_report(drift_result(0.1, "/r/1.html", effect=float("nan")), model_name=MODEL,
                                        retrain="not_needed", current="current.csv", reference="test split")
    drift = registry.record_drift_report(drift_result(0.6, "/r/2.html", drifted=True), model_name=MODEL,
                                         retrain="requested", current="current.csv", reference="test split",
                                         version_id=champion.id)
    assert registry.drift_reports(MODEL) == [calm, drift]
    assert calm.details["signals"][0]["effect"] is None  # NaN is stored (and handed back) as null
    assert (calm.finding, calm.drift_detected, calm.retrain, calm.report_path) == (
        "none", False, "not_needed", "/r/1.html",
    )
    assert (drift.finding, drift.drift_detected, drift.retrain, drift.version_id) == (
        "drift", True, "requested", champion.id,
    )
    assert (drift.details["current"], drift.details["reference"], drift.details["threshold"]) == (
        "current.csv", "test split", 0.3,
    )
    assert event_types(registry, MODEL)[-2:] == ["drift_report", "drift_detected"]
    assert registry.audit.verify().ok


def drift_result(share: float, report_path: str, *, drifted: bool = False, effect: float = 0.9) -> DriftResult:
    signal = DriftSignal(name="text", kind="covariate", method="perc_text_content_drift", effect=effect,
                         effect_threshold=0.65, significant=drifted, drifted=drifted)
    return DriftResult(drift_detected=drifted, prior_shift=False, drift_share=share, threshold=0.3, signals=[signal],
                       reference_rows=500, reference_scored=500, current_rows=400, current_scored=400,
                       covariate_reference_rows=500, report_path=Path(report_path))


def test_metrics_must_be_finite(registry: Registry) -> None:
    run = start_run(registry)
    with pytest.raises(BadInputError, match="loss"):
        registry.log_metrics(run_id=run.id, metrics={"loss": float("nan")})


def test_passwords_never_stored_or_returned(registry: Registry, registry_url: str) -> None:
    assert "s3cret" not in mask_url(SECRET_URL) and "***" in mask_url(SECRET_URL)
    run = registry.start_run(
        kind="retrain",
        model_name=MODEL,
        config={"registry": {"url": SECRET_URL}, "notes": [f"copied from {SECRET_URL}"]},
        seed=1,
        code_version="abc",
        package_versions={},
    )
    registry.finish_run(run.id, status="failed", error=f"could not reach {SECRET_URL}")
    assert "s3cret" not in repr(registry.get_run(run.id))
    assert registry.get_run(run.id).config["registry"]["url"] == mask_url(SECRET_URL)
    assert "s3cret" not in repr(registry.audit.events())
    for table in ("runs", "audit_events"):
        assert "s3cret" not in repr(rows(registry_url, f"SELECT * FROM {table}"))


def test_open_reports_unreachable_database_without_password() -> None:
    with pytest.raises(BadInputError) as caught:
        Registry.open("postgresql+psycopg2://postgres:s3cret@127.0.0.1:1/x")
    message = str(caught.value)
    assert "s3cret" not in message and "***" in message and "\n" not in message
    with pytest.raises(BadInputError, match="cannot open registry"):
        Registry.open("not a url")


def test_sqlite_open_creates_directory_and_uses_wal(sqlite_url: str) -> None:
    with Registry.open(sqlite_url) as reg:
        assert reg.url == sqlite_url and reg.list_models() == []
    assert scalar(sqlite_url, "PRAGMA journal_mode") == "wal"


def _register_worker(url: str, count: int) -> list[int]:
    with Registry.open(url) as reg:
        return [register(reg).version for _ in range(count)]


def test_concurrent_registrations_number_versions_without_gaps(registry: Registry, registry_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        futures = [pool.submit(_register_worker, registry_url, 5) for _ in range(4)]
        versions = sorted(v for future in futures for v in future.result())
    assert versions == list(range(1, 21))
    assert [v.version for v in registry.list_versions(MODEL)] == list(range(20, 0, -1))
    assert registry.audit.verify().ok


def test_curve_is_stored_in_step_order_with_one_audit_event(registry: Registry) -> None:
    run = start_run(registry)
    registry.log_curve(run_id=run.id, key="finetune_loss", points=[(2, 0.5), (1, 0.9), (3, 0.25)])
    assert registry.curve(run.id, "finetune_loss") == [(1, 0.9), (2, 0.5), (3, 0.25)]
    assert event_types(registry).count("metric_curve_logged") == 1
    with pytest.raises(BadInputError):
        registry.log_curve(run_id=run.id, key="finetune_loss", points=[(4, float("nan"))])


@pytest.mark.postgres
def test_plain_postgresql_url_uses_psycopg3_and_psycopg2_url_still_works(pg_url: str) -> None:
    """`postgresql://` (SQLAlchemy's default driver, psycopg 3) and `postgresql+psycopg2://` open the same
    registry: each writes a version the other reads, the audit chain stays whole, and the CLI takes the plain form."""
    plain = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    psycopg2 = make_url(pg_url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    assert (make_url(plain).get_dialect().driver, make_url(psycopg2).get_dialect().driver) == ("psycopg", "psycopg2")
    with Registry.open(plain) as reg:
        assert register(reg).version == 1
    with Registry.open(psycopg2) as reg:
        assert [v.version for v in reg.list_versions(MODEL)] == [1]
        assert register(reg).version == 2
    with Registry.open(plain) as reg:
        assert [v.version for v in reg.list_versions(MODEL)] == [2, 1]
        assert reg.audit.verify().ok
    result = subprocess.run([sys.executable, "-m", "steward.cli", "registry", "models", "--registry", plain, "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (model,) = json.loads(result.stdout)["models"]
    assert (model["name"], model["latest_version"], model["version_count"]) == (MODEL, 2, 2)
