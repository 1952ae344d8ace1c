"""`steward serve-model` as a real process on a free loopback port, driven by a real HTTP client: predictions,
bad requests, the bearer token, metrics, and the hot swap on promotion and rollback under concurrent load."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from governance.prediction_log import PredictionLog
from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from tests.test_flow_retrain import registry_for, run_json, write_project
from tests.test_monitor import _shifted_texts

TOKEN = "s3cret-token"
CLIENTS = 8
POLL_SECONDS = 0.3
PHASE_SECONDS = 6.0  # traffic on v1, then v2, then v1 again: about 20 s under load in all


@dataclass(frozen=True)
class Server:
    url: str
    config: Path
    process: subprocess.Popen

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def three_versions(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """Three registered versions of `tickets` (three `steward run`s), with v1 the champion."""
    from prefect.testing.utilities import prefect_test_harness

    from steward.cli import main

    config = write_project(tmp_path_factory.mktemp("served"), tiny_model_dir, pretraining={"enabled": False})
    with prefect_test_harness(server_startup_timeout=60):
        for _ in range(3):
            assert main(["run", "--config", str(config)]) == 0
    with registry_for(config) as registry:
        if registry.alias_version("tickets", "champion").version != 1:
            registry.promote("tickets", 1, reason="start the server on v1")
    return config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def model_server(config: Path, token_file: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`steward serve-model --config CONFIG [EXTRA...]` on a free loopback port, until the block ends."""
    port = free_port()
    log_path = config.with_suffix(".server.log")
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "steward.cli", "serve-model", "--model", "tickets@champion", "--config",
             str(config), "--port", str(port), "--token-file", str(token_file), "--poll-seconds", str(POLL_SECONDS),
             *extra],
            stdout=log, stderr=subprocess.STDOUT, env={**(env or os.environ), **QUIET_THIRD_PARTY_DEFAULTS},
        )
        served = Server(f"http://127.0.0.1:{port}", config, process)
        try:
            _wait_until_ready(served, log_path)
            yield served
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_until_ready(served: Server, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert served.process.poll() is None, log_path.read_text()
        try:
            if httpx.get(f"{served.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    pytest.fail("the model server did not become ready in 90 s")


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def server(three_versions: Path, token_file: Path) -> Iterator[Server]:
    with model_server(three_versions, token_file) as served:
        yield served


def test_predict_answers_with_the_version_and_calibrated_probabilities(server: Server) -> None:
    with server.client() as client:
        response = client.post("/v1/predict", json={"texts": ["printer jams on floor 3", "vpn drops at night"]})
        model = client.get("/v1/model").json()
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"]) == ("tickets", 1)
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        assert prediction["label"] in model["labels"]
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction["score"] == prediction["probabilities"][prediction["label"]]
    assert (model["name"], model["version"], model["alias"]) == ("tickets", 1, "champion")
    # the int8 form passed the compression gate, so it answers; its own files are the ones checked
    assert model["form"] == "int8" and "model.onnx" in model["sha256"] and "agreement" in model["metrics"]


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "not JSON"),
    (b'{"text": ["a"]}', 422, '"texts"'),
    (b'{"texts": "one string"}', 422, "non-empty list"),
    (b'{"texts": []}', 422, "non-empty list"),
    (b'{"texts": ["ok", 7]}', 422, '"texts"[1] is int'),
    (b'{"texts": [' + b",".join([b'"x"'] * 257) + b"]}", 422, "over the limit of 256"),
    (b'{"texts": ["' + b"y" * 10_001 + b'"]}', 422, "10,001 characters"),
    (b'{"texts": ["' + b"z" * 1_000_001 + b'"]}', 413, "over the limit of 1,000,000"),
    (b'{"texts": ["\\ud800"]}', 422, "not valid Unicode"),
    (b'{"texts": [' + b"9" * 5_000 + b"]}", 400, "not JSON"),
    (b"[" * 100_000, 400, "not JSON"),
])
def test_a_bad_request_gets_its_4xx_with_a_one_line_json_error(
    server: Server, body: bytes, status: int, message: str
) -> None:
    with server.client() as client:
        response = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def test_a_chunked_body_over_the_limit_is_refused_while_it_is_read(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"texts": ["'
        for _ in range(20):
            yield b"w" * 100_000
        yield b'"]}'

    with server.client() as client:
        response = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "over the limit" in response.json()["error"]


def test_the_token_guards_every_route_but_the_health_checks(server: Server) -> None:
    for token in (None, "wrong"):
        with server.client(token) as client:
            assert client.post("/v1/predict", json={"texts": ["a"]}).status_code == 401
            assert client.get("/v1/model").status_code == 401
            assert client.get("/metrics").status_code == 401
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200


def test_metrics_count_requests_errors_and_name_the_served_version(server: Server) -> None:
    with server.client() as client:
        client.post("/v1/predict", json={"texts": ["metrics please"]})
        client.post("/v1/predict", content=b"nope")
        text = client.get("/metrics").text
    assert 'steward_requests_total{route="/v1/predict",status="200"}' in text
    assert 'steward_requests_total{route="/v1/predict",status="400"}' in text
    assert "steward_request_latency_seconds_bucket" in text
    assert 'steward_served_version{model="tickets"} 1.0' in text


def test_metrics_label_unknown_paths_as_other(server: Server) -> None:
    with server.client() as client:
        for index in range(5):
            assert client.get(f"/scan-{index}").status_code == 404
        text = client.get("/metrics").text
    assert 'route="other",status="404"' in text and "/scan-" not in text


def _traffic(server: Server, client_id: int, stop: threading.Event, answers: list, failures: list) -> None:
    with server.client() as client:
        request = 0
        while not stop.is_set():
            text = f"disk full on the build box {client_id}-{request}"
            request += 1
            try:
                response = client.post("/v1/predict", json={"texts": [text]})
                if response.status_code != 200:
                    failures.append(response.status_code)
                else:
                    answers.append((client_id, request, response.json()["version"], text))
            except httpx.HTTPError as exc:
                failures.append(repr(exc))


def _wait_for_version(server: Server, version: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while client.get("/v1/model").json()["version"] != version:
            assert time.monotonic() < deadline, f"the server did not swap to v{version}"
            time.sleep(0.1)


def test_promotion_and_rollback_swap_versions_under_load_without_a_failed_request(server: Server) -> None:
    answers: list[tuple[int, int, int, str]] = []  # client, its request number, version, text
    failures: list = []
    stop = threading.Event()
    clients = [threading.Thread(target=_traffic, args=(server, client, stop, answers, failures))
               for client in range(CLIENTS)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(PHASE_SECONDS)
        with registry_for(server.config) as registry:
            registry.promote("tickets", 2, reason="v2 is better")
        _wait_for_version(server, 2)
        time.sleep(PHASE_SECONDS)
        with registry_for(server.config) as registry:
            registry.rollback("tickets", reason="back to v1")
        _wait_for_version(server, 1)
        time.sleep(PHASE_SECONDS)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
    assert failures == []
    for client in range(CLIENTS):  # each client's requests are sequential: its own order is exact
        versions = [version for who, _, version, _ in sorted(answers) if who == client]
        switches = [version for i, version in enumerate(versions) if i == 0 or version != versions[i - 1]]
        assert switches == [1, 2, 1], f"client {client} saw versions {switches}"
    with registry_for(server.config) as registry:
        swapped = [e for e in registry.audit.events("tickets") if e.event_type == "model_swapped"]
        assert [(e.payload["from_version"], e.payload["to_version"]) for e in swapped][-2:] == [(1, 2), (2, 1)]
    answered = {text: version for _, _, version, text in answers}
    assert logged_versions(server.config, set(answered)) == answered  # every request, with who answered it


def logged_versions(config: Path, texts: set[str], timeout: float = 30) -> dict[str, int]:
    """The prediction log's version for each of `texts`, once the writer has flushed them all."""
    deadline = time.monotonic() + timeout
    with PredictionLog.open(f"sqlite:///{config.parent / '.steward' / 'registry.db'}") as log:
        while True:
            rows = {row.text: row.version for row in log.window("tickets", datetime.now(UTC) - timedelta(hours=1))
                    if row.text in texts}
            if len(rows) == len(texts) or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


def test_a_tampered_version_is_refused_and_the_old_one_keeps_serving(server: Server) -> None:
    with registry_for(server.config) as registry:
        head = Path(registry.get_version("tickets", 3).form("int8").artifact_path) / "model.onnx"  # the served form
        original = head.read_bytes()
        head.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        try:
            serving = httpx.get(f"{server.url}/readyz").json()["version"]
            registry.promote("tickets", 3, reason="try v3")
            deadline = time.monotonic() + 30
            while not [e for e in registry.audit.events("tickets:3") if e.event_type == "model_swap_refused"]:
                assert time.monotonic() < deadline, "no model_swap_refused event"
                time.sleep(0.1)
            with server.client() as client:
                assert client.post("/v1/predict", json={"texts": ["still up?"]}).json()["version"] == serving
                assert "steward_swap_refusals_total 1.0" in client.get("/metrics").text
            [refusal] = [e for e in registry.audit.events("tickets:3") if e.event_type == "model_swap_refused"]
            assert "sha256 mismatch" in refusal.payload["reason"]
        finally:
            head.write_bytes(original)
            registry.rollback("tickets", reason="leave v3 for the next test")


@pytest.mark.usefixtures("prefect_harness")
def test_served_traffic_is_monitored_from_the_prediction_log(
    three_versions: Path, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve → log → monitor: shifted texts sent to a server logging into its own database are flagged."""
    config = yaml.safe_load(three_versions.read_text())
    log_url = f"sqlite:///{three_versions.parent / 'predictions.db'}"
    config["serving"] = {"log_url": log_url, "log_text": True}
    served_config = three_versions.with_name("steward-served.yaml")
    served_config.write_text(yaml.safe_dump(config))
    shifted = _shifted_texts(random.Random(3), 120)
    with model_server(served_config, token_file) as served, served.client() as client:
        for start in range(0, len(shifted), 10):
            assert client.post("/v1/predict", json={"texts": shifted[start : start + 10]}).status_code == 200
        with PredictionLog.open(log_url) as log:
            deadline = time.monotonic() + 30
            while len(log.window("tickets", datetime.now(UTC) - timedelta(hours=1))) < len(shifted):
                assert time.monotonic() < deadline, "the prediction log did not receive every text"
                time.sleep(0.2)
    code, outcome = run_json(capsys, "monitor", "--config", str(served_config), "--current", "served",
                             "--since", "1h")
    assert code == 0 and outcome["finding"] == "drift" and outcome["current_scored"] == len(shifted)
    assert outcome["current"].startswith("served:tickets@")

    code, error = run_json(capsys, "monitor", "--config", str(served_config), "--current", "served",
                           "--since", "soon")
    assert code == 2 and "--since 'soon' is not a duration" in error["error"]


def test_the_log_writer_counts_what_an_unreachable_database_loses_and_keeps_running(three_versions: Path) -> None:
    from core.refs import ModelRef
    from steward import load_model
    from steward.server import Metrics, PredictionLogWriter, ServerSettings

    registry = f"sqlite:///{three_versions.parent / '.steward' / 'registry.db'}"
    predictor = load_model("tickets:1", registry=registry)
    settings = ServerSettings(ModelRef.parse("tickets@champion"), registry,
                              log_url="postgresql+psycopg2://nobody@127.0.0.1:9/none?connect_timeout=1")
    metrics = Metrics()
    writer = PredictionLogWriter(settings, metrics)
    writer.start()
    try:
        texts = ["printer jams", "vpn drops"]
        writer.submit(predictor, texts, predictor.predict(texts))
        deadline = time.monotonic() + 30
        while (metrics.registry.get_sample_value("steward_prediction_log_dropped_rows_total") or 0) < len(texts):
            assert time.monotonic() < deadline, "the lost rows were not counted"
            time.sleep(0.1)
        assert writer.running
    finally:
        writer.close()
    assert not writer.running
