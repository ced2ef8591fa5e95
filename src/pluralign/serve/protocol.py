"""The OpenAI chat-completions protocol as ``pluralign serve`` speaks it: requests in
(pydantic models), response and stream-chunk bodies out, with the belief fields.

pluralign's additions travel as extra fields (the openai client's ``extra_body``):

- request: ``beliefs`` (the question's belief set), ``belief`` (a class id every
  answer takes), ``belief_temperature`` and ``belief_top_k`` (how beliefs are drawn),
  ``group`` (the group to answer for: required by a model trained with
  ``group_in_prompt``, refused by any other);
- response: each choice's ``belief`` (class id, the belief set's description, the
  description the model wrote, its probability) and the top-level
  ``belief_distribution`` (the model's distribution over the whole belief set) and
  ``belief_sampling`` (what the answers' beliefs were drawn from).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pluralign.data.records import Belief
from pluralign.registry import did_you_mean

#: OpenAI request fields that change nothing here: accepted and ignored.
IGNORED_FIELDS = frozenset({
    "user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
    "prompt_cache_retention", "prompt_cache_options", "parallel_tool_calls", "moderation"})
#: OpenAI request fields pluralign does not implement, with the value that means "off":
#: a request may send that value (clients often do), any other is refused.
UNSUPPORTED_FIELDS: dict[str, Any] = {
    "stop": None, "logprobs": False, "top_logprobs": None, "frequency_penalty": 0,
    "presence_penalty": 0, "logit_bias": None, "tools": None, "tool_choice": None,
    "functions": None, "function_call": None, "response_format": None, "audio": None,
    "modalities": None, "prediction": None, "reasoning_effort": None, "verbosity": None,
    "web_search_options": None}


class ChatMessage(BaseModel):
    """One message; ``content`` is text or a list of parts, of which the text ones count."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content
                           if p.get("type") == "text")
        return self.content or ""


class BeliefItem(BaseModel):
    """One belief of a request's belief set."""

    model_config = ConfigDict(extra="forbid")

    class_id: int = Field(ge=0)
    description: str = ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """A ``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(default=1, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    beliefs: list[BeliefItem] | str | None = None
    belief: int | None = None
    belief_temperature: float | None = Field(default=None, ge=0)
    belief_top_k: int | None = Field(default=None, ge=1)
    group: str | None = None

    def unsupported(self) -> str | None:
        """Why the request's extra fields cannot be honoured (None: they can)."""
        known = [*type(self).model_fields, *IGNORED_FIELDS, *UNSUPPORTED_FIELDS]
        for name, value in (self.model_extra or {}).items():
            if name in IGNORED_FIELDS:
                continue
            if name not in UNSUPPORTED_FIELDS:
                return f"{name}: unknown field.{did_you_mean(name, known)}"
            if value != UNSUPPORTED_FIELDS[name] and value not in ([], {}):
                return f"{name}: not supported by pluralign serve"
        return None

    def question(self) -> str:
        """The question the model answers: the last message, which must be the user's."""
        last = self.messages[-1]
        if last.role != "user":
            raise ValueError(f"messages: the last message must be the user's question, got "
                             f"role {last.role!r}")
        text = last.text()
        if not text.strip():
            raise ValueError("messages: the last user message has no text")
        return text

    def belief_set(self) -> list[dict[str, Any]] | str | None:
        if isinstance(self.beliefs, list):
            return [b.model_dump() for b in self.beliefs]
        return self.beliefs


# ----------------------------------------------------------------------- bodies


def belief_json(belief: Belief, probability: float) -> dict[str, Any]:
    return {"class_id": belief.class_id, "description": belief.description,
            "probability": probability}


def distribution_json(beliefs: Sequence[Belief], probs: Sequence[float]
                      ) -> list[dict[str, Any]]:
    return [belief_json(b, p) for b, p in zip(beliefs, probs, strict=True)]


def sampling_json(answer_set: Any, spec: Any) -> dict[str, Any]:
    fixed = spec.fixed_belief
    return {"temperature": spec.belief_temperature, "top_k": spec.belief_top_k,
            "belief": None if fixed is None else spec.beliefs[fixed].class_id,
            "probabilities": list(answer_set.sampling)}


def choice_belief(answer: Any, answer_set: Any) -> dict[str, Any]:
    """A choice's ``belief``: its class, descriptions and probability under the model."""
    p = answer_set.distribution[answer_set.beliefs.index(answer.belief)]
    return {**belief_json(answer.belief, p),
            "generated_description": answer.generated_description}


def usage_json(answer_set: Any) -> dict[str, int]:
    completion = sum(a.tokens for a in answer_set.answers)
    return {"prompt_tokens": answer_set.prompt_tokens, "completion_tokens": completion,
            "total_tokens": answer_set.prompt_tokens + completion}


def completion_body(answer_set: Any, spec: Any, *, request_id: str, created: int,
                    model: str) -> dict[str, Any]:
    """The ``chat.completion`` object of a request's answers."""
    choices = [{"index": a.index, "message": {"role": "assistant", "content": a.response},
                "finish_reason": a.finish_reason, "logprobs": None,
                "belief": choice_belief(a, answer_set)}
               for a in sorted(answer_set.answers, key=lambda a: a.index)]
    return {"id": request_id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage_json(answer_set),
            "belief_distribution": distribution_json(answer_set.beliefs,
                                                     answer_set.distribution),
            "belief_sampling": sampling_json(answer_set, spec)}


def chunk_body(choices: list[dict[str, Any]], *, request_id: str, created: int, model: str,
               **extra: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream."""
    return {"id": request_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": choices, **extra}


def error_body(message: str, kind: str, *, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, which the openai client turns into its exception's message."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
