"""Writing an evaluation: ``eval.json`` (summaries) and ``predictions.jsonl`` (per prompt).

The report (``report.md``, ``report.html``) is :mod:`pluralign.eval.report`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pluralign.eval.by_group import GroupBreakdown
from pluralign.eval.config import EvalConfig
from pluralign.eval.metrics import MetricResult
from pluralign.eval.predictions import ModelEvaluation


def write_outputs(out: Path, config: EvalConfig, evaluations: Sequence[ModelEvaluation],
                  lines: dict[str, MetricResult], by_group: GroupBreakdown | None = None
                  ) -> dict[str, Path]:
    """``eval.json`` (summaries; per group under ``groups`` for a file of several groups)
    and ``predictions.jsonl`` (one line per model and prompt)."""
    summary: dict[str, Any] = {
        "data": config.data, "judge": config.judge,
        "prompts": len(evaluations[0].predictions) if evaluations else 0,
        "reference_lines": {k: v.as_dict() for k, v in lines.items()},
        "models": {e.label: e.to_dict() for e in evaluations},
        "config": config.to_dict(),
    }
    if by_group is not None:  # a one-group file's eval.json keeps its layout
        summary["groups"] = by_group.to_dict()
    eval_path = out / "eval.json"
    eval_path.write_text(json.dumps(_finite(summary), indent=2, ensure_ascii=False))
    pred_path = out / "predictions.jsonl"
    with open(pred_path, "w", encoding="utf-8") as handle:
        for e in evaluations:
            for p in e.predictions:
                handle.write(json.dumps(_finite(p.to_dict(e.label)), ensure_ascii=False) + "\n")
    return {"eval": eval_path, "predictions": pred_path}


def _finite(value: Any) -> Any:
    """NaN (an empty metric) becomes null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

