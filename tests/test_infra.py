"""infra/: prefect.yaml names importable flows and says what `steward serve` does; the compose file wires
the worker to PostgreSQL and the Prefect server; the commands the notes show exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from prefect.events import DeploymentEventTrigger
from prefect.flows import load_flow_from_entrypoint
from sqlalchemy.engine import make_url

from core.config import parse_config
from flows.deployments import build_deployments
from steward.cli import build_parser
from steward.demo import config_yaml

INFRA = Path(__file__).resolve().parent.parent / "infra"
REPO = INFRA.parent


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((INFRA / "prefect.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict:
    text = (INFRA / "docker-compose.yml").read_text(encoding="utf-8")
    # `${VAR:-default}` as docker compose interpolates it when VAR is unset.
    return yaml.safe_load(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text))


def test_every_entrypoint_is_a_flow_that_accepts_its_parameters(
    prefect_yaml: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # `prefect deploy` resolves entrypoints against the repository root
    flow_names = {}
    for deployment in prefect_yaml["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        flow.validate_parameters(deployment["parameters"])
        flow_names[deployment["name"]] = flow.name
    assert flow_names == {"support-tickets-retrain": "steward-retrain", "support-tickets-monitor": "steward-monitor"}


def test_prefect_yaml_schedules_limits_and_trigger_match_steward_serve(prefect_yaml: dict) -> None:
    """The worker deployments behave like the ones `steward serve` builds for the demo config at /project."""
    raw = yaml.safe_load(config_yaml())
    config = parse_config({**raw, "monitoring": {**raw["monitoring"], "current": "data/current.csv"}},
                          "demo", Path("/project"))
    served = build_deployments(config, Path("/project/steward.yaml"))
    declared = {deployment["name"]: deployment for deployment in prefect_yaml["deployments"]}
    for deployment in served.all():
        spec = declared[deployment.name]
        assert spec["parameters"] == deployment.parameters
        (schedule,) = spec["schedules"]
        (served_schedule,) = deployment.schedules
        assert (schedule["cron"], schedule["timezone"]) == (served_schedule.schedule.cron, "UTC")
        assert spec["concurrency_limit"] == {
            "limit": deployment.concurrency_limit,
            "collision_strategy": deployment.concurrency_options.collision_strategy.value,
        }
        assert spec["work_pool"]["name"] == "steward-pool"
        triggers = [DeploymentEventTrigger.model_validate(trigger) for trigger in spec.get("triggers", [])]
        assert [t.model_dump(exclude={"description"}) for t in triggers] == [
            t.model_dump(exclude={"description"}) for t in deployment.triggers
        ]


def test_compose_wires_worker_to_server_registry_and_pool(compose: dict, prefect_yaml: dict) -> None:
    services = compose["services"]
    assert {"postgres", "prefect-server", "worker"} <= set(services)
    server_db = make_url(services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert (server_db.drivername, server_db.host) == ("postgresql+asyncpg", "postgres")

    worker = services["worker"]
    registry = make_url(worker["environment"]["STEWARD_REGISTRY_URL"])
    assert (registry.get_backend_name(), registry.host, registry.database) == ("postgresql", "postgres", "registry")
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    command = shlex.split(worker["command"])
    pool = command[command.index("--pool") + 1]
    assert {deployment["work_pool"]["name"] for deployment in prefect_yaml["deployments"]} == {pool}
    dockerfile = REPO / worker["build"]["dockerfile"]
    assert "pip install -c constraints.txt ." in dockerfile.read_text(encoding="utf-8")


def test_compose_serves_the_champion_from_two_replicas_logging_into_the_registry(compose: dict) -> None:
    from steward.cli import build_parser

    server = compose["services"]["model-server"]
    assert server["image"] == compose["services"]["worker"]["image"] and server["deploy"]["replicas"] == 2
    program, *argv = shlex.split(server["command"])
    args = build_parser().parse_args(argv)
    assert program == "steward"
    assert (args.command, args.model, args.host) == ("serve-model", "support-tickets@champion", "0.0.0.0")
    registry = make_url(server["environment"]["STEWARD_REGISTRY_URL"])
    assert (registry.get_backend_name(), registry.database) == ("postgresql", "registry")
    assert "/readyz" in " ".join(server["healthcheck"]["test"])


def _documented_steward_commands() -> list[str]:
    commands = []
    for page in sorted(INFRA.glob("*.md")):
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
            commands += [line.strip() for line in block.splitlines() if re.match(r"\s*(\S+=\S+\s+)*steward ", line)]
    return commands


def test_the_steward_commands_in_the_notes_exist() -> None:
    commands = _documented_steward_commands()
    assert any("--nproc" in command for command in commands)
    for command in commands:
        words = shlex.split(command)
        build_parser().parse_args(words[words.index("steward") + 1 :])
