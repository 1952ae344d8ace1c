"""The Open Inference Protocol v2 on `steward serve-model`, driven by the real Triton client
(`tritonclient.http`) against a real server process on a free loopback port: health, metadata, inference equal
to /v1/predict's, the hot swap seen through `model_version`, bad requests and the bearer token.

The model is the tiny BERT with a fresh seeded head (no training: the answers only have to agree between the two
APIs), registered as `cues` v1 and v2 and served through `cues@champion`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from core.hashing import sha256_files
from governance.prediction_log import PredictionLog
from governance.registry import Registry
from steward.cli import QUIET_THIRD_PARTY_DEFAULTS
from tests.test_model_server import free_port

TOKEN = "v2-token"


def auth() -> dict[str, str]:
    """The token's header, a new dict each call: tritonclient adds Inference-Header-Content-Length to the headers
    it is given for a binary request, and would send it again with the next."""
    return {"Authorization": f"Bearer {TOKEN}"}


MODEL = "cues"
LABELS = ["neg", "neutral", "pos"]
TEXTS = ["the film was excellent", "terrible battery and a slow screen", "the cat sat on the mat"]


@dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:PORT
    registry: str  # the registry's URL (the prediction log is in it too)

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"} if token else {},
                            timeout=30)


def register_versions(root: Path, tiny_model_dir: Path, versions: int = 2) -> str:
    """`cues` v1..v`versions` (the tiny BERT, each with its own seeded head) in a new SQLite registry, v1 the
    champion; the registry's URL."""
    import torch

    from tasks.classifier import new_classifier, save_classifier
    from tasks.modeling import pick_device

    url = f"sqlite:///{root / 'registry.db'}"
    with Registry.open(url) as registry:
        for version in range(1, versions + 1):
            torch.manual_seed(version)
            folder = root / f"{MODEL}-v{version}"
            save_classifier(new_classifier(tiny_model_dir, LABELS, 64, "tiny-bert", pick_device()), folder)
            run = registry.start_run(kind="retrain", model_name=MODEL, config={"name": MODEL}, seed=version,
                                     code_version="test", package_versions={})
            registry.register_version(model_name=MODEL, run_id=run.id, artifact_path=str(folder),
                                      files=sha256_files(folder), base_model="tiny-bert")
        registry.promote(MODEL, 1, reason="serve v1 first")
    return url


@contextmanager
def serve_model(registry_url: str, root: Path) -> Iterator[Served]:
    """`steward serve-model --model cues@champion` with a token file, on a free loopback port, until the block
    ends."""
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    log_path = root / "server.log"
    env = {**os.environ, **QUIET_THIRD_PARTY_DEFAULTS, "OMP_NUM_THREADS": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "steward.cli", "serve-model", "--model", f"{MODEL}@champion", "--registry",
             registry_url, "--port", str(port), "--token-file", str(token_file), "--poll-seconds", "0.3"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        served = Served(f"http://127.0.0.1:{port}", registry_url)
        try:
            _wait_until_ready(served, process, log_path)
            yield served
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_until_ready(served: Served, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        try:
            if httpx.get(f"{served.url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    pytest.fail("the model server did not become ready in 90 s")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("v2")
    with serve_model(register_versions(root, tiny_model_dir), root) as server:
        yield server


@pytest.fixture
def client(served: Served) -> Iterator[triton.InferenceServerClient]:
    triton_client = triton.InferenceServerClient(url=served.address, network_timeout=30)
    try:
        yield triton_client
    finally:
        triton_client.close()


def _text_input(texts: list[str], shape: list[int] | None = None, binary: bool = False) -> triton.InferInput:
    tensor = triton.InferInput("text", shape or [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object).reshape(shape or [len(texts)]),
                               binary_data=binary)
    return tensor


def _json_outputs(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=False) for name in names]


def test_health_readiness_and_metadata(served: Served, client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()  # open, like /healthz and /readyz
    assert client.is_model_ready(MODEL, headers=auth())
    metadata = client.get_model_metadata(MODEL, headers=auth())
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == (MODEL, ["1"], "steward_fp32")
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                                   {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3], "labels": LABELS}]
    assert client.get_server_metadata(headers=auth()) == {"name": "steward", "version": "0.1.0", "extensions": []}


@pytest.mark.parametrize(("shape", "binary"), [(None, False), ([3, 1], False), (None, True)],
                         ids=["json", "json-n-by-1", "binary"])
def test_inference_equals_v1_predict(served: Served, client: triton.InferenceServerClient,
                                     shape: list[int] | None, binary: bool) -> None:
    outputs = None if binary else _json_outputs("label", "probabilities")  # none: binary_data_output is asked
    result = client.infer(MODEL, [_text_input(TEXTS, shape, binary)], outputs=outputs, request_id="r-7",
                          headers=auth())
    with served.client() as http:
        v1 = http.post("/v1/predict", json={"texts": TEXTS}).json()
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (MODEL, "1", "r-7")
    labels, probabilities = result.as_numpy("label"), result.as_numpy("probabilities")
    assert labels.shape == (3,) and probabilities.shape == (3, 3) and probabilities.dtype == np.float32
    assert list(labels) == [p["label"] for p in v1["predictions"]]
    expected = np.array([[p["probabilities"][label] for label in LABELS] for p in v1["predictions"]])
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)


def test_outputs_asked_by_name_are_the_only_ones(client: triton.InferenceServerClient) -> None:
    result = client.infer(MODEL, [_text_input(TEXTS[:2])], outputs=_json_outputs("probabilities"), headers=auth())
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]
    assert result.as_numpy("label") is None and result.as_numpy("probabilities").shape == (2, 3)
    assert "id" not in result.get_response()


def _refusal(client: triton.InferenceServerClient, *inputs: triton.InferInput, model: str = MODEL,
             outputs: list[triton.InferRequestedOutput] | None = None,
             headers: dict[str, str] | None = None) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, list(inputs), outputs=outputs or _json_outputs("label"),
                     headers=auth() if headers is None else headers)
    assert "\n" not in caught.value.message()
    return caught.value


def test_bad_inference_requests_are_refused_with_a_one_line_error(client: triton.InferenceServerClient) -> None:
    wrong_type = triton.InferInput("text", [1], "FP32")
    wrong_type.set_data_from_numpy(np.array([1.5], dtype=np.float32), binary_data=False)
    assert _refusal(client, wrong_type).status() == "422"
    wrong_name = _refusal(client, _text_input(["hi"]), model="nope")
    assert wrong_name.status() == "404" and "'nope' is not served here" in wrong_name.message()
    too_many = _refusal(client, _text_input(["x"] * 257))
    assert too_many.status() == "422" and "256" in too_many.message()
    assert _refusal(client).status() == "422"  # no inputs
    unknown = _refusal(client, _text_input(["hi"]), outputs=_json_outputs("logits"))
    assert unknown.status() == "400" and "unknown output 'logits'" in unknown.message()
    misfit = _refusal(client, _text_input(["a", "b", "c", "d"], [2, 2]))
    assert misfit.status() == "400" and "does not fit" in misfit.message()
    assert _refusal(client, _text_input(["hi"]), headers={}).status() == "401"


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "not JSON"),
    (b"[1]", 422, "request body"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES"}]}', 422, '"data" or binary data'),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [7]}]}', 422, "inputs[0].data[0]"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["\\ud800"]}]}', 422, "unicode"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["' + b"y" * 10_001 + b'"]}]}', 422,
     "at most 10000 characters"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["' + b"z" * 1_000_001 + b'"]}]}', 413,
     "over the limit of 1,000,000"),
])
def test_a_bad_body_gets_its_4xx_in_the_protocols_error_shape(served: Served, body: bytes, status: int,
                                                             message: str) -> None:
    with served.client() as http:
        response = http.post(f"/v2/models/{MODEL}/infer", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert set(response.json()) == {"error"} and message in response.json()["error"]


def test_bad_binary_data_is_refused(served: Served) -> None:
    header = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 9}}]}).encode()
    with served.client() as http:
        for blob, status, message in [(b"\x09\x00\x00\x00abcde", 400, "runs past the end"),
                                      (b"\x05\x00\x00\x00\xff\xfe\xfd\xfc\xfb", 422, "not UTF-8"),
                                      (b"\x01\x00\x00\x00a", 400, "binary_data_size 9 is not the 5 bytes")]:
            response = http.post(f"/v2/models/{MODEL}/infer", content=header + blob,
                                 headers={"Inference-Header-Content-Length": str(len(header))})
            assert response.status_code == status and message in response.json()["error"], response.text


def test_the_token_guards_the_v2_routes_but_the_health_checks(served: Served) -> None:
    with served.client(token=None) as http:
        for path in ("/v2", f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/ready"):
            assert http.get(path).status_code == 401 and "error" in http.get(path).json()
        assert http.post(f"/v2/models/{MODEL}/infer", json={}).status_code == 401
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").json() == {"ready": True}


def test_v2_answers_are_counted_and_logged_like_v1s(served: Served, client: triton.InferenceServerClient) -> None:
    texts = [f"logged through v2 {index}" for index in range(3)]
    client.infer(MODEL, [_text_input(texts)], outputs=_json_outputs("label"), headers=auth())
    with served.client() as http:
        metrics = http.get("/metrics").text
    assert f'steward_requests_total{{route="/v2/models/{MODEL}/infer",status="200"}}' in metrics
    assert "steward_batch_texts_count" in metrics
    deadline = time.monotonic() + 30
    with PredictionLog.open(served.registry) as log:
        while not set(texts) <= set(log.window_texts(MODEL, datetime.now(UTC) - timedelta(hours=1))):
            assert time.monotonic() < deadline, "the prediction log did not receive the v2 texts"
            time.sleep(0.2)


def test_a_promotion_changes_the_version_that_answers(served: Served, client: triton.InferenceServerClient) -> None:
    def version() -> str:
        result = client.infer(MODEL, [_text_input(TEXTS[:1])], outputs=_json_outputs("label"), headers=auth())
        return result.get_response()["model_version"]

    assert version() == "1"
    with Registry.open(served.registry) as registry:
        registry.promote(MODEL, 2, reason="v2 through the protocol")
    try:
        deadline = time.monotonic() + 30
        while version() != "2":
            assert time.monotonic() < deadline, "the server did not swap to v2"
            time.sleep(0.1)
        assert client.get_model_metadata(MODEL, headers=auth())["versions"] == ["2"]
    finally:
        with Registry.open(served.registry) as registry:
            registry.rollback(MODEL, reason="back to v1")
