"""The LLM backend every component uses: a local HF model or an OpenAI-compatible server.

>>> backend = make_backend(LLMConfig(backend="hf", model="tiny"))  # doctest: +SKIP
>>> [r.text for r in backend.complete_prompts(["Is the EU good?"])]  # doctest: +SKIP

Results come back in order, one per request; a failed request carries its
error (``result.ok`` is False) and is counted in ``backend.stats``.
"""

from __future__ import annotations

from pluralign.llm.base import LLMBackend
from pluralign.llm.cache import ResponseCache, request_key
from pluralign.llm.config import LLM_BACKENDS, LLMConfig, make_backend
from pluralign.llm.hf import HFBackend
from pluralign.llm.openai_compat import OpenAIBackend
from pluralign.llm.types import BackendStats, ChatRequest, ChatResult, LLMError, require_texts

__all__ = [
    "LLM_BACKENDS",
    "BackendStats",
    "ChatRequest",
    "ChatResult",
    "HFBackend",
    "LLMBackend",
    "LLMConfig",
    "LLMError",
    "OpenAIBackend",
    "ResponseCache",
    "make_backend",
    "request_key",
    "require_texts",
]
