"""`steward registry ...` and `steward audit ...` as a user runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from governance.registry import Registry
from steward.cli import main
from tests.conftest import tamper
from tests.test_registry import register


def steward_json(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--registry", url, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_empty_registry_answers(registry_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, models = steward_json(capsys, registry_url, "registry", "models")
    assert (code, models) == (0, {"models": []})
    code, verified = steward_json(capsys, registry_url, "audit", "verify")
    assert code == 0
    assert verified == {"ok": True, "events_checked": 0, "first_broken_seq": None, "reason": None}


def test_versions_show_promote_rollback(registry_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Registry.open(registry_url) as registry:
        for _ in range(3):
            register(registry, "tickets")

    for version in (1, 2, 3):
        code, move = steward_json(capsys, registry_url, "registry", "promote", f"tickets:{version}",
                                  "--reason", "release")
        assert code == 0 and move["version"] == version
    code, listing = steward_json(capsys, registry_url, "registry", "versions", "tickets")
    assert [v["version"] for v in listing["versions"]] == [3, 2, 1]
    assert listing["aliases"] == {"champion": 3}

    code, moved = steward_json(capsys, registry_url, "registry", "rollback", "tickets", "--reason", "regression")
    assert (code, moved["version"], moved["previous_version"], moved["action"]) == (0, 2, 3, "rollback")
    code, shown = steward_json(capsys, registry_url, "registry", "show", "tickets:2")
    assert shown["aliases"] == ["champion"]
    assert shown["files"][0]["relative_path"] == "model.safetensors"

    code, log = steward_json(capsys, registry_url, "audit", "log", "tickets")
    types = [event["event_type"] for event in log["events"]]
    assert types.count("model_promoted") == 3 and types[-1] == "champion_rolled_back"


def test_unknown_model_is_bad_input(registry_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["registry", "show", "ghost:1", "--registry", registry_url])
    assert code == 2
    assert capsys.readouterr().err == "steward: error: no model named 'ghost'\n"


def test_tampered_payload_fails_verify_naming_the_event(
    registry_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with Registry.open(registry_url) as registry:
        register(registry, "tickets")
        register(registry, "tickets")
    tamper(registry_url, "UPDATE audit_events SET payload = :forged WHERE seq = 3", params={"forged": '{"forged": 1}'})

    code, verified = steward_json(capsys, registry_url, "audit", "verify")
    assert code == 1
    assert (verified["ok"], verified["first_broken_seq"]) == (False, 3)
    code = main(["audit", "verify", "--registry", registry_url])
    assert code == 1
    assert "audit chain broken at event 3" in capsys.readouterr().err


def test_report_is_written(registry_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Registry.open(registry_url) as registry:
        register(registry, "tickets")
    out = tmp_path / "report.md"
    code, written = steward_json(capsys, registry_url, "audit", "report", "tickets:1", "--format", "md",
                                 "--out", str(out))
    assert code == 0 and written["report"] == str(out.resolve())
    body = out.read_text(encoding="utf-8")
    assert body.startswith("# Audit report: tickets v1")
    assert "Chain verified" in body and "model.safetensors" in body


def test_password_never_printed_when_the_database_is_unreachable() -> None:
    url = "postgresql+psycopg2://postgres:hunter2@127.0.0.1:1/test"
    result = subprocess.run([sys.executable, "-m", "steward.cli", "registry", "models", "--registry", url],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "hunter2" not in result.stdout + result.stderr
    assert "postgres:***@127.0.0.1:1/test" in result.stderr
    assert result.stderr.count("\n") == 1
