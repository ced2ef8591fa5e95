"""Any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp, Ollama, ...) via ``openai``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from pluralign.llm.base import LLMBackend, RetryPolicy, describe_error
from pluralign.llm.types import ChatRequest, ChatResult, LLMError

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"

#: Status codes worth another try: timeouts, conflicts, rate limits; 5xx are added below.
TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


class EmptyAnswerError(RuntimeError):
    """The server answered without any text (no choices, or content null)."""


def is_transient(exc: BaseException) -> bool:
    """Connection errors, timeouts, 429, 5xx and unreadable replies; not 400/401/403/404."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in TRANSIENT_STATUS or exc.status_code >= 500
    # A 200 whose body is not the JSON it should be: a truncated or garbled reply,
    # which a second try usually gets right.
    return isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError))


def retry_after_seconds(exc: BaseException) -> float | None:
    """The server's Retry-After hint in seconds, when it gives one as a number."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) * scale
            except ValueError:  # an HTTP date: fall back to our own backoff
                return None
    return None


class OpenAIBackend(LLMBackend):
    """Chat completions from an OpenAI-compatible HTTP server, ``max_concurrency`` at a time.

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
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 30.0,
        **common: Any,
    ) -> None:
        import openai

        if not model or not model.strip():
            raise LLMError("OpenAIBackend: a model name is required")
        if max_concurrency < 1:
            raise LLMError(f"max_concurrency: must be >= 1, got {max_concurrency}")
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
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries, retry_base_delay, retry_max_delay)
        # The client's own retries are off: ours are counted and use our policy.
        self._client = openai.OpenAI(
            base_url=base_url, api_key=key or "no-key", timeout=timeout, max_retries=0
        )
        self._secret = key or None
        self.base_url = str(self._client.base_url).rstrip("/")

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_url": self.base_url}

    def close(self) -> None:
        self._client.close()
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
        try:
            (text, reason), attempts = self.retry.run(
                lambda: self._call(request),
                is_transient,
                on_retry=lambda exc, retry: self._count_retry(),
                retry_after=retry_after_seconds,
            )
        except Exception as exc:
            return ChatResult(error=self._scrub(describe_error(exc)),
                              attempts=getattr(exc, "attempts", 1))
        return ChatResult(text=text, attempts=attempts, finish_reason=reason)

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
