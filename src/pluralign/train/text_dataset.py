"""Text preference datasets: what :class:`~pluralign.train.preference.GDPOTrainer` takes as
TRL's ``DPOTrainer`` takes ``prompt``/``chosen``/``rejected`` text, and tokenises itself.

A text dataset has one row per record and one column per field of
:class:`~pluralign.data.records.GroupPreferenceExample` (its ``to_dict`` layout),
so a record file loads as one unchanged:
``datasets.load_dataset("json", data_files="train.jsonl")["train"]``. Rows are
validated by the record itself; a bad row fails with one line naming the
dataset, the row index and the field. The records are then tokenised by
:func:`pluralign.train.dataset.preference_dataset`, as the ``pluralign train``
path tokenises them. With ``group_in_prompt`` each prompt
names its row's group, as ``pluralign train --group_in_prompt`` writes it;
without, a dataset whose groups give one question different targets is warned
about (:func:`pluralign.train.groups.warn_conflicting_groups`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from datasets import Dataset

from pluralign.beliefs.formats import (
    FORMAT_METADATA_KEY,
    BeliefMarkerError,
    GroupLineError,
    SequenceFormat,
    named_format,
)
from pluralign.beliefs.tokenize import add_format_tokens, belief_marker_id, separator_id
from pluralign.data.records import GroupPreferenceExample, RecordError
from pluralign.train.dataset import preference_dataset
from pluralign.train.groups import warn_conflicting_groups

logger = logging.getLogger(__name__)

#: Columns of a text dataset: the record's fields, in its order.
TEXT_COLUMNS = tuple(f.name for f in dataclasses.fields(GroupPreferenceExample))
#: The columns every text dataset needs (record fields without a default).
REQUIRED_TEXT_COLUMNS = tuple(
    f.name for f in dataclasses.fields(GroupPreferenceExample)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
#: TRL's text column names and the record field each one stands for (for the hint only).
TRL_COLUMN_NAMES = {"chosen": "chosen_response", "rejected": "rejected_response"}
#: Columns of a tokenised preference dataset (:func:`pluralign.train.dataset.preference_rows`).
TOKENIZED_MARKER_COLUMN = "prompt_ids"


class TextRowError(ValueError):
    """A row of a text dataset is not a valid record; the message names row and field."""


def is_text_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` holds text records rather than tokenised rows."""
    return TOKENIZED_MARKER_COLUMN not in set(dataset.column_names or ())


def check_text_columns(columns: Iterable[str], name: str) -> None:
    """ValueError in one line naming the first missing or unknown column of a text dataset."""
    columns = set(columns)
    missing = [c for c in REQUIRED_TEXT_COLUMNS if c not in columns]
    unknown = sorted(columns - set(TEXT_COLUMNS))
    layout = (f"a text dataset has one column per field of "
              f"pluralign.data.records.GroupPreferenceExample ({', '.join(REQUIRED_TEXT_COLUMNS)};"
              f" optional: {', '.join(c for c in TEXT_COLUMNS if c not in REQUIRED_TEXT_COLUMNS)})"
              ", or give rows tokenised by pluralign.train.dataset.preference_dataset(records, "
              "tokenizer, fmt, pairing=...)")
    if missing:
        renamed = [f"{trl} -> {ours}" for trl, ours in TRL_COLUMN_NAMES.items()
                   if trl in columns and ours in missing]
        hint = f" (rename the TRL columns: {', '.join(renamed)})" if renamed else ""
        raise ValueError(f"the {name} dataset lacks the column '{missing[0]}'{hint}: {layout}")
    if unknown:
        raise ValueError(f"the {name} dataset has the column '{unknown[0]}', which is no record "
                         f"field (drop it with dataset.remove_columns): {layout}")


def record_from_row(row: Mapping[str, Any], index: int, name: str) -> GroupPreferenceExample:
    """The record of row ``index``; :class:`TextRowError` naming row and field if invalid."""
    try:
        return GroupPreferenceExample.from_dict(row)
    except RecordError as error:
        raise TextRowError(f"{name} dataset row {index}: field '{error.field}': "
                           f"{error.reason}") from None
    except TypeError as error:  # a value of the wrong shape reaching the constructor
        raise TextRowError(f"{name} dataset row {index}: {error}") from None


def records_from_dataset(dataset: Any, name: str) -> list[GroupPreferenceExample]:
    """Every row of a text dataset as a validated record (row order kept)."""
    check_text_columns(dataset.column_names, name)
    records = [record_from_row(row, index, name) for index, row in enumerate(dataset)]
    if not records:
        raise ValueError(f"the {name} dataset holds no rows")
    return records


def format_tokens_missing(tokenizer: Any, fmt: SequenceFormat) -> bool:
    """Whether ``fmt``'s separator or special belief markers are not single tokens yet."""
    try:
        separator_id(tokenizer, fmt)
        if fmt.marker == "special":
            belief_marker_id(tokenizer, 0, "special")
    except BeliefMarkerError:
        return True
    return False


def add_missing_format_tokens(model: Any, tokenizer: Any, fmt: SequenceFormat) -> None:
    """Add ``fmt``'s tokens to ``tokenizer`` and grow ``model``'s embeddings (a transformers
    model or a peft model around one), as ``pluralign train`` does before LoRA goes on."""
    if not format_tokens_missing(tokenizer, fmt):
        return
    if model is None or isinstance(model, str):
        raise ValueError(
            f"model: the sequence format adds tokens ({fmt.separator or 'belief markers'}) that "
            "the tokenizer lacks, and the model's embeddings must grow with them; pass a "
            "loaded model, not its name (or a sequence_format that adds none, e.g. paper)")
    before = len(tokenizer)
    add_format_tokens(tokenizer, model, fmt)
    logger.info("added %d token(s) of the sequence format to the tokenizer; the embeddings "
                "have %d rows", len(tokenizer) - before, len(tokenizer))


def _check_markers(records: list[GroupPreferenceExample], tokenizer: Any, fmt: SequenceFormat,
                   name: str) -> None:
    """TextRowError at the first row whose class id is not one marker token."""
    checked: set[int] = set()
    for index, record in enumerate(records):
        for class_id in set(record.class_ids) - checked:
            try:
                belief_marker_id(tokenizer, class_id, fmt.marker)
            except BeliefMarkerError as error:
                raise TextRowError(f"{name} dataset row {index}: field 'beliefs': "
                                   f"{error}") from None
            checked.add(class_id)


def _check_groups(records: list[GroupPreferenceExample], fmt: SequenceFormat, name: str
                  ) -> None:
    """TextRowError at the first row whose group ``fmt``'s group line cannot write (blank, or
    holding the separator); a dataset is warned about where the prompts name no group but
    two groups give one question different targets."""
    if not fmt.names_group:
        warn_conflicting_groups(list(enumerate(records)), f"the {name} dataset", fmt)
        return
    for index, record in enumerate(records):
        try:
            fmt.question_text("", record.group)
        except GroupLineError as error:
            raise TextRowError(f"{name} dataset row {index}: field 'group': "
                               f"{error.reason}") from None


def _check_lengths(data: Dataset, max_length: int | None, name: str) -> None:
    """TextRowError at the first row longer than ``max_length``: the collator would cut it,
    and a cut record loses its response (or, with a long prompt, its belief)."""
    if max_length is None:
        return
    columns = zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)
    for index, (prompt, chosen, rejected) in enumerate(columns):
        length = len(prompt) + max(len(chosen), len(rejected))
        if length > max_length:
            raise TextRowError(f"{name} dataset row {index}: prompt + belief + response are "
                               f"{length} tokens, max_length is {max_length}; raise max_length "
                               "or shorten the record")


def tokenize_text_dataset(dataset: Any, tokenizer: Any, format_name: str, *, pairing: str,
                          name: str, max_length: int | None, group_in_prompt: bool = False
                          ) -> Dataset:
    """A text dataset tokenised for :class:`~pluralign.train.preference.GDPOTrainer`:
    the rows of :func:`~pluralign.train.dataset.preference_dataset` for its records, in
    ``format_name``'s format (with the group line where ``group_in_prompt``)."""
    records = records_from_dataset(dataset, name)
    named = {str(r.metadata[FORMAT_METADATA_KEY]) for r in records
             if r.metadata.get(FORMAT_METADATA_KEY) is not None}
    if named and format_name not in named:  # e.g. reviews records trained as separated
        logger.warning("the %s records name sequence_format %s in their metadata; the trainer "
                       "tokenises them as %r (GDPOConfig.sequence_format)", name,
                       " and ".join(sorted(named)), format_name)
    fmt = named_format(format_name, group_in_prompt=group_in_prompt)
    _check_markers(records, tokenizer, fmt, name)
    _check_groups(records, fmt, name)
    data = preference_dataset(records, tokenizer, fmt, pairing=pairing)
    _check_lengths(data, max_length, name)
    return data
