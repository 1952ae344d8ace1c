"""Load: 8 concurrent `steward run` processes on tiny models against one PostgreSQL registry.

Each process has its own project folder (so no two share a resume dir) but the same model name, so
they compete for version numbers and for the champion alias. The gate is set to promote every
candidate (min_improvement -1), so every run must exit 0 as `promoted`; version numbers must be
exactly 1..8, and the audit chain must verify.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from governance.registry import Registry
from tests.test_flow_retrain import write_project

RUNS = 8
RUN_TIMEOUT_S = 900


def _start(config: Path, registry_url: str, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "steward.cli", "run", "--config", str(config), "--registry", registry_url]
    command.append("--json")
    with (config.parent / "out.json").open("w") as out, (config.parent / "err.log").open("w") as err:
        return subprocess.Popen(command, env=env, stdout=out, stderr=err)


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_runs_number_versions_without_gaps_and_keep_the_chain(
    tmp_path: Path, tiny_model_dir: Path, steward_env: dict[str, str], pg_url: str,
) -> None:
    configs = [
        write_project(tmp_path / f"project-{index}", tiny_model_dir, pretraining={"enabled": False},
                      finetuning={"epochs": 1}, evaluation={"min_improvement": -1.0})
        for index in range(RUNS)
    ]
    started = time.monotonic()
    processes = [_start(config, pg_url, steward_env) for config in configs]
    codes = [process.wait(timeout=RUN_TIMEOUT_S) for process in processes]
    print(f"\n{RUNS} concurrent runs finished in {time.monotonic() - started:.1f}s")

    failed = [config.parent for config, code in zip(configs, codes, strict=True) if code]
    assert codes == [0] * RUNS, {folder.name: (folder / "err.log").read_text()[-2000:] for folder in failed}
    outcomes = [json.loads((config.parent / "out.json").read_text()) for config in configs]
    assert sorted(outcome["version"] for outcome in outcomes) == list(range(1, RUNS + 1))
    assert {outcome["decision"] for outcome in outcomes} == {"promoted"}
    with Registry.open(pg_url) as registry:
        assert sorted(v.version for v in registry.list_versions("tickets")) == list(range(1, RUNS + 1))
        assert {registry.get_run(outcome["run_id"]).status for outcome in outcomes} == {"completed"}
        moves = [m for m in registry.alias_history("tickets") if m.alias == "champion"]
        assert sorted(m.version for m in moves) == list(range(1, RUNS + 1))
        assert registry.alias_version("tickets", "champion").version == moves[-1].version
        events = Counter(e.event_type for e in registry.audit.events("tickets"))
        assert (events["run_started"], events["run_completed"], events["gate_decision"]) == (RUNS, RUNS, RUNS)
        verification = registry.audit.verify()
        assert verification.ok, verification.reason
