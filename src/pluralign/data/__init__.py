"""Data: the group preference record shared by data builders and trainers.

See :mod:`pluralign.data.records` for the record type and its JSONL files.
"""

from __future__ import annotations

from pluralign.data.records import (
    Belief,
    GroupPreferenceExample,
    RecordError,
    RecordFileError,
    distribution_from_counts,
    is_majority_chosen,
    iter_examples,
    majority_belief,
    read_examples,
    write_examples,
)

__all__ = [
    "Belief",
    "GroupPreferenceExample",
    "RecordError",
    "RecordFileError",
    "distribution_from_counts",
    "is_majority_chosen",
    "iter_examples",
    "majority_belief",
    "read_examples",
    "write_examples",
]
