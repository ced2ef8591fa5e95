"""Evaluation per group: belief JSD of each model per group, its mean over groups, and the
reference lines per group.

A file of several groups (one group-conditioned model, or several single-group
models compared on one file) is summarised per group as well as over all
prompts: a group with many prompts would otherwise hide a group the model
fits badly. The mean over groups weighs every group alike (the mean of the
groups' JSDs), whatever its number of prompts. A file of one group has no
breakdown (:func:`group_breakdown` returns None), so its outputs stay as they
were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pluralign.eval.metrics import SEED, MetricResult, jsd_where_read
from pluralign.eval.predictions import ModelEvaluation, PromptGroup
from pluralign.eval.reference import reference_lines


@dataclass
class GroupBreakdown:
    """Per-group JSD of every model and the reference lines per group."""

    groups: list[str]  #: in the order the evaluated file first names them
    prompts: dict[str, int]  #: distinct prompts per group
    jsd: dict[str, dict[str, MetricResult]]  #: model label -> group -> JSD
    reference_lines: dict[str, dict[str, MetricResult]]  #: group -> line -> JSD

    def mean_jsd(self, label: str) -> float:
        """A model's JSD averaged over groups (each group counts once; NaN: none read)."""
        return mean_over_groups(r.value for r in self.jsd[label].values())

    def mean_reference_line(self, line: str) -> float:
        """A reference line's JSD averaged over groups."""
        return mean_over_groups(lines[line].value for lines in self.reference_lines.values())

    def line_names(self) -> list[str]:
        return list(next(iter(self.reference_lines.values()), {}))

    def to_dict(self) -> dict[str, Any]:
        """The ``groups`` entry of ``eval.json``."""
        return {
            "groups": self.groups, "prompts": self.prompts,
            "models": {label: {"jsd": {g: r.as_dict() for g, r in per.items()},
                               "jsd_mean_over_groups": self.mean_jsd(label)}
                       for label, per in self.jsd.items()},
            "reference_lines": {g: {name: r.as_dict() for name, r in lines.items()}
                                for g, lines in self.reference_lines.items()},
            "reference_lines_mean_over_groups": {name: self.mean_reference_line(name)
                                                 for name in self.line_names()},
        }


def mean_over_groups(values: Any) -> float:
    """The mean of the finite values (NaN when there is none)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def group_names(prompts: Sequence[PromptGroup]) -> list[str]:
    """The distinct groups of ``prompts`` in order of first appearance."""
    return list(dict.fromkeys(p.group for p in prompts))


def group_breakdown(evaluations: Sequence[ModelEvaluation], prompts: Sequence[PromptGroup], *,
                    seed: int = SEED) -> GroupBreakdown | None:
    """Per-group JSD of each evaluation and per-group reference lines; None for one group."""
    names = group_names(prompts)
    if len(names) < 2:
        return None
    jsd = {}
    for e in evaluations:
        per_group = {}
        for name in names:
            own = [p for p in e.predictions if p.group.group == name]
            per_group[name] = jsd_where_read("jsd", [p.predicted for p in own],
                                             [p.group.target for p in own], seed)
        jsd[e.label] = per_group
    lines = {name: reference_lines([p.target for p in prompts if p.group == name], seed=seed)
             for name in names}
    counts = {name: sum(p.group == name for p in prompts) for name in names}
    return GroupBreakdown(names, counts, jsd, lines)
