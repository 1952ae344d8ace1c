"""`steward serve-model` on a causal language model: an OpenAI-compatible API (FastAPI + uvicorn), following its
alias. The official `openai` client works against it (`OpenAI(base_url="http://HOST:PORT/v1", api_key=TOKEN)`).

Routes: `GET /v1/models` (the one model served: `id` is its registered name, `owned_by` "steward", plus its
`version`); `POST /v1/completions` (`prompt`: a string, or a list of strings with a choice each);
`POST /v1/chat/completions` (`messages` of role system, developer, user or assistant, written into one prompt by
the model's chat template); `GET /healthz`, `GET /readyz`, `GET /metrics`. Both completion routes take
`max_tokens` (chat: `max_completion_tokens` first; default 16 for completions, as OpenAI's, and the server's
limit `max_new_tokens` for chat), `temperature` (default 1; 0 is greedy), `seed`, `stop` (up to 4 strings), `n`
(1 only), `model` (when given it must be the served name, else 404) and `stream`. Responses carry `id`
(`cmpl-…`, `chatcmpl-…`), `created`, `model`, `usage`, each choice's `finish_reason`, and `system_fingerprint`:
`NAME:VERSION` of the version that answered, which is how a client sees a hot swap.

- Streaming (`stream: true`): server-sent events in OpenAI's chunk format, the last one `data: [DONE]`;
  `stream_options.include_usage` adds a chunk with the usage. Text comes from `Generator.stream` as it is
  generated; stop strings are applied here, holding back text that might begin one until it cannot. Its tokens
  are counted as the model's forward passes (one per generated token), since `Generator.stream` yields text
  only, so its text, usage and finish_reason are those of the same request not streamed, with two exceptions:
  after a stop string the count includes any token generated before the cut took effect, and a text the model
  ends with exactly its last allowed token reads "length". A client that goes away stops generation at the
  next token (and its stream is neither counted nor logged).
- Batching: non-streamed requests wait in one queue. A generate call takes the oldest request and every waiting
  one whose sampling matches it (max_tokens, temperature, stop, and the seed unless greedy), up to
  `max_batch_texts` prompts, never splitting a request; each gets its own completions back, and a request
  whose prompts fail is retried alone so that it fails no other. A sampled request with a seed runs alone:
  sampling draws from one random stream per call, so batch mates would change the answer its seed must
  reproduce; sampled requests without one share a fresh random seed. Generation runs in a worker thread, so the
  event loop stays responsive; one generation runs at a time in the process, streams included (a lock: torch's
  random generator is global), which costs little on a CPU-bound model.
- Hot swap, bearer token, request metrics: `steward.server`'s `ServedModel`, `GuardAndMeasure` and `Metrics`. A
  new version is verified and warmed up with one generated token before it is swapped in; a version that is not
  a causal language model is refused like one that fails its checksum. Also on /metrics:
  `steward_generated_tokens_total`, `steward_time_to_first_token_seconds` (until the first text of a stream;
  the whole generation when not streamed, since that is when the client sees its first token) and
  `steward_batch_texts` (here: prompts per generate call).
- Prediction log (`serving.log_predictions`): one row per answered prompt (for chat, the prompt as the template
  wrote it), in the classifier's table: `text` the prompt, `completion` what the model wrote, `label` the
  finish_reason, `score` the completion's tokens. With `serving.log_text: false` both texts are left out.
- Errors come in OpenAI's shape, `{"error": {"message": "<one line>", "type": "invalid_request_error", "param",
  "code"}}`: 400 for a body that is not a JSON object or a bad parameter (`param` names it), 401 for a missing
  or wrong token, 404 for an unknown model or route, 413 for a body over `max_body_bytes`, 500 (`server_error`)
  for a failure of the server's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from core.errors import BadInputError, exception_line
from steward.language_model import RegisteredGenerator, generator_for
from steward.server import (
    OPEN_ROUTES,
    WARM_UP_TEXT,
    GuardAndMeasure,
    Metrics,
    PredictionLogWriter,
    RequestError,
    ServedModel,
    ServerSettings,
    body_within,
    parse_json,
)
from tasks.language_model import Completion

if TYPE_CHECKING:
    from governance.records import ModelVersionDetail

log = logging.getLogger("steward.openai_server")

ROUTES = frozenset({"/v1/models", "/v1/completions", "/v1/chat/completions", "/metrics", *OPEN_ROUTES})
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
MAX_STOP_STRINGS = 4
CHAT_ROLES = ("system", "developer", "user", "assistant")
# torch's random generator is one per process, and sampling (and its seeding) uses it: one generation at a time.
GENERATION_LOCK = threading.Lock()


def openai_error(message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class InvalidRequest(RequestError):
    """A request refused in OpenAI's terms: the parameter at fault, and a code where OpenAI has one."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(status, message)
        self.param = param
        self.code = code


class GenerationMetrics(Metrics):
    """The server's metrics, and what generation adds."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        super().__init__()
        self.generated_tokens = Counter("steward_generated_tokens", "completion tokens generated",
                                        registry=self.registry)
        self.first_token = Histogram("steward_time_to_first_token_seconds",
                                     "seconds from a request's arrival to its first generated text",
                                     registry=self.registry,
                                     buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    seed: int | None
    stop: tuple[str, ...]

    def batch_key(self) -> Sampling | None:
        """Requests with equal keys may share a generate call; None: this one runs alone (see the module doc)."""
        if self.temperature == 0:
            return replace(self, seed=None)  # greedy: the seed changes nothing
        return None if self.seed is not None else self

    def call_seed(self) -> int:
        if self.temperature == 0:
            return 0
        return self.seed if self.seed is not None else secrets.randbelow(2**31)


def warmed_generator(detail: ModelVersionDetail, settings: ServerSettings) -> RegisteredGenerator:
    """A causal-LM version loaded (files checked) and warmed up with one generated token: what a swap serves."""
    candidate = generator_for(detail, settings.ref.alias, settings.form)
    with GENERATION_LOCK:
        candidate.generate([WARM_UP_TEXT], max_new_tokens=1)
    return candidate


@dataclass
class _Pending:
    prompts: list[str]
    sampling: Sampling
    future: asyncio.Future


class GenerationQueue:
    """Non-streamed requests, batched into generate calls by matching sampling (see the module doc)."""

    def __init__(self, served: ServedModel[RegisteredGenerator], settings: ServerSettings,
                 metrics: GenerationMetrics) -> None:
        self.served, self.settings, self.metrics = served, settings, metrics
        self._pending: deque[_Pending] = deque()
        self._arrived = asyncio.Event()

    async def generate(self, prompts: list[str], sampling: Sampling) -> tuple[RegisteredGenerator, list[Completion]]:
        """The completions of `prompts` in order, and the version that wrote them."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(prompts, sampling, future))
        self._arrived.set()
        return await future

    async def run(self) -> None:
        """Generate for whatever waits, then wait for more: at low load a request runs at once, under load the
        requests that arrived during one call are the candidates for the next (no fixed wait either way)."""
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._pending:
                await self._generate(self._take())

    def _take(self) -> list[_Pending]:
        """The oldest request and the waiting ones that can join its call, in arrival order; the rest keep theirs."""
        first = self._pending.popleft()
        batch, size, key = [first], len(first.prompts), first.sampling.batch_key()
        if key is None:
            return batch
        waiting: deque[_Pending] = deque()
        for item in self._pending:
            if item.sampling.batch_key() == key and size + len(item.prompts) <= self.settings.max_batch_texts:
                batch.append(item)
                size += len(item.prompts)
            else:
                waiting.append(item)
        self._pending = waiting
        return batch

    async def _generate(self, batch: list[_Pending]) -> None:
        model = self.served.model  # this batch's version, whatever a swap does meanwhile
        prompts = [prompt for item in batch for prompt in item.prompts]
        sampling = batch[0].sampling
        self.metrics.batch_texts.observe(len(prompts))
        try:
            completions = await asyncio.to_thread(
                _locked, model.generate, prompts, sampling.max_tokens, sampling.temperature, sampling.call_seed(),
                list(sampling.stop) or None,
            )
        except Exception as exc:
            if len(batch) > 1:  # one request's prompts must not fail the others: each on its own
                for item in batch:
                    await self._generate([item])
            elif not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        start = 0
        for item in batch:
            if not item.future.done():  # done: the client went away
                item.future.set_result((model, completions[start : start + len(item.prompts)]))
            start += len(item.prompts)


async def stream_completion(model: RegisteredGenerator, prompt: str,
                            sampling: Sampling) -> AsyncIterator[str | Completion]:
    """The completion's text in pieces as it is generated, cut at the first stop string, then the whole
    `Completion`. Generation runs in a thread of its own (holding the generation lock); leaving early stops
    it at its next token."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | Exception | None] = asyncio.Queue()
    reader_left = threading.Event()
    steps = [0]

    def post(item: str | Exception | None) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop closed: the server is stopping
            loop.call_soon_threadsafe(pieces.put_nowait, item)

    def produce() -> None:
        failure = None
        try:
            with GENERATION_LOCK, _forward_passes(model, steps):
                generation = model.stream(prompt, sampling.max_tokens, sampling.temperature, sampling.call_seed())
                try:
                    for piece in generation:
                        post(piece)
                        if reader_left.is_set():
                            break
                finally:
                    generation.close()  # ends generation (at its next token) and waits for its thread
        except Exception as exc:
            failure = exc
        post(failure)  # None: the end

    threading.Thread(target=produce, name="steward-stream", daemon=True).start()
    text, sent, cut = "", 0, None
    hold = max((len(string) for string in sampling.stop), default=1) - 1  # what may begin a stop string
    try:
        while (item := await pieces.get()) is not None:
            if isinstance(item, Exception):
                raise item
            text += item
            cut = _first_stop(text, sampling.stop, sent)
            if cut is not None:
                break
            if len(text) - hold > sent:
                yield text[sent : len(text) - hold]
                sent = len(text) - hold
    finally:
        reader_left.set()
    text = text if cut is None else text[:cut]
    if len(text) > sent:
        yield text[sent:]
    while cut is not None and (item := await pieces.get()) is not None:  # the count is whole once it ends
        if isinstance(item, Exception):
            raise item
    ended = cut is not None or steps[0] < sampling.max_tokens  # a stop string, or the model's end of text
    yield Completion(text, _prompt_tokens(model, prompt), steps[0], "stop" if ended else "length")


def _locked(function: Callable[..., Any], *args: Any) -> Any:
    with GENERATION_LOCK:
        return function(*args)


@contextlib.contextmanager
def _forward_passes(model: RegisteredGenerator, count: list[int]) -> Iterator[None]:
    """Counts the model's forward passes into `count[0]`: one per generated token when generating with a cache
    (the prompt's pass gives the first), the end-of-text token included, as `Completion.completion_tokens` counts."""

    def counted(*_: Any) -> None:
        count[0] += 1

    handle = model.model.register_forward_hook(counted)
    try:
        yield
    finally:
        handle.remove()


def _first_stop(text: str, stop: tuple[str, ...], start: int) -> int | None:
    """Where the first stop string begins in `text` at or after `start` (none can begin before: see `stream`)."""
    return min((index for index in (text.find(string, start) for string in stop) if index >= 0), default=None)


def _prompt_tokens(model: RegisteredGenerator, prompt: str) -> int:
    """The prompt's tokens as `Generator.generate` counts them: no special tokens added, an empty prompt one."""
    return len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"]) or 1


# ---- requests


def _describe(value: Any) -> str:
    """A value for an error message: JSON, one line, cut short."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _integer(payload: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = payload.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer, got {_describe(value)}", name)
    if value < low:
        raise InvalidRequest(f"'{name}' must be at least {low}, got {value}", name)
    if value > high:
        raise InvalidRequest(f"'{name}' is {value:,}, over this server's limit of {high:,}", name)
    return value


def _sampling(payload: dict[str, Any], settings: ServerSettings, token_keys: tuple[str, ...],
              default_tokens: int) -> Sampling:
    key = next((key for key in token_keys if payload.get(key) is not None), token_keys[0])
    max_tokens = _integer(payload, key, default_tokens, 1, settings.max_new_tokens)
    temperature = payload.get("temperature")
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise InvalidRequest(f"'temperature' must be a number from 0 to 2, got {_describe(temperature)}",
                             "temperature")
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise InvalidRequest(f"'seed' must be a whole number from 0 to 2^63-1, got {_describe(seed)}", "seed")
    return Sampling(max_tokens, float(temperature), seed, _stop(payload.get("stop")))


def _stop(value: Any) -> tuple[str, ...]:
    strings = [value] if isinstance(value, str) else [] if value is None else value
    if not isinstance(strings, list) or not all(isinstance(string, str) and string for string in strings):
        raise InvalidRequest(f"'stop' must be a non-empty string or a list of them, got {_describe(value)}", "stop")
    if len(strings) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"'stop' has {len(strings)} strings, over the limit of {MAX_STOP_STRINGS}", "stop")
    return tuple(strings)


def _streaming(payload: dict[str, Any]) -> tuple[bool, bool]:
    """Whether to stream, and whether a stream ends with a usage chunk."""
    stream, options = payload.get("stream") or False, payload.get("stream_options") or {}
    if not isinstance(stream, bool):
        raise InvalidRequest(f"'stream' must be true or false, got {_describe(stream)}", "stream")
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise InvalidRequest("'stream_options' must be an object like {\"include_usage\": true}", "stream_options")
    return stream, stream and options.get("include_usage", False)


def _refuse_unsupported(payload: dict[str, Any], names: tuple[str, ...]) -> None:
    """What this server cannot do is refused, never silently ignored: one choice per prompt, no log
    probabilities, no tools."""
    for name in ("n", "best_of"):
        if payload.get(name) not in (None, 1):
            raise InvalidRequest(f"'{name}' must be 1: this server writes one choice per prompt", name)
    for name in names:
        if payload.get(name) not in (None, False, [], ""):
            raise InvalidRequest(f"'{name}' is not supported by this server", name)


def _check_text(text: str, param: str, settings: ServerSettings) -> None:
    if len(text) > settings.max_text_chars:
        raise InvalidRequest(f"'{param}' has {len(text):,} characters, over the limit of {settings.max_text_chars:,}",
                             param)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"'{param}' is not valid Unicode (a lone surrogate)", param) from None


def _prompts(payload: dict[str, Any], settings: ServerSettings) -> list[str]:
    prompt = payload.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(text, str) for text in prompts):
        raise InvalidRequest("'prompt' must be a string or a non-empty list of strings (not token ids)", "prompt")
    if len(prompts) > settings.max_texts:
        raise InvalidRequest(f"'prompt' has {len(prompts)} prompts, over the limit of {settings.max_texts}", "prompt")
    for index, text in enumerate(prompts):
        _check_text(text, "prompt" if isinstance(prompt, str) else f"prompt[{index}]", settings)
    return prompts


def _messages(payload: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation as the chat template takes it; `developer` (OpenAI's newer name) is written as
    `system`, the role templates know."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list of {\"role\", \"content\"} objects", "messages")
    conversation = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{where}' must be an object with 'role' and 'content'", where)
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise InvalidRequest(f"'{where}.role' must be one of {', '.join(CHAT_ROLES)}, got {_describe(role)}",
                                 f"{where}.role")
        conversation.append({"role": "system" if role == "developer" else role,
                             "content": _content(message.get("content"), f"{where}.content")})
    return conversation


def _content(value: Any, param: str) -> str:
    """A message's text: a string, or a list of text parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, dict) and part.get("type") == "text"
                                       and isinstance(part.get("text"), str) for part in value):
        return "".join(part["text"] for part in value)
    raise InvalidRequest(f"'{param}' must be a string or a list of text parts, got {_describe(value)}", param)


def _check_model(payload: dict[str, Any], model: RegisteredGenerator) -> None:
    requested = payload.get("model")
    if requested is not None and requested != model.identity.name:
        raise InvalidRequest(f"the model {_describe(requested)} does not exist: this server serves "
                             f"{_describe(model.identity.name)}", "model", status=404, code="model_not_found")


async def _payload(request: Request, settings: ServerSettings) -> dict[str, Any]:
    payload = parse_json(await body_within(request, settings.max_body_bytes))
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object")
    return payload


# ---- responses


@dataclass(frozen=True)
class _Api:
    """How one route writes its answers (completions and chat differ only in names and the choice's shape)."""

    id_prefix: str
    object: str
    chunk_object: str
    choice: Callable[[int, Completion], dict[str, Any]]
    delta: Callable[[str | None, str | None], dict[str, Any]]  # streamed text (None: opening) and finish_reason


COMPLETIONS = _Api(
    "cmpl", "text_completion", "text_completion",
    lambda index, done: {"index": index, "text": done.text, "logprobs": None, "finish_reason": done.finish_reason},
    lambda text, finish: {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish},
)
CHAT = _Api(
    "chatcmpl", "chat.completion", "chat.completion.chunk",
    lambda index, done: {"index": index, "message": {"role": "assistant", "content": done.text}, "logprobs": None,
                         "finish_reason": done.finish_reason},
    lambda text, finish: {"index": 0, "logprobs": None, "finish_reason": finish,
                          "delta": {"role": "assistant", "content": ""} if text is None and finish is None
                          else {"content": text} if text else {}},
)


def _usage(completions: list[Completion]) -> dict[str, int]:
    prompt = sum(done.prompt_tokens for done in completions)
    generated = sum(done.completion_tokens for done in completions)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def _envelope(api_object: str, reply_id: str, model: RegisteredGenerator, choices: list[dict[str, Any]],
              **more: Any) -> dict[str, Any]:
    return {"id": reply_id, "object": api_object, "created": int(time.time()), "model": model.identity.name,
            "system_fingerprint": f"{model.identity.name}:{model.version}", "choices": choices, **more}


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _model_entry(model: RegisteredGenerator) -> dict[str, Any]:
    return {"id": model.identity.name, "object": "model", "created": int(model.created_at.timestamp()),
            "owned_by": "steward", "version": model.version}


def create_openai_app(settings: ServerSettings, model: RegisteredGenerator, follow_alias: bool = True) -> FastAPI:
    """The app serving `model` (already loaded and verified), following `settings.ref`'s alias."""
    from contextlib import asynccontextmanager

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    metrics = GenerationMetrics()
    served = ServedModel(settings, model, metrics, lambda detail: warmed_generator(detail, settings))
    queue = GenerationQueue(served, settings, metrics)
    writer = PredictionLogWriter(settings, metrics) if settings.log_url else None

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        worker = asyncio.create_task(queue.run())
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

    app = FastAPI(title="Steward language model server (OpenAI-compatible)", lifespan=lifespan)
    app.state.served = served
    app.add_middleware(GuardAndMeasure, token=settings.token, metrics=metrics, routes=ROUTES,
                       error_body=lambda message: openai_error(message, code="invalid_api_key"))

    @app.exception_handler(RequestError)
    async def refused(_: Request, exc: RequestError) -> JSONResponse:
        body = openai_error(str(exc), getattr(exc, "param", None), getattr(exc, "code", None))
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(BadInputError)
    async def bad_input(_: Request, exc: BadInputError) -> JSONResponse:  # the chat template, or generation itself
        return JSONResponse(openai_error(exception_line(exc)), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:  # an unknown route or method
        return JSONResponse(openai_error(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        log.error("steward serve-model: request failed: %s", exception_line(exc))
        return JSONResponse(openai_error(f"internal error: {type(exc).__name__}", kind="server_error"),
                            status_code=500)

    def answered(model: RegisteredGenerator, prompts: list[str], completions: list[Completion],
                 started: float, first_text_at: float) -> None:
        """Metrics and the prediction log, for answered prompts."""
        metrics.first_token.observe(first_text_at - started)
        metrics.generated_tokens.inc(sum(done.completion_tokens for done in completions))
        if writer is not None:
            writer.submit_answers(model.identity, prompts, [
                (done.finish_reason, float(done.completion_tokens), {}, done.text) for done in completions
            ])

    async def reply(api: _Api, prompts: list[str], sampling: Sampling, payload: dict[str, Any],
                    started: float) -> Response:
        stream, include_usage = _streaming(payload)
        reply_id = f"{api.id_prefix}-{uuid.uuid4().hex}"
        if stream:
            if len(prompts) > 1:
                raise InvalidRequest("a stream takes one prompt (send a list without 'stream')", "prompt")
            return StreamingResponse(events(api, reply_id, served.model, prompts[0], sampling, include_usage, started),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        answered_by, completions = await queue.generate(prompts, sampling)
        answered(answered_by, prompts, completions, started, time.perf_counter())
        choices = [api.choice(index, done) for index, done in enumerate(completions)]
        return JSONResponse(_envelope(api.object, reply_id, answered_by, choices, usage=_usage(completions)))

    async def events(api: _Api, reply_id: str, model: RegisteredGenerator, prompt: str, sampling: Sampling,
                     include_usage: bool, started: float) -> AsyncIterator[str]:
        """The stream's server-sent events; a failure after the first event is an error event (the status is
        sent by then)."""
        usage = {"usage": None} if include_usage else {}
        first_text_at = None
        try:
            if api is CHAT:
                yield _event(_envelope(api.chunk_object, reply_id, model, [api.delta(None, None)], **usage))
            async with contextlib.aclosing(stream_completion(model, prompt, sampling)) as pieces:
                async for item in pieces:
                    if isinstance(item, Completion):
                        done = item
                        break
                    first_text_at = first_text_at or time.perf_counter()
                    yield _event(_envelope(api.chunk_object, reply_id, model, [api.delta(item, None)], **usage))
            yield _event(_envelope(api.chunk_object, reply_id, model, [api.delta("", done.finish_reason)], **usage))
            if include_usage:
                yield _event(_envelope(api.chunk_object, reply_id, model, [], usage=_usage([done])))
            answered(model, [prompt], [done], started, first_text_at or time.perf_counter())
        except Exception as exc:
            log.error("steward serve-model: stream failed: %s", exception_line(exc))
            yield _event(openai_error(exception_line(exc), kind="server_error"))
        yield "data: [DONE]\n\n"

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        started = time.perf_counter()
        payload = await _payload(request, settings)
        _check_model(payload, served.model)
        _refuse_unsupported(payload, ("echo", "logprobs", "suffix"))
        prompts = _prompts(payload, settings)
        sampling = _sampling(payload, settings, ("max_tokens",), DEFAULT_COMPLETION_TOKENS)
        return await reply(COMPLETIONS, prompts, sampling, payload, started)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        started = time.perf_counter()
        payload = await _payload(request, settings)
        _check_model(payload, served.model)
        _refuse_unsupported(payload, ("logprobs", "top_logprobs", "tools", "functions"))
        conversation = _messages(payload)
        sampling = _sampling(payload, settings, ("max_completion_tokens", "max_tokens"), settings.max_new_tokens)
        prompt = served.model.chat_prompt(conversation)
        _check_text(prompt, "messages", settings)
        return await reply(CHAT, [prompt], sampling, payload, started)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [_model_entry(served.model)]})

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
