"""`steward serve-model`: a registered classifier over HTTP (FastAPI + uvicorn), following its alias.

(FastAPI resolves route annotations at module level, so it is imported there; only serve-model imports this.)
A causal language model is served by `steward.openai_server` instead, which reuses this module's alias follower
(`ServedModel`), `Metrics`, bearer-token middleware (`GuardAndMeasure`) and `PredictionLogWriter`.

Routes: `POST /v1/predict {"texts": [...]}` -> `{"model", "version", "predictions": [{"label", "score",
"probabilities"}]}`; `POST /v1/explain {"texts": [...]}` -> `{"model", "version", "explanations": [{"text",
"label", "score", "tokens", "spans", "attributions", "delta"}]}` (integrated gradients, `tasks/explain.py`; each
request on a worker thread of its own, not batched with others nor logged); `GET /v1/model`; `GET /healthz` (the
process is up); `GET /readyz` (a model is loaded); `GET /metrics` (Prometheus text format). With a token
(STEWARD_API_TOKEN or --token-file) every route but the health checks wants `Authorization: Bearer <token>`.

Open Inference Protocol v2 (KServe's and Triton's REST data plane) beside it: `GET /v2` (server metadata),
`/v2/health/live` and `/v2/health/ready` (open, like the health checks), `GET /v2/models/{name}` (metadata: input
`text` BYTES [-1]; outputs `label` BYTES [-1] and `probabilities` FP32 [-1, classes], the classes in the order of
its `labels`), `GET /v2/models/{name}/ready`, `POST /v2/models/{name}/infer`: one BYTES input tensor `text` of
shape [n] or [n, 1], its texts as a flat JSON `data` list or in the binary tensor extension's layout (each element
a 4-byte little-endian length and its UTF-8 bytes, after the JSON header that `Inference-Header-Content-Length`
measures); the answer is JSON either way (`binary_data_output` is not honoured: clients read JSON outputs too),
with `label` (shape [n]) and `probabilities` (shape [n, classes], row-major flat data) or those `outputs` asked for
by name, `model_version` the version that answered. `{name}` other than the served model's is a 404. Both APIs
take the same path to a prediction (`Serving.answer`): micro-batched, logged, limited and measured alike.

`/openapi.json` describes every body with pydantic models built from the limits (`maxItems` = max_texts,
`maxLength` = max_text_chars), the error responses and, with a token, the bearer scheme. The routes still read
the body themselves, counting its bytes as it arrives, then validate it.

- Micro-batching: requests that arrive while a forward pass runs are scored together in the next pass
  (requests join it while it holds fewer than `max_batch_texts` texts; a request is never split); each
  request gets its own rows back, and one whose texts fail is retried alone so it fails no other. A
  request on an idle server is scored at once.
- Hot swap: a background thread reads the alias every `poll_seconds` (one indexed query). When it moved, the
  new version is loaded beside the old, its files checked against the registry's sha256s and warmed up with
  one prediction, then swapped in with one assignment. A batch holds the predictor it started with, so
  in-flight requests finish on the old version and every response names the version that answered. A
  version that fails its checksum or warm-up is refused (log line, audit event `model_swap_refused`,
  `steward_swap_refusals_total`) and the old one keeps serving.
- Prediction log: with `serving.log_predictions` each answered text (with `serving.log_text`, the text
  itself), its label, probabilities, version and time go to a queue that a writer thread inserts into SQL in
  batches, off the request path; old rows are deleted after `serving.log_retention`.
- Bad input, to every route alike, gets a 4xx with `{"error": "<one line>"}`: a body over `max_body_bytes`
  (413, counted while it is read), not JSON (400), a body the schema refuses: no `texts` list, a non-string, too
  many texts, a text over `max_text_chars` or not valid Unicode (422); for v2 also a shape that does not fit the
  texts or an unknown output (400) and another model's name (404). The follower and the writer outlive a
  database that is away: they retry.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, Protocol, TypeVar

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError
from pydantic import create_model as pydantic_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import exception_line
from core.refs import ModelRef
from governance.events import ModelSwapped, ModelSwapRefused
from steward import __version__
from steward.loading import predictor_for

if TYPE_CHECKING:
    from governance.records import ModelVersionDetail, ServedPredictionIn
    from tasks.pii import Scanner
    from tasks.predict import ModelIdentity, Prediction, Predictor

log = logging.getLogger("steward.server")
WARM_UP_TEXT = "warm-up"


@dataclass(frozen=True)
class ServerSettings:
    ref: ModelRef
    registry_url: str
    token: str | None = None
    max_texts: int = 256  # per request
    max_text_chars: int = 10_000
    max_body_bytes: int = 1_000_000
    max_batch_texts: int = 64  # per forward pass
    poll_seconds: float = 2.0
    log_url: str | None = None  # the prediction log's database; None: no prediction log
    log_text: bool = True  # the texts themselves, with personal data replaced by its type (tasks/pii.py)
    log_retention: timedelta = timedelta(days=30)
    phone_region: str = "US"  # national phone numbers in logged texts are read as this region's
    form: str | None = None  # --format; None: the fastest form of each version that passed compression
    max_new_tokens: int = 512  # a causal LM: the most tokens one completion may ask for


class RequestError(Exception):
    """A request the server refuses: its status code and one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Metrics:
    """The server's Prometheus metrics, in a registry of their own (two apps in one process do not clash)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("steward_requests", "HTTP requests by route and status (errors: 4xx, 5xx)",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("steward_request_latency_seconds", "request latency", ["route"],
                                 registry=self.registry)
        self.batch_texts = Histogram("steward_batch_texts", "texts per forward pass", registry=self.registry,
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.version = Gauge("steward_served_version", "the model version serving", ["model"],
                             registry=self.registry)
        self.swaps = Counter("steward_swaps", "versions swapped in", registry=self.registry)
        self.refusals = Counter("steward_swap_refusals", "versions refused on checksum or warm-up",
                                registry=self.registry)
        self.logged = Counter("steward_prediction_log_rows", "rows written to the prediction log",
                              registry=self.registry)
        self.log_failures = Counter("steward_prediction_log_dropped_rows",
                                    "rows the prediction log could not take (queue full or database error)",
                                    registry=self.registry)


class Servable(Protocol):
    """What the follower needs of a loaded version: a `Predictor` or a `RegisteredGenerator`."""

    identity: ModelIdentity

    @property
    def version(self) -> int: ...


Model = TypeVar("Model", bound=Servable)


def warmed_predictor(detail: ModelVersionDetail, settings: ServerSettings) -> Predictor:
    """A classifier version loaded (files checked) and warmed up with one prediction: what a swap serves."""
    candidate = predictor_for(detail, settings.ref.alias, settings.form)
    candidate.predict([WARM_UP_TEXT])
    return candidate


class ServedModel(Generic[Model]):
    """The model version now serving, and the alias follower that swaps it. `load` turns a version into a model
    that is ready to serve (files verified, warmed up), raising when it cannot."""

    def __init__(self, settings: ServerSettings, model: Model, metrics: Metrics,
                 load: Callable[[ModelVersionDetail], Model]) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.load = load
        self.refused: set[int] = set()  # versions that failed; tried again only after the alias moves away
        self._stop = threading.Event()
        metrics.version.labels(model.identity.name).set(model.version)

    def follow(self) -> threading.Thread:
        thread = threading.Thread(target=self._poll, name="steward-alias-follower", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        """Check the alias every `poll_seconds`; a registry that is away is retried at the next poll (the
        handle is reopened), never a reason to stop following or to refuse a version."""
        from governance.registry import Registry

        registry = None
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                registry = registry or Registry.open(self.settings.registry_url)
                self.check_alias(registry)
            except Exception as exc:
                log.warning("steward serve-model: alias check failed, retrying: %s", exception_line(exc))
                if registry is not None:
                    registry.close()
                registry = None
        if registry is not None:
            registry.close()

    def check_alias(self, registry) -> None:
        """Swap to the version the alias points at now, unless it is the one serving or was refused."""
        ref = self.settings.ref
        if ref.alias is None:
            return
        record = registry.alias_version(ref.name, ref.alias)
        if record is None or record.version == self.model.version:
            self.refused.clear()
            return
        if record.version in self.refused:
            return
        detail = registry.get_version(ref.name, record.version)  # a registry error here is retried, not refused
        try:
            candidate = self.load(detail)
        except MemoryError:
            raise
        except Exception as exc:  # the version's files: checksum, format, or a failed warm-up
            self._refuse(registry, record.version, exc)
            return
        previous, self.model = self.model.version, candidate
        self.metrics.swaps.inc()
        self.metrics.version.labels(ref.name).set(candidate.version)
        registry.audit.append(f"{ref.name}:{candidate.version}",
                              ModelSwapped(ref.alias, previous, candidate.version, candidate.identity.form))
        log.warning("steward serve-model: now serving %s v%d (was v%d)", ref.name, candidate.version, previous)

    def _refuse(self, registry, version: int, exc: Exception) -> None:
        reason = exception_line(exc)
        self.refused.add(version)
        self.metrics.refusals.inc()
        registry.audit.append(f"{self.settings.ref.name}:{version}",
                              ModelSwapRefused(self.settings.ref.alias, self.model.version, reason))
        log.warning("steward serve-model: refused %s v%d, still serving v%d: %s", self.settings.ref.name, version,
                    self.model.version, reason)


class PredictionLogWriter:
    """Inserts served predictions in batches from a thread of its own; the request path only enqueues."""

    FLUSH_ROWS = 500
    FLUSH_SECONDS = 0.5
    PURGE_SECONDS = 3600.0
    QUEUE_ROWS = 100_000  # beyond this (the database is down or slow) rows are dropped and counted

    def __init__(self, settings: ServerSettings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.queue: queue.Queue[ServedPredictionIn] = queue.Queue(self.QUEUE_ROWS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steward-prediction-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def submit(self, predictor: Predictor, texts: list[str], predictions: list[Prediction]) -> None:
        self.submit_answers(predictor.identity, texts,
                            [(p.label, p.score, p.probabilities, None) for p in predictions])

    def submit_answers(self, identity: ModelIdentity, texts: list[str],
                       answers: list[tuple[str, float, dict[str, Any], str | None]]) -> None:
        """One row per text and its (label, score, probabilities, completion) answer, as one request; the text and
        the completion themselves only with `serving.log_text`."""
        from governance.records import ServedPredictionIn

        served_at, request_id = datetime.now(UTC), uuid.uuid4().hex
        for text, (label, score, probabilities, completion) in zip(texts, answers, strict=True):
            keep = self.settings.log_text
            row = ServedPredictionIn(identity.name, identity.version, served_at, request_id,
                                     _storable(text) if keep else None, label, score, probabilities,
                                     _storable(completion) if keep and completion is not None else None)
            try:
                self.queue.put_nowait(row)
            except queue.Full:
                self.metrics.log_failures.inc()

    def close(self) -> None:
        """Stop after writing what is queued."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        """Write batches until stopped; a database that is away is reopened at the next batch (meanwhile rows
        wait in the queue, and beyond it are counted as dropped), so the thread never dies of it."""
        from governance.prediction_log import PredictionLog
        from tasks.pii import Scanner

        prediction_log, next_purge = None, time.monotonic()
        scanner = Scanner(self.settings.phone_region)
        while not (self._stop.is_set() and self.queue.empty()):
            rows = [_redacted(row, scanner) for row in self._take()]
            try:
                prediction_log = prediction_log or PredictionLog.open(self.settings.log_url)
                self.metrics.logged.inc(prediction_log.append(rows))
                if time.monotonic() >= next_purge:
                    prediction_log.purge(datetime.now(UTC) - self.settings.log_retention)
                    next_purge = time.monotonic() + self.PURGE_SECONDS
            except Exception as exc:
                self.metrics.log_failures.inc(len(rows))
                log.warning("steward serve-model: prediction log write failed (%d rows lost): %s", len(rows),
                            exception_line(exc))
                if prediction_log is not None:
                    prediction_log.close()
                prediction_log = None
                self._stop.wait(1.0)
        if prediction_log is not None:
            prediction_log.close()

    def _take(self) -> list[ServedPredictionIn]:
        rows: list[ServedPredictionIn] = []
        deadline = time.monotonic() + self.FLUSH_SECONDS
        while len(rows) < self.FLUSH_ROWS and (remaining := deadline - time.monotonic()) > 0:
            try:
                rows.append(self.queue.get(timeout=remaining))
            except queue.Empty:
                break
        return rows


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    """Collects concurrent requests into forward passes of up to `max_batch_texts` texts."""

    def __init__(self, served: ServedModel[Predictor], settings: ServerSettings, metrics: Metrics) -> None:
        self.served, self.settings, self.metrics = served, settings, metrics
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def predict(self, texts: list[str]) -> tuple[Predictor, list[Prediction]]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(texts, future))
        return await future

    async def run(self) -> None:
        """Score whatever is queued, then wait for more: at low load a request is scored at once, under load
        the requests that arrived during one forward pass are the next pass (no fixed wait either way)."""
        while True:
            batch = [await self.queue.get()]
            while sum(len(item.texts) for item in batch) < self.settings.max_batch_texts and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            await self._score(batch)

    async def _score(self, batch: list[_Pending]) -> None:
        predictor = self.served.model  # this batch's version, whatever a swap does meanwhile
        texts = [text for item in batch for text in item.texts]
        self.metrics.batch_texts.observe(len(texts))
        try:
            predictions = await asyncio.to_thread(predictor.predict, texts)
        except Exception as exc:
            if len(batch) > 1:  # one request's texts must not fail the others: each on its own
                for item in batch:
                    await self._score([item])
            elif not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        start = 0
        for item in batch:
            if not item.future.done():
                item.future.set_result((predictor, predictions[start : start + len(item.texts)]))
            start += len(item.texts)


def parse_json(body: bytes) -> Any:
    """The body's JSON value, or a 400 RequestError."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(400, "request body is not JSON (or nested or sized beyond what is parsed)") from None


def parse_texts(body: bytes, settings: ServerSettings) -> list[str]:
    """The request's texts, or a RequestError saying in one line what is wrong with it (the body's size is
    checked while it is read). Accepts exactly what `TextsRequest` (`request_models`) describes."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or "texts" not in payload:
        raise RequestError(422, 'request body must be a JSON object with "texts": a list of strings')
    texts = payload["texts"]
    if not isinstance(texts, list) or not texts:
        raise RequestError(422, '"texts" must be a non-empty list of strings')
    return check_texts(texts, settings, '"texts"')


def check_texts(texts: list[Any], settings: ServerSettings, field: str) -> list[str]:
    """`texts` when each is a string within the limits and valid Unicode, else a 422 naming the first that is not
    (`field`: what the request calls the list)."""
    if len(texts) > settings.max_texts:
        raise RequestError(422, f"{field} has {len(texts)} items, over the limit of {settings.max_texts}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(422, f"{field}[{index}] is {type(text).__name__}, not a string")
        if len(text) > settings.max_text_chars:
            raise RequestError(422, f"{field}[{index}] has {len(text):,} characters, over the limit of "
                                    f"{settings.max_text_chars:,}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(422, f"{field}[{index}] is not valid Unicode (a lone surrogate)") from None
    return texts


def validated(model: type[BaseModel], payload: Any) -> Any:
    """`payload` (parsed JSON) as `model`, or a 422 RequestError with the first problem in one line."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestError(422, error_line(exc.errors(include_url=False))) from None


def error_line(errors: Sequence[Mapping[str, Any]]) -> str:
    """Pydantic's (or FastAPI's) first validation error as `where: what`, on one line."""
    first = errors[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return " ".join(f"{where or 'request body'}: {first['msg']}{more}".split())


async def body_within(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit`, declared length or not."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request body is over the limit of {limit:,} bytes")
    return bytes(body)


# The API's bodies, as /openapi.json describes them. Responses are written as plain dicts (no serialization
# cost on the request path); these models document them, and the request models validate what is read.

Parameters = dict[str, StrictBool | StrictInt | StrictFloat | StrictStr]  # the protocol's $parameters
EXAMPLE_TEXTS = ["printer jams on floor 3", "vpn drops at night"]


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class ErrorBody(BaseModel):
    """Every refusal, of either API: 4xx (and the rare 500) alike."""

    model_config = _examples({"error": '"texts" must be a non-empty list of strings'})
    error: str = Field(description="what is wrong, in one line")


class PredictionOut(BaseModel):
    label: str
    score: float = Field(description="the calibrated probability of `label`")
    probabilities: dict[str, float] = Field(description="every class's calibrated probability")


class PredictResponse(BaseModel):
    model_config = _examples({"model": "tickets", "version": 3, "predictions": [
        {"label": "hardware", "score": 0.91, "probabilities": {"hardware": 0.91, "network": 0.09}}]})
    model: str
    version: int = Field(description="the version that answered")
    predictions: list[PredictionOut]


class ExplanationOut(BaseModel):
    text: str
    label: str
    score: float
    tokens: list[str]
    spans: list[tuple[int, int]] = Field(description="each token's [start, end) in `text`")
    attributions: list[float]
    delta: float = Field(description="integrated gradients' convergence delta")


class ExplainResponse(BaseModel):
    model_config = _examples({"model": "tickets", "version": 3, "explanations": [
        {"text": "printer jams", "label": "hardware", "score": 0.9, "tokens": ["printer", "jams"],
         "spans": [[0, 7], [8, 12]], "attributions": [1.2, 0.4], "delta": 0.001}]})
    model: str
    version: int
    explanations: list[ExplanationOut]


class ModelInfo(BaseModel):
    model_config = _examples({"name": "tickets", "version": 3, "alias": "champion", "form": "int8",
                              "labels": ["hardware", "network"], "sha256": {"model.onnx": "ab12…"},
                              "metrics": {"macro_f1": 0.91}})
    name: str
    version: int
    alias: str | None
    form: str
    labels: list[str]
    sha256: dict[str, str]
    metrics: dict[str, float]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    version: int


class ServerMetadata(BaseModel):
    model_config = _examples({"name": "steward", "version": __version__, "extensions": []})
    name: str
    version: str
    extensions: list[str]


class Liveness(BaseModel):
    live: bool


class ServerReadiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size")
    labels: list[str] | None = Field(None, description="`probabilities` only: the class of each column, in order "
                                                       "(not part of the protocol)")


class ModelMetadata(BaseModel):
    model_config = _examples({
        "name": "tickets", "versions": ["3"], "platform": "steward_int8",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2],
                     "labels": ["hardware", "network"]}]})
    name: str
    versions: list[str] = Field(description="the version serving now")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestedOutput(BaseModel):
    name: str = Field(description="`label` or `probabilities`", examples=["label"])
    parameters: Parameters | None = None


class OutputTensor(BaseModel):
    name: Literal["label", "probabilities"]
    datatype: Literal["BYTES", "FP32"]
    shape: list[int]
    data: list[str] | list[float] = Field(description="row-major, flat")


class InferResponse(BaseModel):
    model_config = _examples({"model_name": "tickets", "model_version": "3", "id": "42", "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["hardware"]},
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.91, 0.09]}]})
    model_name: str
    model_version: str = Field(description="the version that answered")
    id: str | None = Field(None, description="the request's `id`, when it gave one")
    outputs: list[OutputTensor]


@dataclass(frozen=True)
class RequestModels:
    """The request bodies, with this server's limits in their schemas."""

    texts: type[BaseModel]
    infer: type[BaseModel]


def request_models(settings: ServerSettings) -> RequestModels:
    """Built per app, as the limits are its settings'. Both accept exactly what the routes accept (`parse_texts`;
    for v2, all but what a schema cannot say: the shape's fit to the texts, the output names, lone surrogates)."""
    text = Annotated[str, Field(max_length=settings.max_text_chars)]
    texts = Annotated[list[text], Field(min_length=1, max_length=settings.max_texts)]
    texts_request = pydantic_model(
        "TextsRequest", __config__=_examples({"texts": EXAMPLE_TEXTS}),
        texts=(texts, Field(description="the texts to classify, each valid Unicode")))
    input_tensor = pydantic_model(
        "InferInputTensor",
        name=(Literal["text"], ...),
        shape=(Annotated[list[Annotated[StrictInt, Field(ge=1)]], Field(min_length=1, max_length=2)],
               Field(description="[n] or [n, 1], n the number of texts")),
        datatype=(Literal["BYTES"], ...),
        parameters=(Parameters | None, Field(None, description="`binary_data_size` when the texts follow the "
                                                               "JSON in the binary tensor layout")),
        data=(texts | None, Field(None, description="the texts, flat (absent when sent as binary data)")),
    )
    infer_request = pydantic_model(
        "InferRequest",
        __config__=_examples({"id": "42", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                                      "data": EXAMPLE_TEXTS}]}),
        id=(StrictStr | None, None),
        parameters=(Parameters | None, None),
        inputs=(Annotated[list[input_tensor], Field(min_length=1, max_length=1)], ...),
        outputs=(list[RequestedOutput] | None, Field(None, description="those to answer with (default: both)")),
    )
    return RequestModels(texts_request, infer_request)


def _prediction_json(prediction: Prediction) -> dict[str, Any]:
    return {"label": prediction.label, "score": prediction.score, "probabilities": prediction.probabilities}


@dataclass
class Serving:
    """What every route shares: the settings, the version serving, and the one path from texts to predictions
    (micro-batched, then logged) that /v1/predict and the v2 infer route both take."""

    settings: ServerSettings
    served: ServedModel[Predictor]
    batcher: MicroBatcher
    writer: PredictionLogWriter | None
    models: RequestModels
    follow_alias: bool = True

    async def answer(self, texts: list[str]) -> tuple[Predictor, list[Prediction]]:
        """The predictions for `texts` and the version that made them, sent to the prediction log."""
        answered_by, predictions = await self.batcher.predict(texts)
        if self.writer is not None:
            self.writer.submit(answered_by, texts, predictions)
        return answered_by, predictions

    def model_named(self, name: str) -> Predictor:
        """The version serving, when `name` is its model's; else a 404."""
        predictor = self.served.model
        if name != predictor.identity.name:
            raise RequestError(404, f"model {name[:100]!r} is not served here (this server serves "
                                    f"{predictor.identity.name!r})")
        return predictor

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(self.batcher.run())
        follower = self.served.follow() if self.follow_alias else None
        if self.writer is not None:
            self.writer.start()
        yield
        self.served.stop()
        worker.cancel()
        if self.writer is not None:
            self.writer.close()
        if follower is not None:
            follower.join(timeout=self.settings.poll_seconds + 5)


ERROR_DESCRIPTIONS = {
    400: "the body is not JSON, or (v2) its shape, outputs or binary data do not fit the model",
    401: "missing or wrong bearer token",
    404: "no such model here",
    413: "the body is over the size limit (counted while it is read)",
    422: "the body does not fit the schema (its limits included), or a text is not valid Unicode",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the error body."""
    return {code: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring `model` as the JSON request body (the route reads and validates it itself)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def create_app(settings: ServerSettings, predictor: Predictor, follow_alias: bool = True) -> FastAPI:
    """The app serving `predictor` (already loaded and verified), following `settings.ref`'s alias."""
    metrics = Metrics()
    served = ServedModel(settings, predictor, metrics, lambda detail: warmed_predictor(detail, settings))
    writer = PredictionLogWriter(settings, metrics) if settings.log_url else None
    serving = Serving(settings, served, MicroBatcher(served, settings, metrics), writer, request_models(settings),
                      follow_alias)
    name = predictor.identity.name
    app = FastAPI(title="Steward model server", version=__version__, lifespan=serving.lifespan,
                  description=f"Serves the text classifier `{settings.ref}`: Steward's /v1 API and the Open "
                              "Inference Protocol v2 (KServe, Triton) under /v2.")
    app.state.served = served
    open_routes = OPEN_ROUTES | V2_OPEN_ROUTES
    app.add_middleware(GuardAndMeasure, token=settings.token, metrics=metrics,
                       routes=KNOWN_ROUTES | v2_routes(name), open_routes=open_routes)
    _add_error_handlers(app)
    guarded = (401,) if settings.token else ()
    _add_v1_routes(app, serving, metrics, guarded)
    _add_v2_routes(app, serving, name, guarded)
    app.openapi = _openapi(app, [serving.models.texts, serving.models.infer],
                           open_routes if settings.token else None)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in the one shape `{"error": "<one line>"}`, FastAPI's and Starlette's own included."""

    @app.exception_handler(RequestError)
    async def refused(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": error_line(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:  # 404 and 405 of the router
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        log.error("steward serve-model: request failed: %s: %s", type(exc).__name__, exc)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


def _add_v1_routes(app: FastAPI, serving: Serving, metrics: Metrics, guarded: tuple[int, ...]) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    settings, served, body = serving.settings, serving.served, _json_body(serving.models.texts)
    refusals = _errors(400, *guarded, 413, 422)

    @app.post("/v1/predict", response_model=PredictResponse, responses=refusals, openapi_extra=body)
    async def predict(request: Request) -> JSONResponse:
        """Each text's label and calibrated probabilities, from the version named in the answer."""
        texts = parse_texts(await body_within(request, settings.max_body_bytes), settings)
        answered_by, predictions = await serving.answer(texts)
        return JSONResponse({"model": answered_by.identity.name, "version": answered_by.version,
                             "predictions": [_prediction_json(p) for p in predictions]})

    @app.post("/v1/explain", response_model=ExplainResponse, responses=refusals, openapi_extra=body)
    async def explain(request: Request) -> JSONResponse:
        """Each text's token attributions (integrated gradients) toward its predicted class."""
        texts = parse_texts(await body_within(request, settings.max_body_bytes), settings)
        predictor = served.model  # the version that explains, whatever a swap does meanwhile
        explanations = await asyncio.to_thread(predictor.explain, texts)
        return JSONResponse({"model": predictor.identity.name, "version": predictor.version,
                             "explanations": [explanation.to_json() for explanation in explanations]})

    @app.get("/v1/model", response_model=ModelInfo, responses=_errors(*guarded))
    async def model() -> JSONResponse:
        predictor = served.model  # one read: a swap meanwhile cannot mix two versions in the answer
        identity = predictor.identity
        return JSONResponse({"name": identity.name, "version": identity.version, "alias": identity.alias,
                             "form": identity.form, "labels": predictor.labels, "sha256": identity.sha256,
                             "metrics": identity.metrics})

    @app.get("/healthz", response_model=Health)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", response_model=Readiness)
    async def readyz() -> JSONResponse:
        return JSONResponse({"status": "ready", "version": served.model.version})

    prometheus_text = {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}

    @app.get("/metrics", response_class=Response, responses={200: prometheus_text, **_errors(*guarded)})
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


# Open Inference Protocol v2

V2_INPUT, V2_OUTPUTS = "text", ("label", "probabilities")
V2_OPEN_ROUTES = frozenset({"/v2/health/live", "/v2/health/ready"})
BINARY_HEADER = "inference-header-content-length"  # the binary tensor extension: the JSON part's length


def v2_routes(model_name: str) -> frozenset[str]:
    """The v2 paths this server answers (the model's name is fixed, so they are few: metrics labels)."""
    base = f"/v2/models/{model_name}"
    return frozenset({"/v2", *V2_OPEN_ROUTES, base, f"{base}/ready", f"{base}/infer"})


def _add_v2_routes(app: FastAPI, serving: Serving, model_name: str, guarded: tuple[int, ...]) -> None:
    settings = serving.settings
    # a default, not an Annotated alias: FastAPI resolves annotations in the module's namespace
    model = Path(description="the served model's name", examples=[model_name], json_schema_extra={"enum": [model_name]})

    @app.get("/v2", response_model=ServerMetadata, responses=_errors(*guarded))
    async def server_metadata() -> JSONResponse:
        return JSONResponse({"name": "steward", "version": __version__, "extensions": []})

    @app.get("/v2/health/live", response_model=Liveness)
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready", response_model=ServerReadiness)
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": True})  # the app exists only with a loaded, verified model

    @app.get("/v2/models/{name}", response_model=ModelMetadata, responses=_errors(*guarded, 404))
    async def model_metadata(name: str = model) -> JSONResponse:
        return JSONResponse(metadata_json(serving.model_named(name)))

    @app.get("/v2/models/{name}/ready", response_model=ModelReadiness, responses=_errors(*guarded, 404))
    async def model_ready(name: str = model) -> JSONResponse:
        return JSONResponse({"name": serving.model_named(name).identity.name, "ready": True})

    @app.post("/v2/models/{name}/infer", response_model=InferResponse,
              responses=_errors(400, *guarded, 404, 413, 422), openapi_extra=_json_body(serving.models.infer))
    async def infer(request: Request, name: str = model) -> JSONResponse:
        """Open Inference Protocol v2: one BYTES input `text` ([n] or [n, 1]; JSON `data` or binary tensor data);
        outputs `label` (BYTES [n]) and `probabilities` (FP32 [n, classes], flat row-major), always as JSON."""
        serving.model_named(name)
        header, blob = split_binary(await body_within(request, settings.max_body_bytes),
                                    request.headers.get(BINARY_HEADER))
        inference = validated(serving.models.infer, parse_json(header))
        texts = tensor_texts(inference.inputs[0], blob, settings)
        outputs = requested_outputs(inference.outputs)
        answered_by, predictions = await serving.answer(texts)
        return JSONResponse(infer_json(answered_by, predictions, inference.id, outputs))


def metadata_json(predictor: Predictor) -> dict[str, Any]:
    labels = predictor.labels
    return {"name": predictor.identity.name, "versions": [str(predictor.version)],
            "platform": f"steward_{predictor.identity.form}",
            "inputs": [{"name": V2_INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)], "labels": labels}]}


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The request's JSON part and the binary tensor data after it (none without the extension's header)."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise RequestError(400, f"Inference-Header-Content-Length {header_length[:30]!r} is not a length within "
                                f"the body's {len(body):,} bytes")
    return body[: int(header_length)], body[int(header_length) :]


def binary_texts(blob: bytes, size: Any) -> list[str]:
    """The BYTES elements in the binary tensor layout: each a 4-byte little-endian length, then its bytes."""
    if type(size) is not int or size != len(blob):
        raise RequestError(400, f"binary_data_size {str(size)[:30]} is not the {len(blob):,} bytes after the "
                                "JSON header")
    texts, offset = [], 0
    while offset < len(blob):
        length = int.from_bytes(blob[offset : offset + 4], "little")
        offset += 4
        if offset > len(blob) or offset + length > len(blob):
            raise RequestError(400, f"binary element {len(texts)} runs past the end of the data")
        try:
            texts.append(blob[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(422, f"binary element {len(texts)} is not UTF-8") from None
        offset += length
    return texts


def tensor_texts(tensor: Any, blob: bytes, settings: ServerSettings) -> list[str]:
    """The input tensor's texts (JSON `data` or binary), within the limits and fitting its `shape`."""
    size = (tensor.parameters or {}).get("binary_data_size")
    if (tensor.data is None) == (size is None):
        raise RequestError(422, 'inputs[0] needs its texts in "data" or binary data, one of the two')
    texts = check_texts(tensor.data if size is None else binary_texts(blob, size), settings, "inputs[0].data")
    if not texts:
        raise RequestError(422, "inputs[0] holds no texts")
    if tensor.shape[0] != len(texts) or tensor.shape[1:] not in ([], [1]):
        raise RequestError(400, f"inputs[0].shape {tensor.shape} does not fit its {len(texts)} texts: "
                                f"give [{len(texts)}] or [{len(texts)}, 1]")
    return texts


def requested_outputs(outputs: list[RequestedOutput] | None) -> tuple[str, ...]:
    """The outputs to answer with, in the order asked (all when none are named)."""
    if not outputs:
        return V2_OUTPUTS
    for output in outputs:
        if output.name not in V2_OUTPUTS:
            raise RequestError(400, f"unknown output {output.name[:100]!r}: this model's outputs are 'label' and "
                                    "'probabilities'")
    return tuple(dict.fromkeys(output.name for output in outputs))


def infer_json(predictor: Predictor, predictions: list[Prediction], request_id: str | None,
               outputs: tuple[str, ...]) -> dict[str, Any]:
    labels, rows = predictor.labels, len(predictions)
    tensors = {
        "label": lambda: {"name": "label", "datatype": "BYTES", "shape": [rows],
                          "data": [p.label for p in predictions]},
        "probabilities": lambda: {"name": "probabilities", "datatype": "FP32", "shape": [rows, len(labels)],
                                  "data": [p.probabilities[label] for p in predictions for label in labels]},
    }
    body: dict[str, Any] = {"model_name": predictor.identity.name, "model_version": str(predictor.version),
                            "outputs": [tensors[name]() for name in outputs]}
    if request_id is not None:
        body["id"] = request_id
    return body


def _openapi(app: FastAPI, bodies: list[type[BaseModel]], open_routes: frozenset[str] | None
             ) -> Callable[[], dict[str, Any]]:
    """`app.openapi` with the request bodies the routes read themselves, and with a token (`open_routes` given)
    the bearer scheme on every other route."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)  # FastAPI's own, cached on the app
            components = schema.setdefault("components", {})
            for model in bodies:
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.setdefault("schemas", {}).update(definition.pop("$defs", {}))
                components["schemas"][model.__name__] = definition
            _drop_fastapi_422(schema)
            if open_routes is not None:
                components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for path, operations in schema["paths"].items():
                    for operation in operations.values():
                        operation["security"] = [] if path in open_routes else [{"bearer": []}]
        return app.openapi_schema

    return openapi


def _drop_fastapi_422(schema: dict[str, Any]) -> None:
    """FastAPI documents a `{"detail": [...]}` 422 on every route with a parameter; a path parameter that is a
    plain string never fails validation, and this app writes its errors as `{"error"}` anyway."""
    fastapi_422 = "#/components/schemas/HTTPValidationError"
    for operations in schema["paths"].values():
        for operation in operations.values():
            response = operation["responses"].get("422", {})
            if response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref") == fastapi_422:
                del operation["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)


OPEN_ROUTES = frozenset({"/healthz", "/readyz"})
KNOWN_ROUTES = frozenset({"/v1/predict", "/v1/explain", "/v1/model", "/metrics", *OPEN_ROUTES})


def plain_error(message: str) -> dict[str, Any]:
    """This server's error body: `{"error": "<one line>"}`."""
    return {"error": message}


class GuardAndMeasure:
    """ASGI middleware: the bearer token on every route but the health checks, and the request metrics.
    (Plain ASGI: Starlette's BaseHTTPMiddleware costs a millisecond a request.) `routes` are the paths counted
    under their own name (any other is `other`, so label values stay bounded); `error_body` writes the 401's body
    in the app's error shape; `open_routes` want no token."""

    def __init__(self, app, token: str | None, metrics: Metrics, routes: frozenset[str] = KNOWN_ROUTES,
                 error_body: Callable[[str], dict[str, Any]] = plain_error,
                 open_routes: frozenset[str] = OPEN_ROUTES) -> None:
        self.app, self.token, self.metrics = app, token, metrics
        self.routes, self.error_body, self.open_routes = routes, error_body, open_routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        route = scope["path"] if scope["path"] in self.routes else "other"  # bounded label values

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.token and scope["path"] not in self.open_routes and not _authorised(scope, self.token):
                denied = JSONResponse(self.error_body("missing or wrong bearer token"), status_code=401,
                                      headers={"WWW-Authenticate": "Bearer"})
                await denied(scope, receive, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()  # errors: the 4xx and 5xx statuses
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def _authorised(scope, token: str) -> bool:
    headers = dict(scope.get("headers") or [])
    scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _redacted(row: ServedPredictionIn, scanner: Scanner) -> ServedPredictionIn:
    """The row with personal data in its text and completion replaced by its type, before anything stores it."""
    text = None if row.text is None else scanner.redact(row.text)[0]
    completion = None if row.completion is None else scanner.redact(row.completion)[0]
    return replace(row, text=text, completion=completion)


def _storable(text: str) -> str:
    return text.replace("\x00", "\ufffd")  # PostgreSQL's text holds no NUL
