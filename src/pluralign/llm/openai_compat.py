"""Any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp, Ollama, ...) via ``openai``."""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from pluralign.llm.base import LLMBackend, describe_error
from pluralign.llm.types import ChatRequest, ChatResult, LLMError

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"


class EmptyAnswerError(RuntimeError):
    """The server answered without any text (no choices, or content null)."""


def warn_ignored_backoff(stacklevel: int = 3, **settings: float | None) -> None:
    """One deprecation line naming the old backoff settings that were given (not None).

    ``retry_base_delay`` and ``retry_max_delay`` tuned pluralign's own retry loop;
    the openai client that retries now has no such settings, so they are still
    accepted (old configs load) but do nothing.
    """
    given = [name for name, value in settings.items() if value is not None]
    if given:
        warnings.warn(
            f"{', '.join(given)}: deprecated and ignored. The openai client retries now and "
            "waits as it decides (exponential backoff with jitter, or the server's "
            "Retry-After); max_retries and timeout still apply. Remove the setting.",
            FutureWarning, stacklevel=stacklevel,
        )


class AttemptCounter(threading.local):
    """HTTP client event hook counting the attempts of the request each thread is sending.

    A worker thread sends one request at a time and the sync HTTP client runs its
    hooks in the sending thread, so a thread's count is its current request's,
    retries by the openai client included. It holds no reference to the backend,
    so an unclosed backend can still be collected (and its client closed).
    """

    def __init__(self) -> None:
        self.attempts = 0

    def __call__(self, request: Any) -> None:
        self.attempts += 1


class OpenAIBackend(LLMBackend):
    """Chat completions from an OpenAI-compatible HTTP server, ``max_concurrency`` at a time.

    Retries and timeouts are the ``openai`` client's own: ``max_retries`` tries
    more after a connection error, a timeout, 408, 409, 429 or 5xx, waiting as
    the server's Retry-After says or with exponential backoff; other errors fail
    at once. Every HTTP attempt passes an event hook of the HTTP client, so the
    retries the client makes internally still show in ``ChatResult.attempts``
    and ``stats.retries``.

    The API key is read from the environment variable named ``api_key_env`` and
    kept only inside the HTTP client: it is not part of the repr, the cache
    keys, the cache records or any log line.
    """

    kind = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
        max_concurrency: int = 8,
        max_retries: int = 4,
        timeout: float = 60.0,
        retry_base_delay: float | None = None,
        retry_max_delay: float | None = None,
        **common: Any,
    ) -> None:
        import openai

        if not model or not model.strip():
            raise LLMError("OpenAIBackend: a model name is required")
        if max_concurrency < 1:
            raise LLMError(f"max_concurrency: must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise LLMError(f"max_retries: must be >= 0, got {max_retries}")
        if timeout <= 0:
            raise LLMError(f"timeout: must be > 0, got {timeout}")
        warn_ignored_backoff(retry_base_delay=retry_base_delay, retry_max_delay=retry_max_delay)
        key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not key:
            raise LLMError(
                f"the API key is read from the environment variable {api_key_env}, which is "
                "not set. Export it, point api_key_env at another variable, or set api_key_env "
                "to an empty string for a server that needs no key."
            )
        super().__init__(**common)
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self._attempts = AttemptCounter()
        # DefaultHttpxClient keeps the SDK's connection settings; only the hook is ours.
        http_client = openai.DefaultHttpxClient(event_hooks={"request": [self._attempts]})
        self._client = openai.OpenAI(
            base_url=base_url, api_key=key or "no-key", timeout=timeout,
            max_retries=max_retries, http_client=http_client,
        )
        # The SDK closes a client it built itself when collected; ours is closed when
        # the backend is (or by close()), so forgotten backends leave no sockets open.
        self._close_client = weakref.finalize(self, self._client.close)
        self._secret = key or None
        self.base_url = str(self._client.base_url).rstrip("/")

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_url": self.base_url}

    def close(self) -> None:
        self._close_client()
        super().close()

    def _generate(
        self, requests: list[ChatRequest], advance: Callable[[int], None]
    ) -> list[ChatResult]:
        results: list[ChatResult | None] = [None] * len(requests)
        workers = min(self.max_concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm") as pool:
            futures = {pool.submit(self._answer, r): i for i, r in enumerate(requests)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                advance(1)
        return [r for r in results if r is not None]

    def _answer(self, request: ChatRequest) -> ChatResult:
        self._attempts.attempts = 0
        try:
            text, reason = self._call(request)
        except Exception as exc:
            attempts = self._settle_attempts()
            error = self._scrub(self._describe_failure(exc, attempts))
            return ChatResult(error=error, attempts=attempts)
        return ChatResult(text=text, attempts=self._settle_attempts(), finish_reason=reason)

    def _settle_attempts(self) -> int:
        """This thread's request's HTTP attempts (at least 1); the extra ones count as retries."""
        attempts = max(self._attempts.attempts, 1)
        self._count_retries(attempts - 1)
        return attempts

    def _describe_failure(self, exc: BaseException, attempts: int) -> str:
        """``"TypeName: what happened at which server: message"``; the type groups failures."""
        import openai

        kind, _, message = describe_error(exc).partition(": ")
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        if isinstance(exc, openai.APIStatusError):
            where = f"HTTP {exc.status_code} from {self.base_url} {tries}"
        elif isinstance(exc, openai.APITimeoutError):
            where = f"no answer from {self.base_url} within {self.timeout:g} s, {tries}"
        elif isinstance(exc, openai.APIConnectionError):
            where = f"could not connect to {self.base_url}, {tries}"
        elif isinstance(exc, (EmptyAnswerError, openai.APIResponseValidationError, ValueError)):
            # A 200 without usable text (none, or a garbled body): not retried by the client.
            where = f"unusable answer from {self.base_url}"
        else:
            where = f"request to {self.base_url} failed"
        return f"{kind}: {where}: {message}"

    def _call(self, request: ChatRequest) -> tuple[str, str | None]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.seed is not None:
            params["seed"] = request.seed
        response = self._client.chat.completions.create(**params)
        if not getattr(response, "choices", None):
            raise EmptyAnswerError("the server returned no choices")
        choice = response.choices[0]
        if choice.message is None or choice.message.content is None:
            raise EmptyAnswerError(
                f"the server returned no text (finish_reason={choice.finish_reason!r})"
            )
        return choice.message.content, choice.finish_reason

    def _scrub(self, message: str) -> str:
        # A misbehaving server could echo the Authorization header into an error body.
        return message.replace(self._secret, "***") if self._secret else message
