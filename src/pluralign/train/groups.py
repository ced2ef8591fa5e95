"""Training on several groups at once: the group line, the group context, the checks.

With ``group_in_prompt`` every prompt names its group (the format's group
line, :data:`pluralign.beliefs.formats.GROUP_LINE`), so one model learns a
belief distribution per group; the rows of two groups that ask one question
stay two rows with two targets (everything that keys rows by prompt keys them
by group and prompt then: :func:`pluralign.data.records.group_prompt_key`).
Without it, a file whose groups give one question different targets asks one
model for two distributions on the same prompt: :func:`warn_conflicting_groups`
says so, naming file, line and field, before the model loads.
``group_context`` adds examples of the group's own answers to other questions
before every prompt (:mod:`pluralign.beliefs.group_context`), drawn from the
training file only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pluralign.beliefs.formats import SequenceFormat
from pluralign.beliefs.group_context import GroupContextError, check_group_lines
from pluralign.beliefs.group_context import with_group_context as _with_group_context
from pluralign.data.records import GroupPreferenceExample, RecordFileError, question_key

logger = logging.getLogger(__name__)

Numbered = list[tuple[int, GroupPreferenceExample]]

#: Two targets closer than this (largest difference of one share) count as the same.
SAME_TARGET = 1e-6


def first_conflict(numbered: Sequence[tuple[int, GroupPreferenceExample]]
                   ) -> tuple[int, GroupPreferenceExample, str] | None:
    """``(line, record, other group)`` of the first record whose question another group
    asks with a different target distribution; None when no two groups disagree."""
    seen: dict[str, dict[str, GroupPreferenceExample]] = {}  # question -> group -> record
    for line, record in numbered:
        asked = seen.setdefault(question_key(record), {})
        for group, other in asked.items():
            if group != record.group and _differ(record, other):
                return line, record, group
        asked.setdefault(record.group, record)
    return None


def _differ(a: GroupPreferenceExample, b: GroupPreferenceExample) -> bool:
    if a.class_ids != b.class_ids:
        return True
    return max(abs(x - y) for x, y in zip(a.target_distribution, b.target_distribution,
                                            strict=True)) > SAME_TARGET


def warn_conflicting_groups(numbered: Numbered, path: str, fmt: SequenceFormat) -> str | None:
    """Warn (and return the warning) where the prompts name no group but two groups give one
    question different targets: one model is asked for two distributions on one prompt."""
    if fmt.names_group:
        return None
    conflict = first_conflict(numbered)
    if conflict is None:
        return None
    line, record, other = conflict
    groups = sorted({r.group for _, r in numbered})
    message = (f"{path}:{line}: field 'group': {record.group!r} and {other!r} give the question "
               f"{question_key(record)!r} different target distributions, and the prompts do "
               f"not name the group ({len(groups)} groups in the file); one model cannot fit "
               "both: set group_in_prompt (--group_in_prompt), or train on one group's records")
    logger.warning("%s", message)
    return message


def prepare_groups(numbered_train: Numbered, numbered_heldout: Numbered, *, train_file: str,
                   eval_file: str | None, fmt: SequenceFormat, group_context: int, seed: int
                   ) -> tuple[Numbered, Numbered]:
    """Check the groups of both files against ``fmt`` (a group its group line cannot write is
    an error naming file and line), warn about groups a group-less prompt would merge, and
    add ``group_context`` examples of the group's own answers before every prompt, drawn
    from the training records only (eval_file prompts too)."""
    check_group_lines(numbered_train, train_file, fmt)
    check_group_lines(numbered_heldout, eval_file or "eval_file", fmt)
    warn_conflicting_groups(numbered_train, train_file, fmt)
    if not group_context:
        return numbered_train, numbered_heldout
    pool = [r for _, r in numbered_train]
    return (_add_context(numbered_train, pool, train_file, train_file, group_context, seed),
            _add_context(numbered_heldout, pool, eval_file or "eval_file", train_file,
                         group_context, seed + 1))


def _add_context(numbered: Numbered, pool: list[GroupPreferenceExample], path: str,
                 pool_name: str, k: int, seed: int) -> Numbered:
    try:
        records = _with_group_context([r for _, r in numbered], pool, k, seed=seed,
                                      pool_name=f"the training file {pool_name}")
    except GroupContextError as error:
        raise RecordFileError(path, numbered[error.index][0], "group", error.reason) from None
    return [(line, r) for (line, _), r in zip(numbered, records, strict=True)]
