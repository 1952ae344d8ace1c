"""`steward serve-model`'s own `/openapi.json`, fuzzed by schemathesis against a real server process on loopback
(with its token): every operation, with data its schema allows and data it forbids, must answer without a 5xx,
with a documented status, content type and body, and must refuse whatever the schema forbids.

Bounded: `MAX_EXAMPLES` generated cases per operation and generation mode, besides the schema's examples and
schemathesis's coverage cases (boundaries such as one text past `maxItems`); no stateful phase. The last test
prints how many requests were sent and how long it took (`pytest -s`, or `-rP`, shows it)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from schemathesis import checks

from tests.test_inference_protocol import Served, auth, register_versions, serve_model

MAX_EXAMPLES = 25
# schemathesis's statuses that refuse data, and 413: a body over max_body_bytes is refused while it is read,
# before its schema is looked at
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
CHECKS = [checks.not_a_server_error, checks.response_schema_conformance, checks.negative_data_rejection,
          checks.status_code_conformance, checks.content_type_conformance]


@dataclass
class Tally:
    """What the fuzzing sent, over the whole module."""

    started: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)  # by operation
    statuses: Counter[int] = field(default_factory=Counter)


TALLY = Tally()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("fuzz")
    with serve_model(register_versions(root, tiny_model_dir, versions=1), root) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(served: Served) -> schemathesis.BaseSchema:
    """The served schema, read with the token, as schemathesis generates from it."""
    config = schemathesis.Config.from_dict({
        "seed": 29,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none",
                       "with-security-parameters": False},  # the real token on every request, not made-up ones
        "phases": {"stateful": {"enabled": False}},
        "checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}},
    })
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", config=config, headers=auth(), timeout=30)
    TALLY.started = time.perf_counter()
    return schema


fuzzed = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy schemas read and rename `request.node._nodeid`, which pytest 9.2 no longer has
    (its node ids moved to `_id`); an attribute of that name lets them run (the subtests keep the test's id)."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@fuzzed.parametrize()
def test_every_operation_keeps_to_its_schema(case: schemathesis.Case) -> None:
    response = case.call_and_validate(headers=auth(), checks=CHECKS, timeout=60)
    TALLY.requests[case.operation.label] += 1
    TALLY.statuses[response.status_code] += 1


def test_the_fuzzing_reached_every_operation() -> None:
    if not TALLY.requests:
        pytest.skip("test_every_operation_keeps_to_its_schema did not run")
    seconds = time.perf_counter() - TALLY.started
    print(f"\nschemathesis: {sum(TALLY.requests.values())} requests to {len(TALLY.requests)} operations in "
          f"{seconds:.1f} s; statuses {dict(sorted(TALLY.statuses.items()))}")
    for operation, count in sorted(TALLY.requests.items()):
        print(f"  {operation}: {count}")
    assert len(TALLY.requests) == 12
    assert TALLY.statuses[200] > 0 and sum(n for status, n in TALLY.statuses.items() if 400 <= status < 500) > 0


def test_the_schema_documents_the_limits_the_bodies_and_the_errors(api_schema: schemathesis.BaseSchema) -> None:
    document = api_schema.raw_schema
    schemas = document["components"]["schemas"]
    texts = schemas["TextsRequest"]["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"], texts["items"]["maxLength"]) == (1, 256, 10_000)
    data = schemas["InferInputTensor"]["properties"]["data"]["anyOf"][0]
    assert (data["maxItems"], data["items"]["maxLength"]) == (256, 10_000)
    assert document["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert "HTTPValidationError" not in schemas  # FastAPI's {"detail"} shape is not what this server writes
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert "200" in operation["responses"], where
            assert bool(operation["security"]) == (path not in {"/healthz", "/readyz", "/v2/health/live",
                                                                 "/v2/health/ready"}), where
            for status, response in operation["responses"].items():
                if status != "200":
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"}, where
            if method == "post":
                assert operation["requestBody"]["required"], where
                assert {"400", "401", "413", "422"} <= set(operation["responses"]), where
    for name in ("TextsRequest", "InferRequest", "PredictResponse", "InferResponse", "ModelMetadata"):
        assert schemas[name]["examples"], name
