"""Requests, results and counters shared by every LLM backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Chat roles every chat template and OpenAI-compatible server understands.
ROLES = ("system", "user", "assistant")


class LLMError(RuntimeError):
    """An LLM backend could not be built, or results that were required failed."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat conversation to complete, with its sampling parameters.

    ``None`` parameters take the backend's defaults (from :class:`LLMConfig`);
    the backend fills them in before hashing, so the cache key always names
    the parameters that were really used.
    """

    messages: tuple[Mapping[str, str], ...]
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        messages = tuple(dict(m) for m in self.messages)
        if not messages:
            raise ValueError("a chat request needs at least one message")
        for i, message in enumerate(messages):
            if set(message) != {"role", "content"}:
                raise ValueError(
                    f"message {i}: expected the keys role and content, got {sorted(message)}"
                )
            if message["role"] not in ROLES:
                raise ValueError(f"message {i}: role must be one of {ROLES}, got "
                                 f"{message['role']!r}")
            if not isinstance(message["content"], str):
                raise ValueError(f"message {i}: content must be a string")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {self.max_tokens}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        object.__setattr__(self, "messages", messages)

    @classmethod
    def from_prompt(cls, prompt: str, *, system: str | None = None, **params: Any) -> ChatRequest:
        """A single user turn, optionally after a system message."""
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages.append({"role": "user", "content": prompt})
        return cls(tuple(messages), **params)

    def with_defaults(
        self, *, max_tokens: int, temperature: float, seed: int | None
    ) -> ChatRequest:
        """This request with every unset parameter taken from the given defaults."""
        return dataclasses.replace(
            self,
            max_tokens=self.max_tokens if self.max_tokens is not None else max_tokens,
            temperature=self.temperature if self.temperature is not None else temperature,
            seed=self.seed if self.seed is not None else seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": [dict(m) for m in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ChatResult:
    """The answer to one request: ``text`` on success, ``error`` on failure (never both).

    A failed request never gets made-up text: callers must check :attr:`ok`
    (or use :func:`require_texts`) and decide how to count the failure.
    """

    text: str | None = None
    error: str | None = None
    cached: bool = False
    attempts: int = 1
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.error is None):
            raise ValueError("a ChatResult carries either text or an error")

    @property
    def ok(self) -> bool:
        return self.error is None


def require_texts(results: Iterable[ChatResult]) -> list[str]:
    """The texts of ``results``; raises :class:`LLMError` naming the failures if any failed."""
    results = list(results)
    failed = [(i, r.error) for i, r in enumerate(results) if not r.ok]
    if failed:
        shown = "; ".join(f"#{i}: {error}" for i, error in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        raise LLMError(f"{len(failed)} of {len(results)} LLM requests failed: {shown}{more}")
    return [r.text for r in results if r.text is not None]


@dataclass
class BackendStats:
    """Counters over a backend's lifetime: what was asked, served from cache, retried, lost."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def generated(self) -> int:
        """Requests answered by the model itself (not the cache, not failed)."""
        return self.requests - self.cache_hits - self.failures

    def summary(self) -> str:
        text = (
            f"{self.requests} requests: {self.cache_hits} from cache, {self.generated} generated, "
            f"{self.failures} failed, {self.retries} retries"
        )
        if self.errors:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) + ")"
        return text
