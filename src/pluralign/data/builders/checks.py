"""Check and summarise record files: ``validate`` lists problems, ``stats`` counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pluralign.data.records import (
    GroupPreferenceExample,
    RecordFileError,
    is_majority_chosen,
    numbered_lines,
    parse_record_line,
)

#: The largest class id the default (digit) belief markers can write as one token.
MAX_DIGIT_CLASS_ID = 9


@dataclass
class ValidationResult:
    """Records that read fine, and one ``file:line: field: reason`` string per bad line."""

    path: str
    valid: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_file(path: str | Path) -> ValidationResult:
    """Read every line of a record file and report each bad one (not only the first)."""
    path = Path(path)
    result = ValidationResult(str(path))
    for n, line in numbered_lines(path):
        if isinstance(line, RecordFileError):
            result.problems.append(str(line))
            continue
        if not line.strip():
            continue
        try:
            record = parse_record_line(path, n, line)
        except RecordFileError as error:  # the readers' own message: file:line: field
            result.problems.append(str(error))
            continue
        too_big = [c for c in record.class_ids if c > MAX_DIGIT_CLASS_ID]
        if too_big:  # the default digit markers are one token each only for 0-9
            result.problems.append(
                f"{path}:{n}: field 'beliefs': class id {too_big[0]} has no single-digit "
                f"marker (0-{MAX_DIGIT_CLASS_ID}); train with --belief_format special")
            continue
        result.valid += 1
    if not result.valid and not result.problems:
        result.problems.append(f"{path}: holds no records (empty, or blank lines only)")
    return result


def dataset_stats(examples: Sequence[GroupPreferenceExample]) -> dict[str, Any]:
    """Groups, questions, belief-set sizes, chosen beliefs, majority/minority chosen share."""
    n = len(examples)
    majority = sum(is_majority_chosen(e) for e in examples)
    chosen = Counter(e.belief(e.chosen_belief).description for e in examples)
    return {
        "examples": n,
        "groups": dict(Counter(e.group for e in examples).most_common()),
        "questions": len({e.question_id or e.prompt for e in examples}),
        "prompts": len({e.prompt for e in examples}),
        "styles": len({e.style for e in examples if e.style}),
        "beliefs per question": dict(sorted(Counter(e.num_beliefs for e in examples).items())),
        "chosen beliefs (top 10)": dict(chosen.most_common(10)),
        "majority chosen share": round(majority / n, 4) if n else 0.0,
        "minority chosen share": round(1 - majority / n, 4) if n else 0.0,
    }
