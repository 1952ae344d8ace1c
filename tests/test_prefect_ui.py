"""What a user sees in the Prefect UI, checked through the Prefect client against a real
`prefect server start` on a free loopback port (SQLite in a temporary PREFECT_HOME).

The module's story: `steward run` trains a tiny champion while `steward serve` registers the retrain
and monitor deployments and is then stopped with SIGTERM; a batch from another domain is sent to
`steward serve-model`, which logs it, and `steward monitor --current served` finds drift in it. The
server then holds the completed monitor run, its artifacts, the
`steward.drift.detected` event, and the retrain run that the event triggered (left scheduled: nothing
serves it any more). Last, `infra/prefect.yaml` is deployed to the same server with `prefect deploy`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import DeploymentStatus
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from governance.prediction_log import PredictionLog
from steward.demo import demo_files
from tests.test_flow_retrain import write_project
from tests.test_model_server import model_server

REPO = Path(__file__).resolve().parent.parent
MODEL = "tickets"
RETRAIN = f"steward-retrain/{MODEL}-retrain"
MONITOR = f"steward-monitor/{MODEL}-monitor"
SERVER_START_TIMEOUT_S = 90
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout_s: float = 60) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    home: Path

    def env(self) -> dict[str, str]:
        """The environment of a `steward` command that talks to this server."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
        return {**env, "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api_url,
                "PREFECT_UI_API_URL": self.api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.api_url)

    def steward(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "steward.cli", *argv], env=self.env(), cwd=self.home,
                              capture_output=True, text=True, timeout=300)

    def start_steward(self, log: Path, *argv: str) -> subprocess.Popen:
        """A `steward` command in the background (its own process group), its output in `log`."""
        with log.open("wb") as output:
            return subprocess.Popen([sys.executable, "-m", "steward.cli", *argv], env=self.env(), cwd=self.home,
                                    stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(process: subprocess.Popen, timeout_s: float = 30) -> int:
    """SIGTERM the process group we started, SIGKILL it if it lingers; its exit code."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    server = PrefectServer(f"http://127.0.0.1:{port}/api", home)
    log = home / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server.env(), stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(server.api_url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                pytest.fail(f"`prefect server start` did not become healthy on port {port}:\n{tail}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A tiny-model project whose `monitoring.current` is a batch from another domain (drift)."""
    root = tmp_path_factory.mktemp("ui-project")
    config = write_project(
        root, tiny_model_dir,
        pretraining={"enabled": False},
        finetuning={"epochs": 1},
        monitoring={"current": "data/current.csv"},
        # Due on 29 February only: no scheduled run may start while the tests run.
        schedule={"retrain_cron": "0 4 29 2 *", "monitor_cron": "30 4 29 2 *"},
    )
    (root / "data" / "current.csv").write_bytes(demo_files()["data/drifted.csv"])
    return config


def _registry(project: Path) -> str:
    return f"sqlite:///{project.parent / 'registry.db'}"


@dataclass(frozen=True)
class Background:
    process: subprocess.Popen
    log: Path

    def finished(self, timeout_s: float = 300) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return _stop(self.process)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def training(prefect_server: PrefectServer, project: Path) -> Iterator[Background]:
    """`steward run`, the champion the monitor needs, training while `steward serve` starts."""
    log = prefect_server.home / "run.log"
    process = prefect_server.start_steward(log, "run", "--config", str(project), "--registry", _registry(project))
    yield Background(process, log)
    if process.poll() is None:
        _stop(process)


@pytest.fixture(scope="module")
def served(prefect_server: PrefectServer, project: Path, training: Background) -> Background:
    """`steward serve` until both deployments are polled by it, then SIGTERM, as a service manager would."""
    log = prefect_server.home / "serve.log"
    process = prefect_server.start_steward(log, "serve", "--config", str(project), "--registry", _registry(project))
    try:
        with prefect_server.client() as client:

            def both_ready() -> bool:
                deployments = client.read_deployments(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[f"{MODEL}-retrain",
                                                                                       f"{MODEL}-monitor"]))
                )
                return len(deployments) == 2 and all(d.status == DeploymentStatus.READY for d in deployments)

            eventually(both_ready, "`steward serve` to register and poll both deployments")
    finally:
        _stop(process)
    return Background(process, log)


@pytest.fixture(scope="module")
def monitored(prefect_server: PrefectServer, project: Path, training: Background, served: Background) -> dict:
    """The whole loop once the champion is trained and serve stopped: the shifted batch is sent to
    `steward serve-model`, which logs it; `steward monitor --current served` checks it. Its JSON."""
    assert training.finished() == 0, training.tail()
    shifted = [row["text"] for row in csv.DictReader(io.StringIO(demo_files()["data/drifted.csv"].decode()))]
    token = prefect_server.home / "token"
    token.write_text("ui-token")
    with (model_server(project, token, "--registry", _registry(project), env=prefect_server.env()) as server,
          server.client("ui-token") as client):
        for start in range(0, len(shifted), 16):
            assert client.post("/v1/predict", json={"texts": shifted[start : start + 16]}).status_code == 200
        eventually(lambda: len(logged(project)) >= len(shifted) or None, "the prediction log to hold the batch")
    checked = prefect_server.steward("monitor", "--config", str(project), "--registry", _registry(project),
                                     "--current", "served", "--since", "1h", "--json")
    assert checked.returncode == 0, checked.stderr[-2000:]
    return json.loads(checked.stdout)


def logged(project: Path) -> list:
    with PredictionLog.open(_registry(project)) as log:
        return log.window(MODEL, datetime.now(UTC) - timedelta(hours=1))


def test_serve_registers_scheduled_deployments_and_sigterm_leaves_schedules_active(
    prefect_server: PrefectServer, project: Path, served: Background
) -> None:
    assert served.process.returncode == 0, served.tail()
    with prefect_server.client() as client:
        retrain = client.read_deployment_by_name(RETRAIN)
        monitor = client.read_deployment_by_name(MONITOR)
    for deployment, cron in ((retrain, "0 4 29 2 *"), (monitor, "30 4 29 2 *")):
        assert not deployment.paused
        assert [(s.schedule.cron, s.active) for s in deployment.schedules] == [(cron, True)]
        assert deployment.global_concurrency_limit is not None
        assert deployment.global_concurrency_limit.limit == 1
    # `--registry` reaches the served runs through serve's environment, never Prefect's stored parameters.
    assert retrain.parameters == {"config_path": str(project)}
    assert monitor.parameters == {**retrain.parameters, "current_path": str(project.parent / "data" / "current.csv")}


def _monitor_cli_run(client: SyncPrefectClient):
    """The flow run of `steward monitor` (the deployment's scheduled runs have a deployment id)."""
    (run,) = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=["steward-monitor"])),
        flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(is_null_=True)),
    )
    return run


def _drift_events(client: SyncPrefectClient) -> list:
    return client.read_events(
        filter=EventFilter(event=EventNameFilter(name=["steward.drift.detected"]),
                           resource=EventResourceFilter(id=[f"steward.model.{MODEL}"])),
        limit=10,  # the client's default (100) is above the server's maximum page (50)
    ).events


def test_monitor_run_completed_with_artifacts_and_a_drift_event(
    prefect_server: PrefectServer, monitored: dict
) -> None:
    assert monitored["drift_detected"] is True
    with prefect_server.client() as client:
        run = _monitor_cli_run(client)
        assert run.state is not None and run.state.is_completed()
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        assert f"{MODEL}-drift" in {artifact.key for artifact in artifacts}
        assert {artifact.type for artifact in artifacts} >= {"markdown", "table"}
        (event,) = eventually(lambda: _drift_events(client), "the drift event to be stored")
    assert event.resource["prefect.resource.name"] == MODEL
    assert event.payload["model"] == MODEL
    assert event.payload["drift_share"] == pytest.approx(monitored["drift_share"])
    assert f"prefect.flow-run.{run.id}" in {related.id for related in event.related}


def test_the_gate_moving_the_champion_alias_is_a_prefect_event(prefect_server: PrefectServer,
                                                               monitored: dict) -> None:
    """`steward.model.promoted`, which model servers and automations can follow."""
    with prefect_server.client() as client:
        events = eventually(lambda: client.read_events(
            filter=EventFilter(event=EventNameFilter(name=["steward.model.promoted"]),
                               resource=EventResourceFilter(id=[f"steward.model.{MODEL}"])), limit=10).events,
            "the promotion event to be stored")
    first = min(events, key=lambda event: event.occurred)
    assert (first.payload["alias"], first.payload["version"], first.payload["action"]) == ("champion", 1, "set")
    assert first.payload["previous_version"] is None


def test_retrain_trigger_matches_the_drift_event_and_starts_a_retrain(
    prefect_server: PrefectServer, project: Path, monitored: dict
) -> None:
    with prefect_server.client() as client:
        retrain = client.read_deployment_by_name(RETRAIN)
        (automation,) = client.read_resource_related_automations(f"prefect.deployment.{retrain.id}")
        (event,) = eventually(lambda: _drift_events(client), "the drift event to be stored")

        assert automation.enabled
        assert event.event in automation.trigger.expect
        assert not automation.trigger.match.matches_every_resource()
        assert automation.trigger.match.matches(event.resource)  # Prefect's own matching, as its trigger service uses

        (run,) = eventually(lambda: _retrain_runs(client, retrain.id), "the drift trigger to create a retrain run")
    assert run.created_by.display_value == automation.name
    assert run.parameters == {"config_path": str(project)}


def test_a_second_drift_check_in_the_same_episode_starts_no_retrain(
    prefect_server: PrefectServer, project: Path, monitored: dict
) -> None:
    assert monitored["retrain"] == "requested"
    with prefect_server.client() as client:
        retrain = client.read_deployment_by_name(RETRAIN)
        eventually(lambda: _retrain_runs(client, retrain.id), "the first drift event's retrain run")
    again = prefect_server.steward("monitor", "--config", str(project), "--registry", _registry(project),
                                   "--current", str(project.parent / "data" / "current.csv"), "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    outcome = json.loads(again.stdout)
    assert (outcome["finding"], outcome["retrain"]) == ("drift", "same_episode")
    time.sleep(5)  # what a second event would need to reach the server and its trigger
    with prefect_server.client() as client:
        assert len(_drift_events(client)) == 1
        assert len(_retrain_runs(client, retrain.id)) == 1
        checks = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["steward-monitor"])),
                                       flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(
                                           is_null_=True)))
        newest = max(checks, key=lambda run: run.created)
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[newest.id])))
    (summary,) = [artifact for artifact in artifacts if artifact.type == "markdown"]
    assert "this drift episode already asked this champion for one" in summary.data


def _retrain_runs(client: SyncPrefectClient, deployment_id) -> list:
    deployment = FlowRunFilterDeploymentId(any_=[deployment_id])
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(deployment_id=deployment))
    return [run for run in runs if run.created_by and run.created_by.type == "AUTOMATION"]


def test_infra_prefect_yaml_deploys_with_its_schedules_limits_and_trigger(prefect_server: PrefectServer) -> None:
    with prefect_server.client() as client:
        client.create_work_pool(WorkPoolCreate(name="steward-pool", type="process"))
    deployed = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml"],
        cwd=REPO, env=prefect_server.env(), capture_output=True, text=True, timeout=120,
    )
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    with prefect_server.client() as client:
        retrain = client.read_deployment_by_name("steward-retrain/support-tickets-retrain")
        monitor = client.read_deployment_by_name("steward-monitor/support-tickets-monitor")
        (automation,) = client.read_resource_related_automations(f"prefect.deployment.{retrain.id}")
    for deployment, cron in ((retrain, "0 3 * * 1"), (monitor, "0 * * * *")):
        assert deployment.work_pool_name == "steward-pool"
        assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules] == [(cron, "UTC", True)]
        assert deployment.global_concurrency_limit is not None
        assert deployment.global_concurrency_limit.limit == 1
    assert automation.trigger.expect == {"steward.drift.detected"}
    assert automation.trigger.match.matches({"prefect.resource.id": "steward.model.support-tickets"})
