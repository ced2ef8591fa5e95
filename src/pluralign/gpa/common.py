"""Helpers every LLM step of GPA shares: asking the backend, trimming quoted text."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pluralign.llm import ChatRequest, LLMBackend

logger = logging.getLogger(__name__)


@dataclass
class StepStats:
    """Requests and failures of one stage (failures are counted, never turned into text)."""

    requests: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"requests": self.requests, "failures": self.failures,
                "first_errors": self.errors[:3]}


def ask(backend: LLMBackend, prompts: Sequence[str], stats: StepStats, *,
        system: Sequence[str | None] | str | None = None, max_tokens: int | None = None,
        ) -> list[str | None]:
    """One answer per prompt through the shared backend; ``None`` where the request failed."""
    if not prompts:
        return []
    systems = list(system) if isinstance(system, (list, tuple)) else [system] * len(prompts)
    requests = [ChatRequest.from_prompt(p, system=s, max_tokens=max_tokens)
                for p, s in zip(prompts, systems, strict=True)]
    results = backend.complete(requests)
    stats.requests += len(results)
    answers: list[str | None] = []
    for result in results:
        if result.ok:
            answers.append(result.text)
        else:
            stats.failures += 1
            stats.errors.append(result.error or "error")
            answers.append(None)
    if stats.failures:
        logger.warning("%d of %d LLM requests failed so far", stats.failures, stats.requests)
    return answers


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, marking the cut so the model knows text is missing."""
    return text if len(text) <= limit else text[: limit - 5].rstrip() + " [...]"
