"""Group context: a few of a group's own answer distributions before the question.

In the spirit of GPO (few-shot group context), a group-conditioned model can
be shown ``k`` other questions with the group's target distribution over
their answers, so that a group it never trained on is described at inference
time by a few of its answers::

    Answers of the group Japan to other questions:
    Question: Is the EU good for your country?
    Answers: 1 = Bad: 30%; 2 = Good: 70%

    <Q>Group: Japan
    {prompt}<A><|belief|>...

The context goes where in-context examples go (the ``context`` slot before
the prompt template, :func:`pluralign.beliefs.tokenize.encode_prompt`), so
length checks, chat templates and evaluation handle it as they handle ICF
shots. Leak-free by the rule of :mod:`pluralign.beliefs.shots`: an example
never asks the target's question (same ``question_id``, or the same wording
for records without one). Examples come from a pool of records (the training
split, never the evaluated file), only from the target's own group, drawn
with a seed; items that already carry a context keep it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from pluralign.beliefs.formats import GroupLineError, SequenceFormat
from pluralign.beliefs.shots import ShotPool
from pluralign.data.records import GroupPreferenceExample, RecordFileError, question_key

#: The first line of a group context.
GROUP_CONTEXT_HEADER = "Answers of the group {group} to other questions:\n"
#: Record ``metadata`` key listing the question keys a record's group context shows.
GROUP_CONTEXT_METADATA_KEY = "group_context"


class GroupTarget(Protocol):
    """What a group context is drawn for: a record or a prompt group."""

    @property
    def prompt(self) -> str: ...

    @property
    def question_id(self) -> str | None: ...

    @property
    def group(self) -> str: ...

    @property
    def context(self) -> str | None: ...


T = TypeVar("T", bound=GroupTarget)


class GroupContextError(ValueError):
    """No group context can be drawn for item ``index`` (of the items passed); ``reason``
    says why, so that a caller can name the file and line the item came from."""

    def __init__(self, index: int, group: str, reason: str) -> None:
        super().__init__(f"group: {reason}")
        self.index = index
        self.group = group
        self.reason = reason


def distribution_text(record: GroupPreferenceExample) -> str:
    """``Question: Q`` and ``Answers: 1 = Bad: 30%; 2 = Good: 70%`` (the group's p*)."""
    shares = "; ".join(f"{b.class_id} = {b.description}: {p:.0%}"
                       for b, p in zip(record.beliefs, record.target_distribution, strict=True))
    return f"Question: {record.prompt}\nAnswers: {shares}\n"


def group_context_text(group: str, examples: Sequence[GroupPreferenceExample]) -> str:
    """The context: a header naming the group, then each example and a blank line, so
    that the prompt template starts a line of its own after it."""
    return GROUP_CONTEXT_HEADER.format(group=group) + "".join(
        distribution_text(e) + "\n" for e in examples)


def _pools(pool: Iterable[GroupPreferenceExample]) -> dict[str, ShotPool]:
    by_group: dict[str, list[GroupPreferenceExample]] = {}
    for record in pool:
        by_group.setdefault(record.group, []).append(record)
    return {group: ShotPool(records) for group, records in by_group.items()}


def with_group_context(items: Sequence[T], pool: Iterable[GroupPreferenceExample], k: int, *,
                       seed: int = 0, pool_name: str = "the pool") -> list[T]:
    """Each item with up to ``k`` examples of its own group's other questions as its
    ``context`` (fewer where the group has fewer other questions; never a repeat).

    Records also get the question keys of their examples in
    ``metadata["group_context"]``. Raises :class:`GroupContextError` for an item whose
    group has no record in ``pool`` (named ``pool_name`` in the message), or only
    records of the item's own question.
    """
    if k < 1:
        raise ValueError(f"group_context: examples per prompt must be >= 1, got {k}")
    pools = _pools(pool)
    rng = random.Random(seed)
    out: list[T] = []
    for index, item in enumerate(items):
        if item.context is not None:
            out.append(item)
            continue
        group_pool = pools.get(item.group)
        if group_pool is None:
            raise GroupContextError(index, item.group, (
                f"group {item.group!r} has no records in {pool_name}, which the group context "
                f"is drawn from (groups there: {', '.join(sorted(pools)) or 'none'})"))
        try:
            examples = group_pool.sample(k, rng, item, repeat=False)
        except ValueError:
            raise GroupContextError(index, item.group, (
                f"group {item.group!r} has records of no other question in {pool_name}: the "
                "group context never shows the question asked")) from None
        changes: dict[str, object] = {"context": group_context_text(item.group, examples)}
        if isinstance(item, GroupPreferenceExample):
            changes["metadata"] = {**item.metadata,
                                   GROUP_CONTEXT_METADATA_KEY: [question_key(e) for e in examples]}
        out.append(dataclasses.replace(item, **changes))  # type: ignore[type-var]
    return out


def check_group_lines(numbered: Iterable[tuple[int, GroupPreferenceExample]],
                      path: str | Path, fmt: SequenceFormat) -> None:
    """:class:`RecordFileError` (file:line: field 'group') at the first record whose group
    ``fmt``'s group line cannot write; nothing to check where ``fmt`` has none."""
    if not fmt.names_group:
        return
    for line, record in numbered:
        try:
            fmt.question_text("", record.group)
        except GroupLineError as error:
            raise RecordFileError(path, line, "group", error.reason) from None
