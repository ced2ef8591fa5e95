"""In-context examples ("shots") for k-shot prompting and in-context fine-tuning (ICF).

A shot is a record of *another question* written in the paper's template
(appendix E)::

    Question: Q1, Answer: 4<B1>R1

Leak-free by construction: a shot never comes from the question of its
target. Two records ask the same question when they share a ``question_id``
(the builders give every wording of a question the same id), or, for records
without one, when their prompt text is the same. Records without a
``question_id`` can therefore not be told apart from other wordings of their
question; give them ids to exclude paraphrases.

ICF places its shots where the reference code does, *before* the ``<Q>``
wrapper (``{context}<Q>{prompt}<A>``): :func:`in_context` fills the
``context`` field of records (or prompt groups) that have none, and
:func:`pluralign.beliefs.tokenize.encode_prompt` puts the context in front.
A context that a record already carries (the ``context`` column of the
paper's released ICF data) is kept as it is.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from pluralign.beliefs.formats import MarkerMode
from pluralign.beliefs.tokenize import belief_marker
from pluralign.data.records import GroupPreferenceExample, question_key

#: The instruction line of the paper's few-shot template (also opens an ICF context).
KSHOT_SYSTEM = (
    "You are a helpful assistant and can generate the same format as the examples in the context."
)


class ShotTarget(Protocol):
    """What shots are drawn for: a record or a prompt group (its question and wording)."""

    @property
    def prompt(self) -> str: ...

    @property
    def question_id(self) -> str | None: ...


T = TypeVar("T")


def shot_answer(
    class_id: int, description: str, response: str, *, include_class: bool = True,
    marker: MarkerMode = "digit",
) -> str:
    """``4<description>response`` (or the paper's ``<description>response``)."""
    prefix = belief_marker(class_id, marker) if include_class else ""
    return f"{prefix}<{description}>{response}"


def shot_line(example: GroupPreferenceExample, *, include_class: bool = True,
              marker: MarkerMode = "digit") -> str:
    """``Question: Q, Answer: <B>R`` for a record's chosen belief and response."""
    belief = example.belief(example.chosen_belief)
    answer = shot_answer(belief.class_id, belief.description, example.chosen_response,
                         include_class=include_class, marker=marker)
    return f"Question: {example.prompt}, Answer: {answer}"


class ShotPool:
    """Records to draw shots from, indexed by question once (a pool of training records)."""

    def __init__(self, records: Sequence[GroupPreferenceExample]) -> None:
        self._by_question: dict[str, list[GroupPreferenceExample]] = {}
        # A target without an id is matched by its wording; this maps a wording to the
        # questions that use it, so that the whole question is left out, not one wording.
        self._questions_of_prompt: dict[str, set[str]] = {}
        for record in records:
            key = question_key(record)
            self._by_question.setdefault(key, []).append(record)
            self._questions_of_prompt.setdefault(record.prompt, set()).add(key)
        self._questions = list(self._by_question)

    def __len__(self) -> int:
        """Distinct questions in the pool."""
        return len(self._questions)

    def same_question(self, target: ShotTarget) -> set[str]:
        """Question keys of the pool that ask the target's question."""
        keys = set(self._questions_of_prompt.get(target.prompt, ()))
        if target.question_id is not None:
            keys.add(target.question_id)
        return keys

    def sample(self, k: int, rng: random.Random, target: ShotTarget, *, repeat: bool = True
               ) -> list[GroupPreferenceExample]:
        """``k`` records of questions other than the target's, one per question where the
        pool has enough questions (else questions repeat; with ``repeat=False`` fewer than
        ``k`` come back instead)."""
        excluded = self.same_question(target)
        questions = [q for q in self._questions if q not in excluded]
        if not questions:
            raise ValueError(f"no in-context examples for {target.prompt[:60]!r}: the shot "
                             "pool holds only records of that question")
        if not repeat:
            k = min(k, len(questions))
        chosen = rng.sample(questions, k) if k <= len(questions) else rng.choices(questions, k=k)
        return [rng.choice(self._by_question[q]) for q in chosen]


def sample_shots(
    pool: Sequence[GroupPreferenceExample], k: int, rng: random.Random, *, target: ShotTarget
) -> list[GroupPreferenceExample]:
    """``k`` records of ``pool`` that do not ask ``target``'s question (see :class:`ShotPool`;
    build one pool for many targets)."""
    return ShotPool(pool).sample(k, rng, target)


def context_text(shots: Sequence[GroupPreferenceExample], *, include_class: bool = True,
                 marker: MarkerMode = "digit") -> str:
    """An ICF context: the paper's instruction line and shots, each block ending in a blank
    line, so that ``<Q>`` starts a line of its own after it."""
    lines = [KSHOT_SYSTEM, *(shot_line(s, include_class=include_class, marker=marker)
                             for s in shots)]
    return "".join(f"{line}\n\n" for line in lines)


def in_context(
    items: Sequence[T], pool: Sequence[GroupPreferenceExample] | ShotPool, k: int, *,
    seed: int = 0, marker: MarkerMode = "digit", include_class: bool = True,
) -> list[T]:
    """Each item (a record or a prompt group) with ``k`` shots from ``pool`` as its
    ``context``; items that already carry a context keep it. Records also get the
    question keys of their shots in ``metadata["icf_shots"]``."""
    if k < 1:
        raise ValueError(f"k (in-context examples per prompt) must be >= 1, got {k}")
    rng = random.Random(seed)
    shots_from = pool if isinstance(pool, ShotPool) else ShotPool(pool)
    out = []
    for item in items:
        if getattr(item, "context", None) is not None:
            out.append(item)
            continue
        shots = shots_from.sample(k, rng, item)  # type: ignore[arg-type]
        changes: dict[str, object] = {
            "context": context_text(shots, include_class=include_class, marker=marker)}
        if isinstance(item, GroupPreferenceExample):
            changes["metadata"] = {**item.metadata, "icf_shots": [question_key(s) for s in shots]}
        out.append(dataclasses.replace(item, **changes))  # type: ignore[type-var]
    return out


def in_context_records(
    records: Sequence[GroupPreferenceExample], k: int = 3, *, seed: int = 0,
    pool: Sequence[GroupPreferenceExample] | None = None, marker: MarkerMode = "digit",
    include_class: bool = True,
) -> list[GroupPreferenceExample]:
    """ICF data: each record with ``k`` shots of other questions as its context, drawn
    from ``pool`` (default: ``records`` themselves, the training file)."""
    return in_context(records, records if pool is None else pool, k, seed=seed, marker=marker,
                      include_class=include_class)
