"""Access and artifact integrity as a user meets them on the command line.

Approval by someone other than the author, rollback that records who and why, registry passwords
masked everywhere they could surface (output, registry rows, audit log, Prefect), modified weights
refused with an audit event, pickle base checkpoints refused unless allowed, remote code never run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from core.hashing import sha256_files
from governance.registry import Registry
from steward.cli import main
from tests.test_bad_input import default_registry, one_error_line
from tests.test_flow_retrain import write_project
from tests.test_registry import start_run

SECRET = "s3cret-Pa55"


def _register_copy_of(model_dir: Path, registry: Registry, artifact: Path, require_approval: bool = False) -> int:
    """Register a copy of `model_dir` as the next version of 'tickets' (no training needed)."""
    shutil.copytree(model_dir, artifact)
    run = start_run(registry, "tickets")
    registry.finish_run(run.id, status="completed")
    return registry.register_version(model_name="tickets", run_id=run.id, artifact_path=str(artifact),
                                     files=sha256_files(artifact), base_model="tiny",
                                     require_approval=require_approval).version


def test_promotion_needs_another_person_and_rollback_records_who_and_why(
    sqlite_url: str, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEWARD_ACTOR", "alice")
    with Registry.open(sqlite_url) as registry:
        for number in (1, 2):
            _register_copy_of(tiny_model_dir, registry, tmp_path / f"v{number}", require_approval=True)

    assert main(["registry", "promote", "tickets:1", "--approver", "bob", "--registry", sqlite_url]) == 2
    assert "'bob' is not who is acting" in one_error_line(capsys.readouterr().err)
    assert main(["registry", "promote", "tickets:1", "--registry", sqlite_url]) == 1
    assert "refused" in one_error_line(capsys.readouterr().err)
    monkeypatch.setenv("STEWARD_ACTOR", "bob")
    for version in ("tickets:1", "tickets:2"):
        assert main(["registry", "promote", version, "--approver", "bob", "--registry", sqlite_url]) == 0
    monkeypatch.setenv("STEWARD_ACTOR", "carol")
    assert main(["registry", "rollback", "tickets", "--reason", "v2 mislabels refunds", "--registry", sqlite_url]) == 0

    with Registry.open(sqlite_url) as registry:
        events = registry.audit.events("tickets")
        assert registry.alias_version("tickets", "champion").version == 1
        assert registry.audit.verify().ok
    refused, _, second, rolled_back = (
        e for e in events if e.event_type in ("promotion_refused", "model_promoted", "champion_rolled_back")
    )
    assert (refused.actor, refused.payload["author"], refused.payload["actor_source"]) == (
        "alice", "alice", "STEWARD_ACTOR")
    assert (second.actor, second.payload["approver"], second.payload["author"]) == ("bob", "bob", "alice")
    assert (rolled_back.actor, rolled_back.payload["reason"]) == ("carol", "v2 mislabels refunds")
    assert (rolled_back.payload["version"], rolled_back.payload["previous_version"]) == (1, 2)


def _with_password(url: str) -> str:
    """The same database with a password in the URL (the trust-auth test server ignores it)."""
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def _all_registry_text(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
            rows = [row for table in tables for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    finally:
        engine.dispose()
    return " ".join(str(value) for row in rows for value in row)  # str: Row's repr shortens long values


def _prefect_text(flow_run_ids: list[str]) -> str:
    """What Prefect stored and shows of these flow runs: names, parameters, logs."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))
    assert len(runs) == len(flow_run_ids)
    return repr([(run.name, run.parameters) for run in runs]) + repr([log.message for log in logs])


@pytest.mark.postgres
@pytest.mark.usefixtures("prefect_harness")
def test_registry_password_is_masked_everywhere(
    pg_url: str, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    secret_url = _with_password(pg_url)
    config = write_project(tmp_path, tiny_model_dir, registry={"url": secret_url})
    outputs = []
    for argv in (["validate", "--config", str(config)],
                 ["validate", "--config", str(config), "--registry", secret_url, "--json"],
                 ["audit", "log", "--json", "--registry", secret_url],
                 ["registry", "models", "--registry", secret_url]):
        main(argv)
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)
    config.write_text(config.read_text(encoding="utf-8") + "colour: blue\n", encoding="utf-8")
    assert main(["validate", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    outputs.append(captured.out + captured.err)

    with Registry.open(secret_url) as registry:
        events = registry.audit.events("tickets")
        assert registry.url == make_url(secret_url).render_as_string(hide_password=True)
    assert events[-1].event_type == "input_rejected"
    run_ids = [e.payload["run_id"] for e in events if e.event_type == "run_completed"]
    flow_run_ids = [e.payload["flow_run_id"] for e in events if e.event_type == "run_started"]
    assert len(run_ids) == len(flow_run_ids) == 2
    everything = " ".join(outputs) + _all_registry_text(pg_url) + _prefect_text(flow_run_ids)
    assert SECRET not in everything
    assert "postgres:***@" in everything


@pytest.mark.usefixtures("prefect_harness")
def test_modified_weights_are_refused_at_load_with_an_audit_event(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_project(tmp_path, tiny_model_dir)
    with default_registry(tmp_path) as registry:
        version = _register_copy_of(tiny_model_dir, registry, tmp_path / "artifact")
    weights = tmp_path / "artifact" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    code = main(["evaluate", "--config", str(config), "--model", f"tickets:{version}"])

    message = one_error_line(capsys.readouterr().err)
    assert code == 1
    assert message.startswith(f"{weights}: sha256 mismatch (expected ")
    with default_registry(tmp_path) as registry:
        failed = [e for e in registry.audit.events("tickets") if e.event_type == "stage_failed"]
        assert [e.payload["error"] for e in failed] == [message]
        assert registry.audit.verify().ok


@pytest.mark.usefixtures("prefect_harness")
def test_pickle_base_checkpoint_runs_only_when_allowed_and_registers_safetensors(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled-base"
    shutil.copytree(tiny_model_dir, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(tiny_model_dir / "model.safetensors"), pickled / "pytorch_model.bin")
    config = write_project(tmp_path, pickled, pretraining={"enabled": False}, finetuning={"epochs": 1})

    assert main(["run", "--config", str(config)]) == 2
    assert "weights are pickle files only (pytorch_model.bin)" in one_error_line(capsys.readouterr().err)
    allowed = yaml.safe_load(config.read_text(encoding="utf-8")) | {"allow_pickle": True}
    config.write_text(yaml.safe_dump(allowed), encoding="utf-8")
    assert main(["run", "--config", str(config), "--json"]) == 0

    outcome = json.loads(capsys.readouterr().out)
    with default_registry(tmp_path) as registry:
        files = [f.relative_path for f in registry.get_version("tickets", outcome["version"]).files]
    assert "model.safetensors" in files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]


@pytest.mark.usefixtures("prefect_harness")
def test_remote_code_in_a_base_model_is_never_run(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    base = tmp_path / "custom-code-model"
    shutil.copytree(tiny_model_dir, base)
    ran = tmp_path / "remote-code-ran"
    (base / "configuration_custom.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n", encoding="utf-8")
    model_config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    model_config |= {"model_type": "custom", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}
    (base / "config.json").write_text(json.dumps(model_config), encoding="utf-8")
    config = write_project(tmp_path, base)

    code = main(["run", "--config", str(config)])

    message = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert message.endswith("the model needs custom code (auto_map); Steward never runs remote code "
                            "(trust_remote_code stays off)")
    assert not ran.exists()
    with default_registry(tmp_path) as registry:
        assert registry.list_models() == []
        assert registry.audit.events("tickets")[-1].event_type == "run_failed"
