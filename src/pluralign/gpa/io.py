"""Stage files of a GPA work folder: names, JSONL in and out, and the stage report."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: The file each stage writes into the work folder (and the next stage reads).
STAGE_FILES = {
    "ingest": "conversations.jsonl",
    "ingest_report": "ingest_report.json",
    "signals": "signals.jsonl",
    "attributes": "attributes.jsonl",
    "rules": "rules.jsonl",
    "rubrics": "rubrics.json",
    "rubrics_md": "rubrics.md",
    "context": "ct_answers.jsonl",
    "pairs": "ft_pairs.jsonl",
    "records": "ft_records.jsonl",
    "finetune": "finetune.json",
    "evaluate": "evaluation.json",
    "evaluate_md": "evaluation.md",
    "responses": "eval_responses.jsonl",
    "judgments": "eval_judgments.jsonl",
    "adherence": "eval_adherence.jsonl",
    "pipeline": "pipeline_report.json",
    "data_size": "data_size.json",
    "data_size_md": "data_size.md",
    "data_size_responses": "data_size_responses.jsonl",
}


class StageInputError(FileNotFoundError):
    """A stage's input file is missing: the stage before it has not been run."""


def stage_path(work: str | Path, stage: str) -> Path:
    return Path(work) / STAGE_FILES[stage]


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as JSONL through a temporary file (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise StageInputError(f"{path} does not exist: run the stage that writes it first")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None


def write_json(path: str | Path, payload: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    return path


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise StageInputError(f"{path} does not exist: run the stage that writes it first")
    return json.loads(path.read_text(encoding="utf-8"))
