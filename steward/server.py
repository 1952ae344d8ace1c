"""`steward serve-model`: a registered classifier over HTTP (FastAPI + uvicorn), following its alias.

(FastAPI resolves route annotations at module level, so it is imported there; only serve-model imports this.)
A causal language model is served by `steward.openai_server` instead, which reuses this module's alias follower
(`ServedModel`), `Metrics`, bearer-token middleware (`GuardAndMeasure`) and `PredictionLogWriter`.

Routes: `POST /v1/predict {"texts": [...]}` -> `{"model", "version", "predictions": [{"label", "score",
"probabilities"}]}`; `POST /v1/explain {"texts": [...]}` -> `{"model", "version", "explanations": [{"text",
"label", "score", "tokens", "spans", "attributions", "delta"}]}` (integrated gradients, `tasks/explain.py`; each
request on a worker thread of its own, not batched with others nor logged); `GET /v1/model`; `GET /healthz` (the
process is up); `GET /readyz` (a model is loaded); `GET /metrics` (Prometheus text format). With a token
(STEWARD_API_TOKEN or --token-file) every route but the two health checks wants `Authorization: Bearer <token>`.

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
- Bad input, to `/v1/predict` and `/v1/explain` alike, gets a 4xx with `{"error": "<one line>"}`: a body over
  `max_body_bytes` (413, counted while it is read), not JSON (400), no `texts` list, a non-string, too many
  texts, a text over `max_text_chars` or not valid Unicode (422). The follower and the writer outlive a
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
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from core.errors import exception_line
from core.refs import ModelRef
from governance.events import ModelSwapped, ModelSwapRefused
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
    checked while it is read)."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or "texts" not in payload:
        raise RequestError(422, 'request body must be a JSON object with "texts": a list of strings')
    texts = payload["texts"]
    if not isinstance(texts, list) or not texts:
        raise RequestError(422, '"texts" must be a non-empty list of strings')
    if len(texts) > settings.max_texts:
        raise RequestError(422, f'"texts" has {len(texts)} items, over the limit of {settings.max_texts}')
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(422, f'"texts"[{index}] is {type(text).__name__}, not a string')
        if len(text) > settings.max_text_chars:
            raise RequestError(422, f'"texts"[{index}] has {len(text):,} characters, over the limit of '
                                    f"{settings.max_text_chars:,}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(422, f'"texts"[{index}] is not valid Unicode (a lone surrogate)') from None
    return texts


async def body_within(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit`, declared length or not."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request body is over the limit of {limit:,} bytes")
    return bytes(body)


def _prediction_json(prediction: Prediction) -> dict[str, Any]:
    return {"label": prediction.label, "score": prediction.score, "probabilities": prediction.probabilities}


def create_app(settings: ServerSettings, predictor: Predictor, follow_alias: bool = True) -> FastAPI:
    """The app serving `predictor` (already loaded and verified), following `settings.ref`'s alias."""
    from contextlib import asynccontextmanager

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    metrics = Metrics()
    served = ServedModel(settings, predictor, metrics, lambda detail: warmed_predictor(detail, settings))
    batcher = MicroBatcher(served, settings, metrics)
    writer = PredictionLogWriter(settings, metrics) if settings.log_url else None

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        worker = asyncio.create_task(batcher.run())
        follower = served.follow() if follow_alias else None
        if writer is not None:
            writer.start()
        yield
        served.stop()
        worker.cancel()
        if writer is not None:
            writer.close()
        if follower is not None:
            follower.join(timeout=settings.poll_seconds + 5)

    app = FastAPI(title="Steward model server", lifespan=lifespan)
    app.state.served = served
    app.add_middleware(GuardAndMeasure, token=settings.token, metrics=metrics)

    @app.exception_handler(RequestError)
    async def refused(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        log.error("steward serve-model: request failed: %s: %s", type(exc).__name__, exc)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        texts = parse_texts(await body_within(request, settings.max_body_bytes), settings)
        answered_by, predictions = await batcher.predict(texts)
        if writer is not None:
            writer.submit(answered_by, texts, predictions)
        return JSONResponse({"model": answered_by.identity.name, "version": answered_by.version,
                             "predictions": [_prediction_json(p) for p in predictions]})

    @app.post("/v1/explain")
    async def explain(request: Request) -> JSONResponse:
        texts = parse_texts(await body_within(request, settings.max_body_bytes), settings)
        predictor = served.model  # the version that explains, whatever a swap does meanwhile
        explanations = await asyncio.to_thread(predictor.explain, texts)
        return JSONResponse({"model": predictor.identity.name, "version": predictor.version,
                             "explanations": [explanation.to_json() for explanation in explanations]})

    @app.get("/v1/model")
    async def model() -> JSONResponse:
        predictor = served.model  # one read: a swap meanwhile cannot mix two versions in the answer
        identity = predictor.identity
        return JSONResponse({"name": identity.name, "version": identity.version, "alias": identity.alias,
                             "form": identity.form, "labels": predictor.labels, "sha256": identity.sha256,
                             "metrics": identity.metrics})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return JSONResponse({"status": "ready", "version": served.model.version})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


OPEN_ROUTES = frozenset({"/healthz", "/readyz"})
KNOWN_ROUTES = frozenset({"/v1/predict", "/v1/explain", "/v1/model", "/metrics", *OPEN_ROUTES})


def plain_error(message: str) -> dict[str, Any]:
    """This server's error body: `{"error": "<one line>"}`."""
    return {"error": message}


class GuardAndMeasure:
    """ASGI middleware: the bearer token on every route but the health checks, and the request metrics.
    (Plain ASGI: Starlette's BaseHTTPMiddleware costs a millisecond a request.) `routes` are the paths counted
    under their own name (any other is `other`, so label values stay bounded); `error_body` writes the 401's body
    in the app's error shape."""

    def __init__(self, app, token: str | None, metrics: Metrics, routes: frozenset[str] = KNOWN_ROUTES,
                 error_body: Callable[[str], dict[str, Any]] = plain_error) -> None:
        self.app, self.token, self.metrics = app, token, metrics
        self.routes, self.error_body = routes, error_body

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
            if self.token and scope["path"] not in OPEN_ROUTES and not _authorised(scope, self.token):
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
