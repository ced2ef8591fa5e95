"""The evaluation's data model: prompts, a model's predictions for them, what was measured.

:class:`PromptGroup` is one distinct prompt of a record file (beliefs, p*,
reference responses), :class:`PromptPrediction` a model's readings and
generations for it (filled in by :mod:`pluralign.eval.scoring`),
:class:`ModelEvaluation` everything measured for one model and
:class:`EvalResult` what :func:`pluralign.eval.evaluate.evaluate` returns.
Plain data: the modules that predict, score, write and report all read these
and none of them is needed to build one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pluralign.data.records import Belief, GroupPreferenceExample
from pluralign.eval.metrics import MetricResult, jsd

if TYPE_CHECKING:
    from pluralign.eval.by_group import GroupBreakdown
    from pluralign.eval.generate import Generation


@dataclass
class PromptGroup:
    """One distinct prompt of the records: its beliefs, p* and reference responses per belief."""

    prompt: str
    group: str
    question_id: str | None
    beliefs: tuple[Belief, ...]
    target: list[float]
    references: dict[int, list[str]] = field(default_factory=dict)
    #: Text before the prompt's template (in-context examples; see GroupPreferenceExample).
    context: str | None = None

    @property
    def class_ids(self) -> tuple[int, ...]:
        return tuple(b.class_id for b in self.beliefs)

    def description(self, class_id: int | None) -> str:
        for b in self.beliefs:
            if b.class_id == class_id:
                return b.description
        return ""

    def reference_for(self, class_id: int | None) -> str | None:
        refs = self.references.get(class_id) if class_id is not None else None
        return refs[0] if refs else None


def group_prompts(records: Sequence[GroupPreferenceExample]) -> list[PromptGroup]:
    """Distinct (prompt, group) pairs in file order, with every belief's reference responses."""
    groups: dict[tuple[str, str], PromptGroup] = {}
    for r in records:
        key = (r.prompt, r.group)
        if key not in groups:
            groups[key] = PromptGroup(r.prompt, r.group, r.question_id, r.beliefs,
                                      list(r.target_distribution), context=r.context)
        refs = groups[key].references
        for class_id, text in ((r.chosen_belief, r.chosen_response),
                               (r.rejected_belief, r.rejected_response)):
            if text not in refs.setdefault(class_id, []):
                refs[class_id].append(text)
    return list(groups.values())


@dataclass
class PromptPrediction:
    """A model's predictions for one prompt, and their judgements."""

    group: PromptGroup
    predicted: list[float] | None  #: None: an API baseline whose samples held no belief
    mass: float | None = None
    sampled: list[float] | None = None
    sampled_counts: list[int] | None = None
    off_belief: int | None = None
    generations: list[Generation] = field(default_factory=list)
    #: Mean full-vocabulary mass on belief markers right after each belief's description
    #: (a format leak when high); None where not measured (API baselines).
    after_description_mass: float | None = None
    verdicts: list[str] = field(default_factory=list)
    similarities: list[float | None] = field(default_factory=list)
    api_errors: int = 0

    def to_dict(self, model: str) -> dict[str, Any]:
        g = self.group
        jsd_value = (None if self.predicted is None
                     else float(jsd(self.predicted, g.target).value))
        generations = []
        for i, gen in enumerate(self.generations):
            row = gen.to_dict()
            row["verdict"] = self.verdicts[i] if i < len(self.verdicts) else None
            row["rs"] = self.similarities[i] if i < len(self.similarities) else None
            generations.append(row)
        return {
            "model": model, "prompt": g.prompt, "group": g.group, "question_id": g.question_id,
            "beliefs": [{"class_id": b.class_id, "description": b.description} for b in g.beliefs],
            "target": g.target, "predicted": self.predicted, "jsd": jsd_value, "mass": self.mass,
            "sampled": self.sampled, "sampled_counts": self.sampled_counts,
            "off_belief": self.off_belief,
            "after_description_mass": self.after_description_mass, "generations": generations,
            **({"context": g.context} if g.context is not None else {}),
        }


@dataclass
class ModelEvaluation:
    """Everything measured for one model (or baseline)."""

    label: str
    model: str
    method: str | None
    predictions: list[PromptPrediction]
    metrics: dict[str, MetricResult]
    margins: Any = None  # MarginsResult
    curves: list[dict[str, Any]] | None = None

    def judge_failures(self) -> dict[str, int]:
        verdicts = [v for p in self.predictions for v in p.verdicts]
        return {"parse_failure": verdicts.count("parse_failure"),
                "api_error": verdicts.count("api_error")}

    def to_dict(self) -> dict[str, Any]:
        masses = [p.mass for p in self.predictions if p.mass is not None]
        return {
            "model": self.model, "method": self.method,
            "metrics": {k: v.as_dict() for k, v in self.metrics.items()},
            "margins": self.margins.as_dict() if self.margins is not None else None,
            "judge_failures": self.judge_failures(),
            "belief_mass_mean": float(np.mean(masses)) if masses else None,
            "prompts": len(self.predictions),
            "generations": sum(len(p.generations) for p in self.predictions),
        }


@dataclass
class EvalResult:
    """What :func:`pluralign.eval.evaluate.evaluate` measured and where it wrote it."""

    evaluations: list[ModelEvaluation]
    reference_lines: dict[str, MetricResult]
    out_dir: Path
    files: dict[str, Path]
    #: Per-group JSD and reference lines (:mod:`pluralign.eval.by_group`); None for one group.
    by_group: GroupBreakdown | None = None

