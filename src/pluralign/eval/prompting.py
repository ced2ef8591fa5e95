"""Prompting baselines of the GDPO paper (k-shot prompting) and in-context fine-tuned prompts.

k-shot prompt (paper appendix E)::

    You are a helpful assistant and can generate the same format as the examples in the context.

    Question: Q1, Answer: 4<B1>R1

    ...

    Question: Q, Answer:

Each shot is a randomly drawn record of another question (never of the
evaluated prompt's question: see :mod:`pluralign.beliefs.shots`) with its
chosen belief and response, drawn from a pool of *training* records, never
from the evaluated file. The paper's answers are ``<B>R``; by default the class
marker is written in front (``4<B>R``) so that the first generated token is
the class and a local model's belief distribution can be read in one forward
pass (``include_class=False`` gives the paper's exact ``<B>R``, whose class is
then read from the description).

Baselines run on a local model (one-forward-pass reading, belief-first
generation) or on any OpenAI-compatible model through the LLM backend (the
belief distribution is the sampled estimate from ``n`` answers), and are
scored with the same metrics as trained models (:mod:`pluralign.eval.scoring`).

In-context fine-tuning (ICF) is the ``icf`` training method: its shots go
before the ``<Q>`` wrapper (:func:`pluralign.beliefs.shots.in_context`).
:func:`in_context_prompts` gives an ICF model's evaluation prompts their shots
the same way, from the training file its run recorded.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pluralign.beliefs.formats import MarkerMode, SequenceFormat
from pluralign.beliefs.group_context import GroupContextError, with_group_context
from pluralign.beliefs.readout import belief_distributions
from pluralign.beliefs.shots import (
    KSHOT_SYSTEM,
    ShotPool,
    in_context,
    in_context_records,
    sample_shots,
    shot_answer,
    shot_line,
)
from pluralign.beliefs.tokenize import belief_marker_ids
from pluralign.data.records import (
    GroupPreferenceExample,
    RecordFileError,
    iter_numbered_examples,
    read_examples,
)
from pluralign.eval.generate import (
    Generation,
    SamplingOptions,
    description_class,
    estimate_from_counts,
    generate_beliefs_first,
    parse_generation,
)
from pluralign.eval.predictions import PromptGroup, PromptPrediction, group_prompts

__all__ = [
    "KSHOT_SYSTEM", "group_context_prompts", "in_context_prompts", "in_context_records",
    "kshot_api", "kshot_baseline", "kshot_local", "kshot_prompt", "kshot_user_text",
    "sample_shots", "shot_answer", "shot_line",
]


def kshot_user_text(question: str, shots: Sequence[GroupPreferenceExample], *,
                    include_class: bool = True, marker: MarkerMode = "digit") -> str:
    """The shots and the question (the user turn of a chat request)."""
    lines = [shot_line(s, include_class=include_class, marker=marker) for s in shots]
    # The trailing space keeps "Answer: " + "4" tokenised as in the shots (" " then "4").
    return "\n\n".join([*lines, f"Question: {question}, Answer: "])


def kshot_prompt(question: str, shots: Sequence[GroupPreferenceExample], *,
                 include_class: bool = True, marker: MarkerMode = "digit",
                 system: str = KSHOT_SYSTEM) -> str:
    """The full k-shot prompt text (instruction line, shots, question) for a local model."""
    user = kshot_user_text(question, shots, include_class=include_class, marker=marker)
    return f"{system}\n\n{user}"


# ----------------------------------------------------------------------- ICF models


def in_context_prompts(
    groups: Sequence[PromptGroup], records: Sequence[GroupPreferenceExample],
    info: dict[str, Any], marker: MarkerMode, *, pool_file: str | None = None, seed: int = 0,
) -> tuple[list[PromptGroup], list[GroupPreferenceExample]]:
    """An in-context fine-tuned model's prompts and records with their shots as context.

    ``info`` is the model's ``pluralign_format.json``; a model without an
    ``in_context`` entry gets ``groups`` and ``records`` back unchanged. The
    shots come from ``pool_file`` when given, else from the training file the
    run recorded, never from the evaluated records; a prompt whose record
    carries a context keeps it. Records (for reward margins) get their
    prompt's context.
    """
    spec = info.get("in_context")
    if not spec:
        return list(groups), list(records)
    path = _recorded_pool(spec, pool_file, "in-context fine-tuned", "its shots", "kshot_pool")
    shots = int(spec.get("shots", 3))
    groups = in_context(groups, read_examples(path), shots, seed=seed, marker=marker)
    return groups, _with_contexts_of(groups, records)


def group_context_prompts(
    groups: Sequence[PromptGroup], records: Sequence[GroupPreferenceExample],
    info: dict[str, Any], *, pool_file: str | None = None, seed: int = 0,
    data: str | None = None,
) -> tuple[list[PromptGroup], list[GroupPreferenceExample]]:
    """A group-context model's prompts and records with examples of their group's answers to
    other questions as context (:mod:`pluralign.beliefs.group_context`).

    ``info`` is the model's ``pluralign_format.json``; a model without a
    ``group_context`` entry gets ``groups`` and ``records`` back unchanged. The
    examples come from ``pool_file`` when given (e.g. a few answers of groups the
    model never trained on), else from the training file the run recorded, never
    from the evaluated records. A group without examples there is an error
    naming ``data``'s line and the field ``group``.
    """
    spec = info.get("group_context")
    if not spec:
        return list(groups), list(records)
    path = _recorded_pool(spec, pool_file, "group-context", "its group context",
                          "group_context_pool")
    try:
        groups = with_group_context(groups, read_examples(path), int(spec.get("shots", 3)),
                                    seed=seed, pool_name=path)
    except GroupContextError as error:
        asked = groups[error.index]
        line = _first_line(data, asked.prompt, asked.group) if data else None
        if line is None:
            raise
        raise RecordFileError(data or "", line, "group", error.reason) from None
    return groups, _with_contexts_of(groups, records)


def _recorded_pool(spec: dict[str, Any], pool_file: str | None, model_kind: str, what: str,
                   option: str) -> str:
    """The pool a model's contexts come from: ``pool_file``, else the recorded training file
    (FileNotFoundError naming ``option`` when neither is there)."""
    path = pool_file or spec.get("pool")
    if pool_file and not Path(pool_file).is_file():
        raise FileNotFoundError(f"{option}: {pool_file} is not a file")
    if not path or not Path(path).is_file():
        raise FileNotFoundError(
            f"this {model_kind} model draws {what} from its training file {path!r}, which is "
            f"not there; name the training split with --{option.replace('_', '-')} FILE")
    return str(path)


def _with_contexts_of(groups: Sequence[PromptGroup], records: Sequence[GroupPreferenceExample]
                      ) -> list[GroupPreferenceExample]:
    """``records``, each without a context given its prompt's (for reward margins)."""
    context_of = {(g.prompt, g.group): g.context for g in groups}
    return [r if r.context is not None
            else dataclasses.replace(r, context=context_of.get((r.prompt, r.group)))
            for r in records]


def _first_line(path: str, prompt: str, group: str) -> int | None:
    """The line of ``path``'s first record of ``prompt`` asked for ``group``."""
    return next((line for line, r in iter_numbered_examples(path)
                 if r.prompt == prompt and r.group == group), None)


# ----------------------------------------------------------------------- baselines


def _trim(generation: Generation) -> Generation:
    """Cut a k-shot answer at the end of its line (the model would go on with more shots)."""
    response = generation.response.split("\n")[0].strip()
    return dataclasses.replace(generation, response=response)


def kshot_local(
    model: Any, tokenizer: Any, groups: Sequence[PromptGroup],
    pool: Sequence[GroupPreferenceExample], *, k: int = 3, n: int = 4,
    options: SamplingOptions | None = None, seed: int = 0, batch_size: int = 8,
) -> list[PromptPrediction]:
    """k-shot baseline on a local model: one-forward-pass reading plus belief-first generations."""
    rng = random.Random(seed)
    shots_from = ShotPool(pool)
    texts = [kshot_prompt(g.prompt, shots_from.sample(k, rng, g)) for g in groups]
    # The k-shot text is the whole prompt: no <Q>/<A> wrapper around it.
    fmt = SequenceFormat(prompt_template="{prompt}")
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    markers = [belief_marker_ids(tokenizer, list(g.class_ids)) for g in groups]
    reading = belief_distributions(model, ids, markers, pad_token_id=tokenizer.pad_token_id,
                                   batch_size=batch_size)
    gens = generate_beliefs_first(model, tokenizer, texts, [g.beliefs for g in groups], fmt=fmt,
                                  n=n, options=options, batch_size=batch_size)
    return [
        PromptPrediction(group=g, predicted=p, mass=m, generations=[_trim(x) for x in gen])
        for g, p, m, gen in zip(groups, reading.probs, reading.mass, gens, strict=True)
    ]


def _api_generation(text: str | None, group: PromptGroup, include_class: bool) -> Generation:
    parsed = parse_generation((text or "").split("\n")[0])
    mapped = description_class(parsed.description, group.beliefs)
    # Without a class marker the belief *is* the description (the paper's <B>R answers).
    class_id = parsed.class_id if include_class else mapped
    if class_id is not None and class_id not in group.class_ids:
        class_id = None
    return Generation(text=text or "", class_id=class_id, description=parsed.description,
                      response=parsed.response, description_class=mapped,
                      parsed=class_id is not None and parsed.description is not None)


def kshot_api(
    backend: Any, groups: Sequence[PromptGroup], pool: Sequence[GroupPreferenceExample], *,
    k: int = 5, n: int = 8, temperature: float = 1.0, max_tokens: int = 128, seed: int = 0,
    include_class: bool = True,
) -> list[PromptPrediction]:
    """k-shot baseline through the LLM backend; the distribution is the sampled estimate."""
    from pluralign.llm import ChatRequest

    rng = random.Random(seed)
    shots_from = ShotPool(pool)
    requests = []
    for g in groups:
        user = kshot_user_text(g.prompt, shots_from.sample(k, rng, g), include_class=include_class)
        # Distinct seeds make the n requests distinct samples (and distinct cache keys).
        requests.extend(ChatRequest.from_prompt(user, system=KSHOT_SYSTEM, temperature=temperature,
                                                max_tokens=max_tokens, seed=seed + j)
                        for j in range(n))
    results = backend.complete(requests)
    predictions = []
    for i, g in enumerate(groups):
        chunk = results[i * n:(i + 1) * n]
        gens = [_api_generation(r.text if r.ok else None, g, include_class) for r in chunk]
        counts = [[sum(x.class_id == c for x in gens) for c in g.class_ids]]
        estimate = estimate_from_counts(counts, n)
        predictions.append(PromptPrediction(
            group=g, predicted=estimate.probs[0], sampled=estimate.probs[0],
            sampled_counts=estimate.counts[0], off_belief=estimate.off_belief[0],
            generations=gens, api_errors=sum(not r.ok for r in chunk),
        ))
    return predictions


def kshot_baseline(
    records: Sequence[GroupPreferenceExample], *, pool: Sequence[GroupPreferenceExample],
    model: str = "smollm2-135m", base_url: str | None = None, api_key_env: str = "",
    k: int = 3, n: int = 4, seed: int = 0, options: SamplingOptions | None = None,
    device: str = "cpu",
) -> list[PromptPrediction]:
    """k-shot predictions for the prompts of ``records``: local model, or API with ``base_url``.

    ``pool`` holds the records the shots come from: the training split, not
    ``records`` (a shot never asks its target's question either way).
    """
    groups = group_prompts(records)
    options = options or SamplingOptions(seed=seed)
    if base_url:
        from pluralign.llm import LLMConfig, make_backend

        backend = make_backend(LLMConfig(backend="openai", model=model, base_url=base_url,
                                         api_key_env=api_key_env, progress=False))
        return kshot_api(backend, groups, pool, k=k, n=n, temperature=options.temperature,
                         max_tokens=options.max_new_tokens, seed=seed)
    from pluralign.models import load_model

    lm, tokenizer = load_model(model, device=device)
    return kshot_local(lm, tokenizer, groups, pool, k=k, n=n, options=options, seed=seed)
