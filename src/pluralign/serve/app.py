"""The FastAPI application: ``/v1/chat/completions``, ``/v1/models`` and ``/health``.

Safe defaults: the API key (when one is set) is checked on every request with a
constant-time comparison and never logged; request bodies, ``n``, ``max_tokens`` and
prompts have limits; a bad request gets a 4xx whose message says what to fix; a
model failure gets a 500 for the requests of its batch and the server goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, format_sse_event
from starlette.exceptions import HTTPException

from pluralign.serve.batching import BatchWorker, Job, ModelError, QueueFullError
from pluralign.serve.config import ServeConfig, parse_belief_set
from pluralign.serve.engine import AnswerSpec, Engine, RequestError
from pluralign.serve.protocol import (
    ChatCompletionRequest,
    belief_json,
    choice_belief,
    chunk_body,
    completion_body,
    distribution_json,
    error_body,
    usage_json,
)

logger = logging.getLogger("pluralign.serve")


class _NotServed(Exception):
    """The request names a model this server does not serve (HTTP 404)."""


def create_app(engine: Engine, config: ServeConfig) -> FastAPI:
    """The server's application around ``engine`` (its batch worker runs while it is up)."""
    worker = BatchWorker(engine.run, max_rows=config.max_batch_rows,
                         max_wait_s=config.max_wait_ms / 1000, max_queue=config.max_queue)
    name = config.model_name()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        logger.info("serving %s as %r; API key %s", config.model, name,
                    "required" if config.resolved_api_key() else "not required")
        yield
        worker.stop()

    # No docs pages: the API is OpenAI's, and every route sits behind the key.
    app = FastAPI(title="pluralign serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, max_body_size=config.max_body_bytes,
                  dependencies=[Depends(_KeyCheck(config.resolved_api_key()))])
    app.state.worker = worker
    app.state.engine = engine
    _add_error_handlers(app, name)
    _add_routes(app, worker, engine, config)
    return app


def _add_routes(app: FastAPI, worker: BatchWorker, engine: Engine, config: ServeConfig
                ) -> None:
    name = config.model_name()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = worker.stats
        return {"status": "ok", "model": name, "waiting": worker.waiting,
                "batches": stats.batches, "requests": stats.requests,
                "failed_batches": stats.failed_batches}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(name, engine)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != name:
            raise _NotServed(model_id)
        return _model_card(name, engine)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest
                               ) -> dict[str, Any] | EventSourceResponse:
        if body.model != name:
            raise _NotServed(body.model)
        spec = answer_spec(body, engine, config)
        meta = {"request_id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": name}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            listener = _QueueListener(asyncio.get_running_loop())
            job = Job(spec, listener)
            worker.submit(job)  # before the stream starts: a full queue is still a 503
            # Queued after the job's last text event, so it arrives after all of them.
            job.future.add_done_callback(lambda future: listener.put("done", future))
            return EventSourceResponse(_stream(listener, spec, meta, include_usage))
        result = await asyncio.wrap_future(worker.submit(Job(spec)))
        return completion_body(result, spec, **meta)


def _model_card(name: str, engine: Engine) -> dict[str, Any]:
    beliefs = engine.default_beliefs
    return {"id": name, "object": "model", "created": 0, "owned_by": "pluralign",
            "beliefs": None if beliefs is None else [
                {"class_id": b.class_id, "description": b.description} for b in beliefs],
            # Tells a client whether its requests must name a group (group_in_prompt).
            "group_in_prompt": engine.fmt.names_group}


def answer_spec(body: ChatCompletionRequest, engine: Engine, config: ServeConfig
                ) -> AnswerSpec:
    """The request checked against the server's limits and tokenised (RequestError: 400)."""
    problem = body.unsupported()
    if problem:
        raise RequestError(problem)
    max_tokens = body.max_completion_tokens or body.max_tokens or config.default_max_tokens
    if max_tokens > config.max_tokens_limit:
        raise RequestError(f"max_tokens: {max_tokens} is above this server's limit of "
                           f"{config.max_tokens_limit}", "max_tokens")
    if body.n > config.max_n:
        raise RequestError(f"n: {body.n} is above this server's limit of {config.max_n}", "n")
    try:
        question = body.question()
        beliefs = (parse_belief_set(body.belief_set(), "beliefs")
                   if body.beliefs is not None else None)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    return engine.spec(
        question, beliefs=beliefs, belief=body.belief, group=body.group, n=body.n,
        max_tokens=max_tokens,
        temperature=config.temperature if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        belief_temperature=(config.belief_temperature if body.belief_temperature is None
                            else body.belief_temperature),
        belief_top_k=body.belief_top_k or config.belief_top_k, seed=body.seed)


# ------------------------------------------------------------------------ security


_BEARER = HTTPBearer(auto_error=False)


class _KeyCheck:
    """A dependency that refuses requests without the key (none when the key is None)."""

    def __init__(self, key: str | None) -> None:
        self._key = key.encode() if key is not None else None

    def __repr__(self) -> str:  # never show the key, even in a debugger or a traceback
        return f"_KeyCheck(required={self._key is not None})"

    async def __call__(
            self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if self._key is None:
            return
        if credentials is None:
            raise HTTPException(401, "missing API key: send the header "
                                     "'Authorization: Bearer KEY'")
        # Constant time: a timing difference must not tell how much of a guess was right.
        if not secrets.compare_digest(credentials.credentials.encode(), self._key):
            raise HTTPException(401, "invalid API key")


# -------------------------------------------------------------------------- errors


def _add_error_handlers(app: FastAPI, served: str) -> None:
    def reply(status: int, message: str, kind: str, param: str | None = None,
              code: str | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, kind, param=param, code=code), status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(400, _validation_message(exc.errors()), "invalid_request_error")

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, exc: RequestError) -> JSONResponse:
        return reply(400, str(exc), "invalid_request_error", exc.param)

    @app.exception_handler(_NotServed)
    async def not_served(request: Request, exc: _NotServed) -> JSONResponse:
        return reply(404, f"model {exc.args[0]!r} is not served here; this server serves "
                          f"{served!r}", "invalid_request_error", "model", "model_not_found")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        response = reply(exc.status_code, str(exc.detail), kind)
        if exc.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(QueueFullError)
    async def busy(request: Request, exc: QueueFullError) -> JSONResponse:
        return reply(503, str(exc), "server_error")

    @app.exception_handler(ModelError)
    async def model_error(request: Request, exc: ModelError) -> JSONResponse:
        return reply(500, f"model error: {exc}", "server_error")


def _validation_message(errors: Sequence[Any]) -> str:
    """pydantic's first error as one line: ``field: what is wrong``."""
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":  # its loc is a character position, not a field
        return f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')}"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return f"{where or 'body'}: {first.get('msg', 'invalid')}"


# ----------------------------------------------------------------------- streaming


class _QueueListener:
    """Moves a streaming job's events from the worker thread to the request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def put(self, *item: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def beliefs(self, drawn: Sequence[Any], distribution: Sequence[float]) -> None:
        self.put("beliefs", list(drawn), list(distribution))

    def text(self, index: int, delta: str) -> None:
        self.put("text", index, delta)


async def _stream(listener: _QueueListener, spec: AnswerSpec, meta: dict[str, Any],
                  include_usage: bool) -> AsyncIterator[bytes]:
    """The SSE events of a streaming request: a first chunk per answer with its belief,
    the text as it comes, a last chunk per answer with its finish reason, then [DONE]."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return format_sse_event(data_str=json.dumps(chunk_body(choices, **meta, **extra)))

    while True:
        kind, *rest = await listener.queue.get()
        if kind == "beliefs":
            drawn, distribution = rest
            yield event([{"index": i, "delta": {"role": "assistant", "content": ""},
                          "finish_reason": None, "belief": belief_json(
                              b, distribution[spec.beliefs.index(b)])}
                         for i, b in enumerate(drawn)],
                        belief_distribution=distribution_json(spec.beliefs, distribution))
        elif kind == "text":
            index, delta = rest
            yield event([{"index": index, "delta": {"content": delta}, "finish_reason": None}])
        else:
            future = rest[0]
            if future.exception() is not None:
                message = f"model error: {future.exception()}"
                yield format_sse_event(data_str=json.dumps(error_body(message, "server_error")))
                break
            result = future.result()
            yield event([{"index": a.index, "delta": {}, "finish_reason": a.finish_reason,
                          "belief": choice_belief(a, result)} for a in result.answers])
            if include_usage:
                yield event([], usage=usage_json(result))
            break
    yield format_sse_event(data_str="[DONE]")
