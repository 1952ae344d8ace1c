"""A causal language model served: `steward serve-model` as a real process on a free loopback port, driven by the
official `openai` client (models, completions and chat, streamed and not, errors, the bearer token, batching,
metrics, the prediction log, the hot swap); `load_model` and `steward predict` on the same registered versions."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pandas as pd
import pytest
import yaml

from core.errors import BadInputError, CheckFailedError
from governance.prediction_log import PredictionLog
from steward.cli import QUIET_THIRD_PARTY_DEFAULTS, main
from tests.test_flow_language_model import _documents, registry_for, run_json, write_lm_project
from tests.test_model_server import Server, _wait_until_ready, free_port

TOKEN = "lm-s3cret"
POLL_SECONDS = 0.3
GREEDY = {"temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, prefect_harness: None) -> Path:
    """Two registered LoRA versions of `notes` (two `steward run`s on different corpora), v1 the champion."""
    root = tmp_path_factory.mktemp("lm-served")
    config = write_lm_project(root, tiny_llama_dir)
    assert main(["run", "--config", str(config)]) == 0
    write_lm_project(root, tiny_llama_dir, _documents(120, 2))
    assert main(["run", "--config", str(config)]) in (0, 1)  # registered either way; promoted or not
    with registry_for(config) as registry:
        assert registry.get_version("notes", 2).version.version == 2
        if registry.alias_version("notes", "champion").version != 1:
            registry.promote("notes", 1, reason="start the server on v1")
    return config


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lm-token") / "token"
    path.write_text(TOKEN + "\n")
    return path


@contextmanager
def lm_server(config: Path, token_file: Path) -> Iterator[Server]:
    """`steward serve-model --model notes@champion --config CONFIG` on a free loopback port, until the block ends."""
    port = free_port()
    log_path = config.with_suffix(".server.log")
    env = {**os.environ, **QUIET_THIRD_PARTY_DEFAULTS, "OMP_NUM_THREADS": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "steward.cli", "serve-model", "--model", "notes@champion", "--config", str(config),
             "--port", str(port), "--token-file", str(token_file), "--poll-seconds", str(POLL_SECONDS)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        served = Server(f"http://127.0.0.1:{port}", config, process)
        try:
            _wait_until_ready(served, log_path)
            yield served
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(two_versions: Path, token_file: Path) -> Iterator[Server]:
    with lm_server(two_versions, token_file) as served:
        yield served


def client_for(server: Server, token: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0, timeout=60)


def metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.split(" ")[0].split("{")[0] == name)


def logged_rows(url: str, prompts: set[str], count: int, timeout: float = 30) -> list:
    """The prediction log's rows for `notes` (those whose text is one of `prompts`, or with no text when
    `prompts` is empty), once `count` of them are there."""
    deadline = time.monotonic() + timeout
    with PredictionLog.open(url) as log:
        while True:
            rows = [row for row in log.window("notes", datetime.now(UTC) - timedelta(hours=1))
                    if (row.text in prompts if prompts else row.text is None)]
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


def test_models_lists_the_registered_name_and_version(server: Server) -> None:
    [model] = client_for(server).models.list().data
    assert (model.id, model.owned_by, model.object) == ("notes", "steward", "model")
    assert model.model_extra["version"] == 1 and model.created > 0


def test_a_completion_streamed_is_the_completion_not_streamed(server: Server) -> None:
    client = client_for(server)
    whole = client.completions.create(model="notes", prompt="the refund has been", **GREEDY)
    [choice] = whole.choices
    assert whole.id.startswith("cmpl-") and whole.model == "notes" and whole.system_fingerprint == "notes:1"
    assert choice.finish_reason in ("stop", "length") and whole.created > 0
    usage = whole.usage
    assert usage.completion_tokens <= GREEDY["max_tokens"] and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    chunks = list(client.completions.create(model="notes", prompt="the refund has been", stream=True,
                                            stream_options={"include_usage": True}, **GREEDY))
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == choice.text
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == choice.finish_reason
    assert chunks[-1].usage.model_dump() == usage.model_dump()
    assert {chunk.id for chunk in chunks} == {chunks[0].id} and chunks[0].id.startswith("cmpl-")

    # sampled with a seed: the same text again, and stop strings cut a stream where they cut the whole completion
    sampled = {"model": "notes", "prompt": "note 5:", "temperature": 1.0, "seed": 7, "max_tokens": 16}
    first = client.completions.create(**sampled).choices[0].text
    assert client.completions.create(**sampled).choices[0].text == first
    # a stop string from the middle of the text, ASCII: a character still being decoded could differ at a cut
    stop = next(first[i : i + 2] for i in range(len(first) // 2, len(first) - 1) if first[i : i + 2].isascii())
    cut = client.completions.create(stop=[stop, "never"], **sampled).choices[0]
    assert (cut.text, cut.finish_reason) == (first[: first.find(stop)], "stop")
    streamed = client.completions.create(stop=[stop, "never"], stream=True, **sampled)
    assert "".join(chunk.choices[0].text for chunk in streamed) == cut.text


def test_a_list_of_prompts_gets_a_choice_each(server: Server) -> None:
    response = client_for(server).completions.create(model="notes", prompt=["my order", "the ticket is", ""],
                                                     **GREEDY)
    assert [choice.index for choice in response.choices] == [0, 1, 2]
    assert response.usage.prompt_tokens >= 3


def test_chat_applies_the_template_streamed_or_not(server: Server) -> None:
    client = client_for(server)
    messages = [{"role": "system", "content": "You answer about orders."},
                {"role": "user", "content": [{"type": "text", "text": "where is my order"}]}]
    whole = client.chat.completions.create(model="notes", messages=messages, max_completion_tokens=10,
                                           temperature=0)
    [choice] = whole.choices
    assert whole.id.startswith("chatcmpl-") and whole.object == "chat.completion"
    assert choice.message.role == "assistant" and whole.system_fingerprint == "notes:1"
    assert whole.usage.prompt_tokens > 10  # the template's turns are tokens too
    assert whole.usage.completion_tokens <= 10

    chunks = list(client.chat.completions.create(model="notes", messages=messages, max_tokens=10, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


def test_a_wrong_or_missing_token_is_refused(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        client_for(server, "wrong").models.list()
    assert refused.value.body["code"] == "invalid_api_key"
    missing = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x"})
    assert missing.status_code == 401 and missing.json()["error"]["message"] == "missing or wrong bearer token"
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready", "version": 1}


@pytest.mark.parametrize(("request_args", "param", "message"), [
    ({"prompt": "x", "n": 2}, "n", "'n' must be 1"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens", "at least 1"),
    ({"prompt": "x", "max_tokens": 10_000}, "max_tokens", "over this server's limit of 512"),
    ({"prompt": [1, 2, 3]}, "prompt", "not token ids"),
    ({"prompt": "x", "temperature": 3}, "temperature", "from 0 to 2"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", "over the limit of 4"),
    ({"prompt": "x" * 10_001}, "prompt", "10,001 characters"),
    ({"prompt": ["a", "b"], "stream": True}, "prompt", "a stream takes one prompt"),
    ({"messages": []}, "messages", "non-empty list"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "must be one of system"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content", "a string or a list of text parts"),
])
def test_a_bad_request_is_a_400_in_openais_shape_with_one_line(
    server: Server, request_args: dict, param: str, message: str
) -> None:
    client = client_for(server)
    create = client.chat.completions.create if "messages" in request_args else client.completions.create
    with pytest.raises(openai.BadRequestError) as refused:
        create(model="notes", **request_args)
    error = refused.value.body
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert message in error["message"] and "\n" not in error["message"]


def test_an_unknown_model_a_bad_body_and_an_unknown_route_are_refused_in_openais_shape(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client_for(server).completions.create(model="gpt-4o", prompt="x")
    assert missing.value.body["code"] == "model_not_found" and "serves \"notes\"" in missing.value.body["message"]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    responses = {
        400: httpx.post(f"{server.url}/v1/completions", content=b"{not json", headers=headers),
        413: httpx.post(f"{server.url}/v1/completions", content=b'{"prompt": "' + b"z" * 1_000_001 + b'"}',
                        headers=headers),
        404: httpx.get(f"{server.url}/v1/engines", headers=headers),
    }
    for status, response in responses.items():
        assert response.status_code == status
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_concurrent_requests_are_all_answered_and_batched(server: Server) -> None:
    client = client_for(server)
    prompts = [f"note {index}: the order" for index in range(8)]

    def ask(prompt: str, start: threading.Barrier) -> openai.types.Completion:
        start.wait()
        return client.completions.create(model="notes", prompt=prompt, temperature=0, max_tokens=48)

    for _ in range(5):  # the requests of a round arrive while the first one generates, so they share a call
        calls = metric(server, "steward_batch_texts_count")
        prompts_generated = metric(server, "steward_batch_texts_sum")
        start = threading.Barrier(len(prompts))
        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
            answers = list(pool.map(ask, prompts, [start] * len(prompts)))
        assert all(answer.choices[0].finish_reason in ("stop", "length") for answer in answers)
        assert all(answer.usage.prompt_tokens > 0 for answer in answers)
        new_calls = metric(server, "steward_batch_texts_count") - calls
        if new_calls < metric(server, "steward_batch_texts_sum") - prompts_generated:
            break
    else:
        pytest.fail("no generate call ever took more than one request")


def test_metrics_count_generated_tokens_and_time_to_first_token(server: Server) -> None:
    before = metric(server, "steward_generated_tokens_total")
    answer = client_for(server).completions.create(model="notes", prompt="the customer was", **GREEDY)
    assert metric(server, "steward_generated_tokens_total") - before == answer.usage.completion_tokens
    assert metric(server, "steward_time_to_first_token_seconds_count") >= 1
    assert metric(server, "steward_requests_total") > 0 and metric(server, 'steward_served_version') == 1


def test_the_prediction_log_has_prompts_and_completions(server: Server, two_versions: Path) -> None:
    prompts = ["the account was", "the invoice is"]
    answer = client_for(server).completions.create(model="notes", prompt=prompts, **GREEDY)
    rows = logged_rows(f"sqlite:///{two_versions.parent / '.steward' / 'registry.db'}", set(prompts), 2)
    by_prompt = {row.text: row for row in rows}
    for choice, prompt in zip(answer.choices, prompts, strict=True):
        row = by_prompt[prompt]
        assert (row.label, row.version, row.completion) == (choice.finish_reason, 1, choice.text)
    assert len({row.request_id for row in rows}) == 1


def test_without_log_text_no_raw_text_is_logged(two_versions: Path, token_file: Path) -> None:
    config = yaml.safe_load(two_versions.read_text())
    log_url = f"sqlite:///{two_versions.parent / 'quiet-predictions.db'}"
    config["serving"] = {"log_url": log_url, "log_text": False}
    quiet = two_versions.with_name("steward-quiet.yaml")
    quiet.write_text(yaml.safe_dump(config))
    with lm_server(quiet, token_file) as served:
        client = client_for(served)
        client.completions.create(model="notes", prompt="a private note", **GREEDY)
        client.chat.completions.create(model="notes", messages=[{"role": "user", "content": "private"}], **GREEDY)
        rows = logged_rows(log_url, set(), 2)
    assert len(rows) == 2
    assert all(row.text is None and row.completion is None and row.score > 0 for row in rows)


def test_load_model_gives_a_generator_of_the_version(two_versions: Path) -> None:
    from steward import load_model
    from tasks.language_model import Generator

    registry = f"sqlite:///{two_versions.parent / '.steward' / 'registry.db'}"
    model = load_model("notes@champion", registry=registry)
    assert isinstance(model, Generator)
    assert (model.identity.name, model.version, model.identity.alias, model.name) == ("notes", 1, "champion", "notes")
    [done] = model.generate(["the delivery"], max_new_tokens=5)
    assert done.completion_tokens <= 5 and done.prompt_tokens > 0
    with pytest.raises(BadInputError, match="causal language model, served only as fp32"):
        load_model("notes:1", registry=registry, form="int8")


def test_a_corrupted_adapter_is_refused_in_one_line_naming_the_file(two_versions: Path) -> None:
    from steward import load_model

    with registry_for(two_versions) as registry:
        adapter = Path(registry.get_version("notes", 2).version.artifact_path) / "adapter_model.safetensors"
    original = adapter.read_bytes()
    adapter.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        with pytest.raises(CheckFailedError) as refused:
            load_model("notes:2", registry=f"sqlite:///{two_versions.parent / '.steward' / 'registry.db'}")
    finally:
        adapter.write_bytes(original)
    message = str(refused.value)
    assert "adapter_model.safetensors: sha256 mismatch" in message and "\n" not in message


def test_predict_writes_perplexity_or_completions(two_versions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = two_versions.parent / "texts.csv"
    pd.DataFrame({"text": ["the refund was late.", "my order is broken.", "the ticket"]}).to_csv(texts, index=False)
    code, scored = run_json(capsys, "predict", "--config", str(two_versions), "--model", "notes@champion",
                            "--input", str(texts))
    assert code == 0 and scored["rows"] == 3 and scored["label_counts"] == {}
    frame = pd.read_csv(scored["output"])
    assert list(frame.columns) == ["text", "perplexity", "model", "version", "form"]
    assert (frame["perplexity"] > 1).all() and set(frame["version"]) == {1}

    out = two_versions.parent / "completions.jsonl"
    code, generated = run_json(capsys, "predict", "--config", str(two_versions), "--model", "notes:1", "--input",
                               str(texts), "--generate", "--max-new-tokens", "4", "--output", str(out))
    assert code == 0 and sum(generated["label_counts"].values()) == 3
    frame = pd.read_json(out, lines=True)
    assert list(frame.columns) == ["text", "completion", "finish_reason", "model", "version", "form"]
    assert set(frame["finish_reason"]) <= {"stop", "length"}


def test_promotion_swaps_the_served_version(server: Server) -> None:
    client = client_for(server)
    with registry_for(server.config) as registry:
        registry.promote("notes", 2, reason="v2 is better")
    try:
        deadline = time.monotonic() + 60
        while client.models.list().data[0].model_extra["version"] != 2:
            assert time.monotonic() < deadline, "the server did not swap to v2"
            time.sleep(0.1)
        answer = client.completions.create(model="notes", prompt="the refund", **GREEDY)
        assert answer.system_fingerprint == "notes:2"
        assert metric(server, "steward_swaps_total") == 1 and metric(server, "steward_served_version") == 2
        with registry_for(server.config) as registry:
            [swapped] = [e for e in registry.audit.events("notes") if e.event_type == "model_swapped"]
            assert (swapped.payload["from_version"], swapped.payload["to_version"]) == (1, 2)
    finally:
        with registry_for(server.config) as registry:
            registry.rollback("notes", reason="back to v1")
