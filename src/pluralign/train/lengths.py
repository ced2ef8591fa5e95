"""Records too long for ``max_length``: an error naming file and line, or dropped and counted.

The collators cut sequences at ``max_length``. A record cut there loses the
end of its response, or all of it (the preference loss is then exactly ln 2
and teaches nothing), and with a long prompt the belief would be read at a
position inside the prompt. So no record is trained on cut: before training,
every record is measured as it will be tokenised (framed with the longest
frame when framing is on), and one that does not fit is an error
(``too_long: error``, the default) or is left out and counted on the console
and in ``run.json`` (``too_long: drop``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pluralign.beliefs.formats import BeliefMarkerError, SequenceFormat
from pluralign.beliefs.tokenize import build_sequence, encode_prompt
from pluralign.data.records import GroupPreferenceExample, RecordFileError
from pluralign.runs import META_NAME

logger = logging.getLogger(__name__)


class RecordTooLongError(ValueError):
    """A record does not fit in ``max_length``; the message gives file:line."""


@dataclass
class LengthReport:
    """Records of one file left out because they do not fit, by line number."""

    path: str
    dropped_lines: list[int] = field(default_factory=list)
    longest: int = 0  #: tokens of the longest record seen

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path, "dropped": len(self.dropped_lines),
                "dropped_lines": self.dropped_lines[:100], "longest_tokens": self.longest}


def _longest_frame(tokenizer: Any, frames: Sequence[str]) -> str:
    return max(frames, key=lambda f: len(tokenizer(f.format(prompt=""))["input_ids"]))


def record_length(record: GroupPreferenceExample, tokenizer: Any, fmt: SequenceFormat,
                  frame: str = "{prompt}") -> int:
    """Tokens of the longer of the record's two sequences (chosen, rejected), each with
    its own belief, as :func:`pluralign.beliefs.tokenize.build_sequence` lays them out."""
    prompt_ids = encode_prompt(tokenizer, frame.format(prompt=record.prompt), fmt,
                               context=record.context, beliefs=record.beliefs,
                               group=record.group)
    unbounded = dataclasses.replace(fmt, max_length=None)
    lengths = []
    for belief_id, response in ((record.chosen_belief, record.chosen_response),
                                (record.rejected_belief, record.rejected_response)):
        belief = record.belief(belief_id)
        sequence = build_sequence(tokenizer, prompt_ids, belief.class_id, belief.description,
                                  response, unbounded, beliefs=record.beliefs)
        lengths.append(len(sequence["input_ids"]))
    return max(lengths)


def fitting_records(
    numbered: Sequence[tuple[int, GroupPreferenceExample]], path: str, tokenizer: Any,
    fmt: SequenceFormat, *, max_length: int, policy: str,
    frames: Sequence[str] = ("{prompt}",),
) -> tuple[list[GroupPreferenceExample], LengthReport]:
    """The records of ``numbered`` (``(line, record)`` read from ``path``) that fit in
    ``max_length`` tokens.

    ``policy="error"`` raises :class:`RecordTooLongError` at the first record that
    does not fit; ``"drop"`` leaves it out and lists its line in the report.
    """
    if policy not in ("error", "drop"):
        raise ValueError(f"too_long: must be 'error' or 'drop', got {policy!r}")
    # The prompt as written and in the longest frame (one measurement when they coincide).
    measured = dict.fromkeys(("{prompt}", _longest_frame(tokenizer, frames)))
    kept: list[GroupPreferenceExample] = []
    report = LengthReport(path)
    for line, record in numbered:
        try:
            length = max(record_length(record, tokenizer, fmt, frame) for frame in measured)
        except BeliefMarkerError as error:  # a class id the marker mode cannot write
            raise RecordFileError(path, line, "beliefs", str(error)) from None
        report.longest = max(report.longest, length)
        if length <= max_length:
            kept.append(record)
        elif policy == "drop":
            report.dropped_lines.append(line)
        else:
            raise RecordTooLongError(
                f"{path}:{line}: prompt + belief + response are {length} tokens, max_length is "
                f"{max_length}; raise max_length, shorten the record, or pass --too_long drop "
                "to leave such records out (counted in run.json)")
    if report.dropped_lines:
        logger.warning("%s: left out %d records longer than max_length %d (lines %s)", path,
                       len(report.dropped_lines), max_length,
                       ", ".join(map(str, report.dropped_lines[:10]))
                       + (" ..." if len(report.dropped_lines) > 10 else ""))
    if not kept:
        raise RecordTooLongError(f"{path}: no record fits in max_length {max_length}")
    return kept, report


def record_length_reports(folder: Path, reports: Sequence[LengthReport]) -> None:
    """Add the reports to the run's ``run.json`` under ``too_long``."""
    meta_path = folder / META_NAME
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta["too_long"] = [report.to_dict() for report in reports]
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
