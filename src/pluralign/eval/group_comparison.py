"""One model asked the same questions for several groups (`pluralign demo --groups`).

Reads the evaluation folder of a file with several groups (``eval.json`` with
its ``groups`` entry, and ``predictions.jsonl``) and picks the questions whose
groups' target distributions differ most, so a reader sees one model give each
group its own distribution. Beside them, over every evaluated question: the
mean JSD between the groups' predicted distributions next to the mean JSD
between their targets (a model that ignored the group would show 0 against
the targets' spread).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pluralign.beliefs.distances import jsd_per_prompt


@dataclass
class QuestionForGroups:
    """One question asked for every group: each group's target and the model's prediction."""

    question_id: str
    prompt: str  #: the first group's wording (every group gets the same paraphrase)
    beliefs: list[str]  #: belief descriptions, in class order
    targets: dict[str, list[float]]  #: group -> p*
    predicted: dict[str, list[float]]  #: group -> the model's one-forward distribution
    target_spread: float  #: mean pairwise JSD between the groups' targets


@dataclass
class GroupComparison:
    """Per-group JSD of every model, and one model's answers to the same questions."""

    model: str
    groups: list[str]
    jsd: dict[str, dict[str, float]]  #: model label -> group -> JSD
    reference_lines: dict[str, dict[str, float]]  #: group -> line -> JSD
    examples: list[QuestionForGroups] = field(default_factory=list)
    predicted_spread: float = float("nan")  #: mean pairwise JSD between groups' predictions
    target_spread: float = float("nan")  #: the same between their targets


def _pairwise_jsd(distributions: list[list[float]]) -> float:
    pairs = list(itertools.combinations(distributions, 2))
    return sum(float(jsd_per_prompt([a], [b])[0]) for a, b in pairs) / len(pairs)


def _questions(rows: list[dict[str, Any]], groups: list[str]) -> list[QuestionForGroups]:
    """Questions the model was asked for every group, with the group's target and reading."""
    by_question: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row.get("predicted") is not None:
            by_question.setdefault(row["question_id"], {}).setdefault(row["group"], row)
    questions = []
    for question_id, per_group in by_question.items():
        if not all(g in per_group for g in groups):
            continue
        first = per_group[groups[0]]
        targets = {g: per_group[g]["target"] for g in groups}
        questions.append(QuestionForGroups(
            question_id, first["prompt"], [b["description"] for b in first["beliefs"]],
            targets, {g: per_group[g]["predicted"] for g in groups},
            _pairwise_jsd(list(targets.values()))))
    return questions


def compare_groups(eval_dir: Path, *, model: str, examples: int = 3) -> GroupComparison:
    """Per-group JSD from ``eval_dir/eval.json`` and ``model``'s answers to the
    ``examples`` questions whose groups' targets differ most."""
    summary = json.loads((eval_dir / "eval.json").read_text())
    if "groups" not in summary:
        raise ValueError(f"{eval_dir / 'eval.json'}: no per-group results (`groups`); the "
                         "evaluated file holds one group")
    breakdown = summary["groups"]
    groups = breakdown["groups"]
    jsd = {label: {g: entry["jsd"][g]["value"] for g in groups}
           for label, entry in breakdown["models"].items()}
    lines = {g: {name: line["value"] for name, line in per.items()}
             for g, per in breakdown["reference_lines"].items()}
    with open(eval_dir / "predictions.jsonl", encoding="utf-8") as handle:
        rows = [r for r in map(json.loads, handle) if r["model"] == model]
    questions = _questions(rows, groups)
    comparison = GroupComparison(model, groups, jsd, lines)
    if questions:
        comparison.examples = sorted(questions, key=lambda q: -q.target_spread)[:examples]
        comparison.predicted_spread = sum(_pairwise_jsd(list(q.predicted.values()))
                                          for q in questions) / len(questions)
        comparison.target_spread = sum(q.target_spread for q in questions) / len(questions)
    return comparison
