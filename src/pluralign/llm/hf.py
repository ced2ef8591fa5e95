"""A local Hugging Face causal LM (bundled SmolLM2 by default), batched generation."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pluralign.llm.base import LLMBackend, describe_error
from pluralign.llm.types import ChatRequest, ChatResult, LLMError
from pluralign.models.loading import DEFAULT_MODEL


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """The prompt text for ``messages``: the chat template, or plain turns without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=False
        )
    # A base model has no template: a single user turn is the prompt itself.
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    turns = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*turns, "assistant:"])


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    found = set(ids if isinstance(ids, (list, tuple)) else [ids])
    found.add(tokenizer.eos_token_id)
    return {i for i in found if i is not None}


class HFBackend(LLMBackend):
    """Generation with a model from :func:`pluralign.models.load_model`.

    Requests are grouped by sampling parameters (a batch shares one
    ``generate`` call, so one seed and temperature), sorted by length to waste
    little padding, and generated ``batch_size`` at a time with left padding.
    Temperature 0 decodes greedily: the answer to a request does not depend on
    what else is in its batch. The model is loaded on first use.
    """

    kind = "hf"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        loaded: tuple[Any, Any] | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 8,
        top_p: float = 1.0,
        **common: Any,
    ) -> None:
        if batch_size < 1:
            raise LLMError(f"batch_size: must be >= 1, got {batch_size}")
        super().__init__(**common)
        self.model_ref = model  # with ``loaded``, the name that stands for it in cache keys
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.top_p = top_p
        self._loaded = loaded
        self._load_lock = threading.Lock()

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model_ref, "dtype": self.dtype,
                "top_p": self.top_p}

    def model_and_tokenizer(self) -> tuple[Any, Any]:
        """The (model, tokenizer) pair, loading it the first time."""
        with self._load_lock:
            if self._loaded is None:
                from pluralign.models import load_model

                self._loaded = load_model(self.model_ref, device=self.device, dtype=self.dtype)
            return self._loaded

    def _generate(
        self, requests: list[ChatRequest], advance: Callable[[int], None]
    ) -> list[ChatResult]:
        model, tokenizer = self.model_and_tokenizer()
        prompts = [render_chat(tokenizer, r.messages) for r in requests]
        results: list[ChatResult | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: (self._group(requests[i]),
                                                            len(prompts[i])))
        for _, group in itertools.groupby(order, key=lambda i: self._group(requests[i])):
            members = list(group)
            for start in range(0, len(members), self.batch_size):
                batch = members[start:start + self.batch_size]
                answers = self._run_batch([prompts[i] for i in batch], requests[batch[0]],
                                          model, tokenizer)
                for i, result in zip(batch, answers, strict=True):
                    results[i] = result
                advance(len(batch))
        return [r for r in results if r is not None]

    @staticmethod
    def _group(request: ChatRequest) -> tuple[Any, ...]:
        # Greedy decoding ignores the seed, so greedy requests batch across seeds.
        sampling = (request.temperature or 0) > 0
        return (request.max_tokens, request.temperature, request.seed if sampling else None)

    def _run_batch(
        self, prompts: list[str], params: ChatRequest, model: Any, tokenizer: Any
    ) -> list[ChatResult]:
        try:
            answers = self._generate_batch(prompts, params, model, tokenizer)
        except Exception as exc:  # e.g. out of memory: report, keep the other batches
            error = describe_error(exc)
            return [ChatResult(error=error) for _ in prompts]
        return [ChatResult(text=text, finish_reason=reason) for text, reason in answers]

    def _generate_batch(
        self, prompts: list[str], params: ChatRequest, model: Any, tokenizer: Any
    ) -> list[tuple[str, str]]:
        import torch

        # The chat template already holds any BOS token; plain prompts need it added.
        templated = bool(getattr(tokenizer, "chat_template", None))
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                           add_special_tokens=not templated).to(model.device)
        sampling = (params.temperature or 0) > 0
        options: dict[str, Any] = {"max_new_tokens": params.max_tokens, "do_sample": sampling}
        if sampling:
            options.update(temperature=params.temperature, top_p=self.top_p)
        else:  # keep generation_config's sampling defaults from warning about greedy mode
            options.update(temperature=None, top_p=None, top_k=None)
        devices = [model.device.index or 0] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(params.seed or 0)
            output = model.generate(**inputs, pad_token_id=tokenizer.pad_token_id, **options)
        stop = _stop_ids(model, tokenizer)
        answers = []
        for row in output[:, inputs["input_ids"].shape[1]:].tolist():
            cut = next((j for j, token in enumerate(row) if token in stop), None)
            tokens = row if cut is None else row[:cut]
            text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            answers.append((text, "length" if cut is None else "stop"))
        return answers
