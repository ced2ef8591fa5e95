"""The model side of the server: answer specs in, belief-first answers out, many at once.

One batch of requests costs one forward over their prompts (the belief slot's logits,
read as :func:`pluralign.eval.generate.last_position_logits` reads them for evaluation)
and one ``generate`` call per distinct text sampling setting; each answer's belief is
drawn from its prompt's distribution over the belief markers, then the model writes
the description and response after the drawn marker, as
:func:`pluralign.eval.generate.generate_beliefs_first` does.

Only the batch worker's thread calls :meth:`Engine.run`; :meth:`Engine.spec` (tokenising
and checking a request) runs in the server's thread.

A model trained with ``group_in_prompt`` (its format writes a group line) answers for
the group each request names; one trained with ``group_context`` also gets examples of
that group's answers before the question, drawn as ``pluralign generate --group`` draws
them (:func:`group_context`).
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers.generation import StoppingCriteria, StoppingCriteriaList

from pluralign.beliefs.formats import BeliefMarkerError, GroupLineError, SequenceFormat
from pluralign.beliefs.group_context import GroupContextError
from pluralign.beliefs.shots import ShotPool, context_text
from pluralign.beliefs.tokenize import belief_marker_ids, encode_prompt, marker_options_ids
from pluralign.data.records import Belief
from pluralign.eval.generate import (
    eos_position,
    last_position_logits,
    left_pad,
    split_description,
)
from pluralign.eval.predictions import PromptGroup
from pluralign.serve.streaming import DeltaTracker, RowStreamer

#: What comes before a served question: ``(question, group) -> context`` (None: nothing).
ContextFor = Callable[[str, str | None], str | None]


class RequestError(ValueError):
    """A request that cannot be answered as asked (HTTP 400); ``param`` names its field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class AnswerSpec:
    """One request, checked and tokenised: what the worker needs to answer it."""

    prompt_ids: tuple[int, ...]
    beliefs: tuple[Belief, ...]
    marker_ids: tuple[int, ...]  #: one marker token per belief, in ``beliefs`` order
    given_ids: tuple[int, ...]  #: text the format writes after the marker (options)
    n: int = 1
    max_tokens: int = 128
    temperature: float = 1.0  #: of the response text (0: greedy)
    top_p: float = 1.0
    belief_temperature: float = 1.0  #: over the belief distribution (0: most likely)
    belief_top_k: int | None = None
    fixed_belief: int | None = None  #: index into ``beliefs``: every answer takes it
    seed: int | None = None


@dataclass(frozen=True)
class Answer:
    """One belief-first answer."""

    index: int
    belief: Belief  #: the drawn belief, with the belief set's description
    generated_description: str | None  #: the description the model wrote (None: none)
    response: str
    finish_reason: str  #: "stop" (end of text) or "length" (max_tokens reached)
    tokens: int  #: generated tokens, the belief marker included


@dataclass(frozen=True)
class AnswerSet:
    """A request's answers and the belief distribution they were drawn from."""

    answers: tuple[Answer, ...]
    beliefs: tuple[Belief, ...]
    distribution: tuple[float, ...]  #: the model's: softmax over the belief markers
    sampling: tuple[float, ...]  #: what beliefs were drawn from (temperature, top-k, fixed)
    prompt_tokens: int


class StreamListener(Protocol):
    """Receives a streaming request's beliefs, then its text as it is generated."""

    def beliefs(self, drawn: Sequence[Belief], distribution: Sequence[float]) -> None: ...

    def text(self, index: int, delta: str) -> None: ...


def belief_sampling_probs(logits: torch.Tensor, temperature: float = 1.0,
                          top_k: int | None = None) -> torch.Tensor:
    """What beliefs are drawn from, given the K belief-marker logits: the softmax at
    ``temperature`` over the ``top_k`` most likely (all when None); 0 picks the most likely."""
    logits = logits.float()
    if temperature == 0:
        probs = torch.zeros_like(logits)
        probs[int(logits.argmax())] = 1.0
        return probs
    scaled = logits / temperature
    if top_k is not None and top_k < len(logits):
        cut = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < cut, float("-inf"))
    return torch.softmax(scaled, dim=-1)


class _RowLimits(StoppingCriteria):
    """Stops each row of a batch at its own request's max_tokens."""

    def __init__(self, limits: Sequence[int], prompt_width: int) -> None:
        self.limits = torch.tensor(list(limits))
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = (input_ids.shape[1] - self.prompt_width) >= self.limits
        return done.to(input_ids.device)


@dataclass
class _Row:
    """One answer to generate: its request, its index there, the drawn belief, the ids."""

    job: int
    index: int
    belief: int  #: index into the request's beliefs
    ids: list[int]


class Engine:
    """Answers :class:`AnswerSpec` batches with one model (only one thread may call run)."""

    def __init__(self, model: Any, tokenizer: Any, fmt: SequenceFormat, *,
                 default_beliefs: Sequence[Belief] | None = None,
                 max_prompt_tokens: int = 2048, seed: int = 0,
                 context_for: ContextFor | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.default_beliefs = tuple(default_beliefs) if default_beliefs else None
        self.max_prompt_tokens = max_prompt_tokens
        self.context_for = context_for
        self.has_description = fmt.description_template is not None
        self._generator = torch.Generator().manual_seed(seed)
        # The server's thread tokenises requests while the worker decodes answers; a fast
        # tokenizer shared across threads can fail ("Already borrowed"), so they take turns.
        self._tokenizer_lock = threading.Lock()
        if self.default_beliefs is not None:
            self._markers(self.default_beliefs, "beliefs")  # a bad set fails at start

    # ------------------------------------------------------------------ requests

    def spec(self, question: str, *, beliefs: Sequence[Belief] | None = None,
             belief: int | None = None, group: str | None = None, **params: Any
             ) -> AnswerSpec:
        """Check and tokenise one request (``params``: the other AnswerSpec fields);
        :class:`RequestError` says what is wrong with it."""
        self._check_group(group)
        chosen = tuple(beliefs) if beliefs else self.default_beliefs
        if chosen is None:
            raise RequestError("beliefs: this server has no default belief set (the model's "
                               "run recorded none and the server was started without "
                               "--beliefs); send 'beliefs', e.g. [{\"class_id\": 1, "
                               "\"description\": \"Oppose\"}, ...]", "beliefs")
        markers = self._markers(chosen, "beliefs")
        fixed = None
        if belief is not None:
            ids = [b.class_id for b in chosen]
            if belief not in ids:
                raise RequestError(f"belief: {belief} is not in the belief set {ids}", "belief")
            fixed = ids.index(belief)
        context = self.context_for(question, group) if self.context_for else None
        with self._tokenizer_lock:
            prompt = encode_prompt(self.tokenizer, question, self.fmt, context=context,
                                   beliefs=chosen, group=group)
            given = marker_options_ids(self.tokenizer, self.fmt, chosen)
        if len(prompt) > self.max_prompt_tokens:
            raise RequestError(f"messages: the prompt is {len(prompt)} tokens, above this "
                               f"server's limit of {self.max_prompt_tokens}", "messages")
        return AnswerSpec(tuple(prompt), chosen, tuple(markers), tuple(given),
                          fixed_belief=fixed, **params)

    def _check_group(self, group: str | None) -> None:
        """RequestError unless ``group`` is what the model's format needs: a group its group
        line can write where it has one (``group_in_prompt``), none otherwise."""
        if not self.fmt.names_group:
            if group is not None:
                # Ignoring it would answer for the training group while the client believes
                # it asked for another one.
                raise RequestError("group: this model was not trained with group_in_prompt "
                                   "(its prompts name no group): it answers for the one group "
                                   "it was trained on; leave 'group' out", "group")
            return
        if group is None:
            raise RequestError("group: this model was trained with group_in_prompt and answers "
                               "for the group a request names; send 'group' (e.g. "
                               "extra_body={\"group\": \"Japan\"} with the openai client)",
                               "group")
        try:
            self.fmt.question_text("", group)
        except GroupLineError as exc:  # a blank group, or one holding the separator
            raise RequestError(str(exc), "group") from None

    def _markers(self, beliefs: Sequence[Belief], where: str) -> list[int]:
        try:
            with self._tokenizer_lock:
                return belief_marker_ids(self.tokenizer, [b.class_id for b in beliefs],
                                         self.fmt.marker)
        except BeliefMarkerError as exc:
            raise RequestError(f"{where}: {exc}", where) from None

    def _decode(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=False)

    # ------------------------------------------------------------------ batches

    @torch.no_grad()
    def run(self, specs: Sequence[AnswerSpec],
            listeners: Sequence[StreamListener | None] | None = None) -> list[AnswerSet]:
        """Answer every spec: one forward for all beliefs, then the texts in batches."""
        listeners = list(listeners) if listeners is not None else [None] * len(specs)
        logits = last_position_logits(self.model, [list(s.prompt_ids) for s in specs],
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      batch_size=max(len(specs), 1))
        rows: list[_Row] = []
        readings = []
        for job, (spec, row_logits, listener) in enumerate(zip(specs, logits, listeners,
                                                               strict=True)):
            marker_logits = row_logits[list(spec.marker_ids)]
            sampling = self._sampling(spec, marker_logits)
            picked = torch.multinomial(sampling, spec.n, replacement=True,
                                       generator=self._generator_for(spec)).tolist()
            distribution = torch.softmax(marker_logits.float(), dim=-1).tolist()
            readings.append((distribution, sampling.tolist()))
            rows.extend(_Row(job, i, k, [*spec.prompt_ids, spec.marker_ids[k],
                                         *spec.given_ids]) for i, k in enumerate(picked))
            if listener is not None:
                listener.beliefs([spec.beliefs[k] for k in picked], distribution)
        trackers = {r: DeltaTracker(has_description=self.has_description)
                    for r, row in enumerate(rows) if listeners[row.job] is not None}
        texts = self._generate_rows(rows, specs, listeners, trackers)
        return self._answer_sets(specs, rows, texts, readings, listeners, trackers)

    def _sampling(self, spec: AnswerSpec, marker_logits: torch.Tensor) -> torch.Tensor:
        if spec.fixed_belief is not None:
            probs = torch.zeros(len(spec.marker_ids))
            probs[spec.fixed_belief] = 1.0
            return probs
        return belief_sampling_probs(marker_logits, spec.belief_temperature, spec.belief_top_k)

    def _generator_for(self, spec: AnswerSpec) -> torch.Generator:
        # A request's seed makes its own belief draws repeatable whatever it is batched with.
        if spec.seed is None:
            return self._generator
        return torch.Generator().manual_seed(spec.seed)

    def _generate_rows(self, rows: list[_Row], specs: Sequence[AnswerSpec],
                       listeners: Sequence[StreamListener | None],
                       trackers: dict[int, DeltaTracker]) -> list[list[int]]:
        """Generated token ids of every row; one generate call per text sampling setting."""
        out: list[list[int]] = [[] for _ in rows]
        settings: dict[tuple[float, float], list[int]] = {}
        for r, row in enumerate(rows):
            spec = specs[row.job]
            settings.setdefault((spec.temperature, spec.top_p), []).append(r)
        for (temperature, top_p), members in settings.items():
            watched = {}
            for position, r in enumerate(members):
                listener = listeners[rows[r].job]
                if listener is not None:
                    watched[position] = self._stream_callback(listener, rows[r].index,
                                                              trackers[r])
            seeds = {specs[rows[r].job].seed for r in members}
            jobs = {rows[r].job for r in members}
            # One seeded request alone in its call gets repeatable text; in a shared call
            # the text depends on its batch mates' sampling too.
            seed = next(iter(seeds)) if len(jobs) == 1 else None
            limits = [specs[rows[r].job].max_tokens for r in members]
            generated = self._generate([rows[r].ids for r in members], limits,
                                       temperature, top_p, watched, seed)
            for r, ids in zip(members, generated, strict=True):
                out[r] = ids
        return out

    def _stream_callback(self, listener: StreamListener, index: int,
                         tracker: DeltaTracker) -> Callable[[list[int]], None]:
        def on_tokens(ids: list[int]) -> None:
            delta = tracker.update(self._decode(ids))
            if delta:
                listener.text(index, delta)
        return on_tokens

    def _generate(self, rows: list[list[int]], limits: list[int], temperature: float,
                  top_p: float, watched: dict[int, Callable[[list[int]], None]],
                  seed: int | None) -> list[list[int]]:
        """Left-padded batched ``generate``; each row stops at its own limit."""
        pad = self.tokenizer.pad_token_id
        ids, mask = left_pad(rows, pad)
        width = ids.shape[1]
        kwargs: dict[str, Any] = {"max_new_tokens": max(limits)}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:  # greedy; keep the model's generation_config sampling defaults quiet
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        stops = {self.tokenizer.eos_token_id, pad} - {None}
        streamer = RowStreamer(watched, limits, stops) if watched else None
        device = next(self.model.parameters()).device
        # A seed must not reset the sampling of the unseeded requests that come after.
        with torch.random.fork_rng(devices=[]) if seed is not None else nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), pad_token_id=pad,
                eos_token_id=self.tokenizer.eos_token_id, streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_RowLimits(limits, width)]), **kwargs)
        return [row[:limit] for row, limit in zip(out[:, width:].tolist(), limits,
                                                  strict=True)]

    def _answer_sets(self, specs: Sequence[AnswerSpec], rows: list[_Row],
                     texts: list[list[int]], readings: list[tuple[list[float], list[float]]],
                     listeners: Sequence[StreamListener | None],
                     trackers: dict[int, DeltaTracker]) -> list[AnswerSet]:
        answers: list[list[Answer]] = [[] for _ in specs]
        for r, (row, ids) in enumerate(zip(rows, texts, strict=True)):
            belief = specs[row.job].beliefs[row.belief]
            end = eos_position(self.tokenizer, ids)
            text = self._decode(ids if end is None else ids[:end])
            parsed = split_description(text, belief.class_id,
                                       has_description=self.has_description)
            answers[row.job].append(Answer(
                row.index, belief, parsed.description, parsed.response,
                "length" if end is None else "stop", 1 + (len(ids) if end is None else end)))
            listener = listeners[row.job]
            if listener is not None:
                delta = trackers[r].finish(parsed.response)
                if delta:
                    listener.text(row.index, delta)
        return [AnswerSet(tuple(a), spec.beliefs, tuple(dist), tuple(sampling),
                          len(spec.prompt_ids))
                for a, spec, (dist, sampling) in zip(answers, specs, readings, strict=True)]


@dataclass(frozen=True)
class _Question:
    """A served question as a shot target (it has no question id)."""

    prompt: str
    question_id: str | None = None


def shots_context(pool: ShotPool, shots: int, marker: Any, seed: int) -> ContextFor:
    """An in-context fine-tuned model's context for a question: ``shots`` records of other
    questions from its training pool, drawn as evaluation draws them (whatever the group)."""
    rng = random.Random(seed)

    def context_for(question: str, group: str | None = None) -> str | None:
        try:
            return context_text(pool.sample(shots, rng, _Question(question)), marker=marker)
        except ValueError as exc:
            raise RequestError(f"messages: {exc}", "messages") from None
    return context_for


def group_context(info: dict[str, Any], *, pool_file: str | None = None, seed: int = 0,
                  cache_size: int = 1024) -> ContextFor:
    """A ``group_context`` model's context for a question and group: examples of the group's
    answers to other questions, from ``pool_file`` or else the training file its format
    file ``info`` records, drawn by :func:`pluralign.eval.prompting.group_context_prompts`
    with ``seed`` for each question on its own, so a question and group get the context
    ``pluralign generate --group`` gives them with that seed. A missing pool fails here, at
    start; a group the pool has no (other) answers of is a :class:`RequestError` naming it."""
    from pluralign.eval.prompting import group_context_prompts

    group_context_prompts([], [], info, pool_file=pool_file, seed=seed)  # the pool is there
    pool = str(pool_file or info["group_context"].get("pool"))

    # The helper reads the pool on every call; with a fixed seed a question and group always
    # get the same context, so repeated requests are answered from the cache.
    @functools.lru_cache(maxsize=cache_size)
    def context_for(question: str, group: str | None) -> str | None:
        asked = PromptGroup(question, group or "", None, (), [])
        try:
            [drawn], _ = group_context_prompts([asked], [], info, pool_file=pool_file, seed=seed)
        except GroupContextError as exc:
            # The server's file paths are no business of its clients.
            reason = exc.reason.replace(pool, "this model's group-context pool")
            raise RequestError(f"group: {reason}", "group") from None
        return drawn.context
    return context_for
