"""The one record type for a group preference example, and its JSONL files.

A :class:`GroupPreferenceExample` is what every data builder writes and every
trainer reads: a prompt, the belief set (K beliefs, each a class id and a
description), the group's target distribution ``p*`` over those beliefs, a
chosen and a rejected belief, and one response for each. Records validate on
construction, so a trainer never sees a distribution that does not sum to 1 or
a chosen belief that is not in the set. Errors are :class:`RecordError`
(a ``ValueError``) and name the field.

JSONL files hold one record per line (``to_dict`` layout). A bad line raises
:class:`RecordFileError` naming the file, the line number and the field; no row
is ever dropped silently.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import IO, Any

#: How far the target distribution may sum from 1 before it is an error.
SUM_TOLERANCE = 1e-3


class RecordError(ValueError):
    """A record field is invalid; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.reason = message


class RecordFileError(ValueError):
    """A line of a JSONL record file is invalid; the message gives file:line: field."""

    def __init__(self, path: str | Path, line_number: int, field_name: str | None, message: str):
        where = f"{path}:{line_number}"
        text = f"{where}: field '{field_name}': {message}" if field_name else f"{where}: {message}"
        super().__init__(text)
        self.path = str(path)
        self.line_number = line_number
        self.field = field_name


@dataclass(frozen=True)
class Belief:
    """One belief of a belief set: its class id (the belief token) and its description."""

    class_id: int
    description: str

    def __post_init__(self) -> None:
        if isinstance(self.class_id, bool) or not isinstance(self.class_id, int):
            raise RecordError("beliefs", f"class_id must be an integer, got {self.class_id!r}")
        if self.class_id < 0:
            raise RecordError("beliefs", f"class_id must be >= 0, got {self.class_id}")
        if not isinstance(self.description, str):
            raise RecordError("beliefs", f"description must be a string, got {self.description!r}")


def _as_belief(value: Any) -> Belief:
    if isinstance(value, Belief):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - {"class_id", "description"}
        if unknown or "class_id" not in value:
            raise RecordError(
                "beliefs",
                f"each belief needs keys class_id and description, got {sorted(value)}",
            )
        return Belief(value["class_id"], value.get("description", ""))
    raise RecordError("beliefs", f"expected a Belief or a mapping, got {value!r}")


def distribution_from_counts(counts: Sequence[float]) -> list[float]:
    """Maximum-likelihood distribution from belief counts: ``count_i / sum(counts)``."""
    if any(c < 0 for c in counts):
        raise ValueError(f"counts must be non-negative, got {list(counts)}")
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("counts sum to 0: no distribution can be estimated")
    return [c / total for c in counts]


def _check_distribution(values: Sequence[Any], num_beliefs: int) -> tuple[float, ...]:
    """Type, length and sign checks of p* (the sum is checked by the caller)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise RecordError("target_distribution", f"expected a list of numbers, got {values!r}")
    if len(values) != num_beliefs:
        raise RecordError(
            "target_distribution",
            f"has {len(values)} values but there are {num_beliefs} beliefs (K must match)",
        )
    probs = []
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError("target_distribution", f"value {i} is not a number: {value!r}")
        if not math.isfinite(value) or value < 0:
            raise RecordError(
                "target_distribution", f"value {i} is {value}: probabilities must be finite, >= 0"
            )
        probs.append(float(value))
    return tuple(probs)


@dataclass(frozen=True)
class GroupPreferenceExample:
    """A group preference example: prompt, belief set, target ``p*`` and a response pair.

    ``target_distribution[i]`` is the group's probability of ``beliefs[i]``.
    ``chosen_belief`` and ``rejected_belief`` are class ids from ``beliefs``.
    Pass ``renormalize=True`` to rescale a distribution that does not sum to 1
    (with a warning) instead of raising.

    ``context`` is optional text placed before the prompt's ``<Q>`` wrapper
    (the reference code's ``{context}<Q>{prompt}<A>``): the in-context
    examples of in-context fine-tuning, e.g. the ``context`` column of the
    paper's released ICF data. None (the default) is no context.
    """

    prompt: str
    beliefs: tuple[Belief, ...]
    target_distribution: tuple[float, ...]
    chosen_belief: int
    rejected_belief: int
    chosen_response: str
    rejected_response: str
    group: str
    question_id: str | None = None
    style: str | None = None
    context: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    renormalize: InitVar[bool] = False

    def __post_init__(self, renormalize: bool) -> None:
        for name in ("prompt", "chosen_response", "rejected_response", "group"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise RecordError(name, f"must be non-empty text (not only whitespace), got "
                                        f"{value!r}")
        for name in ("question_id", "style", "context"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise RecordError(name, f"must be a string or null, got {value!r}")
        if not isinstance(self.metadata, dict):
            raise RecordError("metadata", f"must be a mapping, got {self.metadata!r}")
        beliefs = self._checked_beliefs()
        blank = [b.class_id for b in beliefs if not b.description.strip()]
        if blank:  # training writes the description after the marker: "<>" teaches nothing
            raise RecordError("beliefs", f"belief {blank[0]} has an empty description")
        if self.chosen_response.strip() == self.rejected_response.strip():
            raise RecordError("rejected_response", "is the same text as chosen_response: the "
                                                   "pair states no preference")
        probs = _check_distribution(self.target_distribution, len(beliefs))
        probs = self._checked_sum(probs, renormalize)
        for name in ("chosen_belief", "rejected_belief"):
            class_id = getattr(self, name)
            is_int = isinstance(class_id, int) and not isinstance(class_id, bool)
            if not is_int or class_id not in {b.class_id for b in beliefs}:
                raise RecordError(
                    name,
                    f"class id {class_id!r} is not in the belief set "
                    f"{[b.class_id for b in beliefs]}",
                )
        # Frozen dataclass: normalised containers are stored through object.__setattr__.
        object.__setattr__(self, "beliefs", beliefs)
        object.__setattr__(self, "target_distribution", probs)

    def _checked_beliefs(self) -> tuple[Belief, ...]:
        if isinstance(self.beliefs, (str, bytes)) or not isinstance(self.beliefs, Sequence):
            raise RecordError("beliefs", f"expected a list of beliefs, got {self.beliefs!r}")
        beliefs = tuple(_as_belief(b) for b in self.beliefs)
        if len(beliefs) < 2:
            raise RecordError(
                "beliefs", f"a belief set needs at least 2 beliefs, got {len(beliefs)}"
            )
        ids = [b.class_id for b in beliefs]
        if len(set(ids)) != len(ids):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            raise RecordError("beliefs", f"class ids must be unique, repeated: {duplicates}")
        return beliefs

    def _checked_sum(self, probs: tuple[float, ...], renormalize: bool) -> tuple[float, ...]:
        total = math.fsum(probs)
        if abs(total - 1.0) <= SUM_TOLERANCE:
            return probs
        if not renormalize or total <= 0:
            hint = "" if total <= 0 else " (pass renormalize=True to rescale it)"
            raise RecordError(
                "target_distribution",
                f"sums to {total:.6g}, not 1 (tolerance {SUM_TOLERANCE}){hint}",
            )
        warnings.warn(
            f"target_distribution of prompt {self.prompt[:40]!r} sums to {total:.6g}; "
            "renormalised to 1",
            stacklevel=4,
        )
        return tuple(p / total for p in probs)

    # ------------------------------------------------------------------ accessors

    @property
    def num_beliefs(self) -> int:
        """K, the size of the belief set."""
        return len(self.beliefs)

    @property
    def class_ids(self) -> tuple[int, ...]:
        """The class ids of the beliefs, in belief order."""
        return tuple(b.class_id for b in self.beliefs)

    def belief_index(self, class_id: int) -> int:
        """Position of ``class_id`` in ``beliefs`` (and in ``target_distribution``)."""
        try:
            return self.class_ids.index(class_id)
        except ValueError:
            raise KeyError(
                f"class id {class_id} is not in the belief set {self.class_ids}"
            ) from None

    def belief(self, class_id: int) -> Belief:
        """The belief with this class id."""
        return self.beliefs[self.belief_index(class_id)]

    def target_probability(self, class_id: int) -> float:
        """``p*`` of the belief with this class id."""
        return self.target_distribution[self.belief_index(class_id)]

    # ------------------------------------------------------------------ dicts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``from_dict(to_dict())`` gives an equal record."""
        return {
            "prompt": self.prompt,
            "beliefs": [
                {"class_id": b.class_id, "description": b.description} for b in self.beliefs
            ],
            "target_distribution": list(self.target_distribution),
            "chosen_belief": self.chosen_belief,
            "rejected_belief": self.rejected_belief,
            "chosen_response": self.chosen_response,
            "rejected_response": self.rejected_response,
            "group": self.group,
            "question_id": self.question_id,
            "style": self.style,
            # Only records that have a context write one: files without ICF data keep their layout.
            **({"context": self.context} if self.context is not None else {}),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, renormalize: bool = False
    ) -> GroupPreferenceExample:
        """Build a record from a ``to_dict`` mapping; unknown or missing keys are errors."""
        if not isinstance(data, Mapping):
            raise RecordError("<record>", f"expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecordError(unknown[0], f"unknown field (known fields: {sorted(known)})")
        for f in dataclasses.fields(cls):
            no_default = (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            if no_default and f.name not in data:
                raise RecordError(f.name, "required field is missing")
        values = dict(data)
        if values.get("metadata") is None:
            values.pop("metadata", None)
        return cls(**values, renormalize=renormalize)


# ---------------------------------------------------------------------- helpers


def majority_belief(example: GroupPreferenceExample) -> int:
    """Class id of the argmax of ``p*`` (the first one in belief order on ties)."""
    probs = example.target_distribution
    return example.beliefs[max(range(len(probs)), key=probs.__getitem__)].class_id


def is_majority_chosen(example: GroupPreferenceExample) -> bool:
    """True when the chosen belief has the largest ``p*`` (ties count as majority)."""
    return example.target_probability(example.chosen_belief) == max(example.target_distribution)


def question_key(record: Any) -> str:
    """The question a record (or prompt group) asks: its ``question_id``, else its prompt
    text (records without ids: each wording counts as its own question)."""
    return record.question_id or record.prompt


def group_question_key(record: Any, *, by_group: bool) -> tuple[str, str]:
    """``(group, question)`` where the prompt names its group (``by_group``: one model for
    several groups, whose rows of one question differ), else ``("", question)``."""
    return (record.group if by_group else "", question_key(record))


def group_prompt_key(record: Any, *, by_group: bool) -> tuple[str, str]:
    """``(group, prompt text)`` where the prompt names its group, else ``("", prompt text)``:
    the key of a distinct prompt (two groups' rows of one wording are two prompts then)."""
    return (record.group if by_group else "", record.prompt)


#: The GDPO paper's three subsets of pairs (Section 3, Figures 2 and 3), in this order; a
#: margin group's index is its code in the trainers' ``margin_group`` column.
MARGIN_GROUPS: tuple[str, ...] = ("majority", "lowest_minority", "others")


def margin_group(example: GroupPreferenceExample) -> str:
    """The paper's subset of a pair, by the ``p*`` of its chosen belief.

    ``majority``: the chosen belief has the prompt's highest ``p*``;
    ``lowest_minority``: it has the lowest ``p*``; ``others``: anything between.
    Ties, decided in this order: a belief tied for the highest share is majority
    (as in :func:`is_majority_chosen`, so a uniform ``p*`` makes every pair
    majority); every belief tied for the lowest share is lowest minority. Shares
    are compared exactly, as the record stores them.
    """
    chosen = example.target_probability(example.chosen_belief)
    if chosen == max(example.target_distribution):
        return "majority"
    if chosen == min(example.target_distribution):
        return "lowest_minority"
    return "others"


# ---------------------------------------------------------------------- JSONL


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def numbered_lines(path: Path) -> Iterator[tuple[int, str | RecordFileError]]:
    """``(line number, text)`` for each line of a (gzipped) UTF-8 file; a line that is not
    UTF-8 comes as a :class:`RecordFileError` naming it (text mode would fail mid-file
    with no line number)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:  # type: ignore[operator]
        for line_number, raw in enumerate(handle, start=1):
            try:
                yield line_number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield line_number, RecordFileError(
                    path, line_number, None,
                    f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1});"
                    " save the file as UTF-8")


def iter_examples(
    path: str | Path, *, renormalize: bool = False
) -> Iterator[GroupPreferenceExample]:
    """Yield the records of a JSONL file (``.jsonl`` or ``.jsonl.gz``); blank lines are skipped.

    Raises :class:`RecordFileError` (file:line: field) on the first bad line.
    """
    for _, example in iter_numbered_examples(path, renormalize=renormalize):
        yield example


def iter_numbered_examples(
    path: str | Path, *, renormalize: bool = False
) -> Iterator[tuple[int, GroupPreferenceExample]]:
    """``(line number, record)`` for each record of a JSONL file, so that later checks (a
    record too long for training, say) can name the line; see :func:`iter_examples`."""
    path = Path(path)
    for line_number, line in numbered_lines(path):
        if isinstance(line, RecordFileError):
            raise line
        if line.strip():
            yield line_number, parse_record_line(path, line_number, line, renormalize=renormalize)


def parse_record_line(path: Path, line_number: int, line: str, *,
                      renormalize: bool = False) -> GroupPreferenceExample:
    """The record on one JSONL line; :class:`RecordFileError` (file:line: field) if bad."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise RecordFileError(path, line_number, None, f"invalid JSON: {error}") from None
    try:
        return GroupPreferenceExample.from_dict(data, renormalize=renormalize)
    except RecordError as error:
        raise RecordFileError(path, line_number, error.field, error.reason) from None
    except TypeError as error:  # e.g. a field of the wrong shape reaching __init__
        raise RecordFileError(path, line_number, None, str(error)) from None


def read_examples(path: str | Path, *, renormalize: bool = False) -> list[GroupPreferenceExample]:
    """All records of a JSONL file; a bad line raises :class:`RecordFileError`."""
    return list(iter_examples(path, renormalize=renormalize))


def write_examples(path: str | Path, examples: Iterable[GroupPreferenceExample]) -> int:
    """Write records as JSONL (gzip when the name ends in ``.gz``); returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with _open_text(path, "w") as handle:
        for count, example in enumerate(examples, start=1):
            if not isinstance(example, GroupPreferenceExample):
                raise TypeError(f"record {count}: expected GroupPreferenceExample, got {example!r}")
            handle.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")
    return count
