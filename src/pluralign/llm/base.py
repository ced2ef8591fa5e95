"""The one interface every component uses to talk to a language model.

A backend turns a list of :class:`ChatRequest` into a list of
:class:`ChatResult`, in order. This base class owns what all backends share:
default parameters, the on-disk cache, de-duplication, the progress bar and
the counters; subclasses only say how to answer requests the cache missed.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from tqdm.auto import tqdm

from pluralign.llm.cache import ResponseCache, request_key
from pluralign.llm.types import BackendStats, ChatRequest, ChatResult

logger = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    """``"TypeName: message"``: the type groups failures in :class:`BackendStats`."""
    message = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {message}"


class LLMBackend(abc.ABC):
    """Answer chat requests with a language model; see :meth:`complete`."""

    kind: ClassVar[str] = "?"

    def __init__(
        self,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = 0,
        cache_dir: str | Path | None = None,
        progress: bool = True,
        progress_delay: float = 2.0,
    ) -> None:
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.progress = progress
        self.progress_delay = progress_delay
        self._stats = BackendStats()
        self._stats_lock = threading.Lock()

    # ------------------------------------------------------------------ subclass API

    @property
    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """What names the model in cache keys (never credentials)."""

    @abc.abstractmethod
    def _generate(
        self, requests: list[ChatRequest], advance: Callable[[int], None]
    ) -> list[ChatResult]:
        """Answer ``requests`` (parameters filled in), one result each, in order.

        Errors must come back as failed results, not exceptions, so one bad
        request does not lose the answers of the others. Call ``advance(n)``
        as requests finish (from the calling thread).
        """

    # ------------------------------------------------------------------- public API

    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """One :class:`ChatResult` per request, in order; failures carry their error."""
        resolved = [
            r.with_defaults(max_tokens=self.max_tokens, temperature=self.temperature,
                            seed=self.seed)
            for r in requests
        ]
        keys = [request_key(self.identity, r.to_dict()) for r in resolved]
        hits = self.cache.get_many(sorted(set(keys))) if self.cache is not None else {}
        # Identical requests are asked once: same parameters and seed, same answer.
        todo: dict[str, ChatRequest] = {}
        for key, request in zip(keys, resolved, strict=True):
            if key not in hits:
                todo.setdefault(key, request)
        fresh: dict[str, ChatResult] = {}
        if todo:
            with tqdm(total=len(todo), desc=f"{self.kind} {self.identity.get('model', '')}",
                      unit="req", disable=not self.progress, delay=self.progress_delay,
                      leave=False) as bar:
                answers = self._generate(list(todo.values()), bar.update)
            fresh = dict(zip(todo, answers, strict=True))
            self._store(todo, fresh)
        results = []
        seen: set[str] = set()
        for key in keys:
            if key in hits:
                text, reason = hits[key]
                results.append(ChatResult(text=text, cached=True, attempts=0,
                                          finish_reason=reason))
            elif key in seen and fresh[key].ok:
                # A repeat within this call cost nothing: it counts as a cache hit.
                results.append(replace(fresh[key], cached=True, attempts=0))
            else:
                results.append(fresh[key])
            seen.add(key)
        self._record(results)
        return results

    def complete_one(self, request: ChatRequest) -> ChatResult:
        return self.complete([request])[0]

    def complete_prompts(self, prompts: Sequence[str], **params: Any) -> list[ChatResult]:
        """Single-turn convenience: each prompt as one user message (``system=`` optional)."""
        return self.complete([ChatRequest.from_prompt(p, **params) for p in prompts])

    @property
    def stats(self) -> BackendStats:
        """A snapshot of the counters (requests, cache hits, retries, failures)."""
        with self._stats_lock:
            return replace(self._stats, errors=dict(self._stats.errors))

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> LLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.identity.items() if k != "backend")
        return f"{type(self).__name__}({fields})"

    # -------------------------------------------------------------------- internals

    def _count_retries(self, retries: int) -> None:
        """Add ``retries`` (tries of a request after its first) to the counters."""
        if retries > 0:
            with self._stats_lock:
                self._stats.retries += retries

    def _store(self, todo: dict[str, ChatRequest], fresh: dict[str, ChatResult]) -> None:
        if self.cache is None:
            return
        for key, result in fresh.items():
            if result.ok and result.text is not None:
                record = {"model": self.identity, **todo[key].to_dict()}
                self.cache.put(key, result.text, result.finish_reason, record)

    def _record(self, results: list[ChatResult]) -> None:
        failed = [r for r in results if not r.ok]
        with self._stats_lock:
            self._stats.requests += len(results)
            self._stats.cache_hits += sum(r.cached for r in results)
            self._stats.failures += len(failed)
            for result in failed:
                kind = (result.error or "").split(":", 1)[0] or "error"
                self._stats.errors[kind] = self._stats.errors.get(kind, 0) + 1
        if failed:
            logger.warning("%s: %d of %d requests failed; first error: %s",
                           self, len(failed), len(results), failed[0].error)
