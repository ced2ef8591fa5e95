"""``evaluate(config)``: every metric for one or more models on a record file, plus a report.

Per model: the one-forward-pass belief distribution (JSD), the sampled
estimate from ``belief_samples`` first tokens (JSD beside it), ``n_samples``
belief-first generations per prompt (CBC), judged (BPC) and compared with the
reference response of the generated belief (RS); reward margins against a
reference model when one is given; training curves when the model folder
belongs to a run. Writes ``eval.json``, ``predictions.jsonl`` and the report
(``report.md``, ``report.html``) into ``config.output_dir``.

The work is split by concern: :mod:`~pluralign.eval.config` (``EvalConfig``),
:mod:`~pluralign.eval.predictions` (the data model),
:mod:`~pluralign.eval.predict` (running the models),
:mod:`~pluralign.eval.scoring` (verdicts, similarities, registered metrics),
:mod:`~pluralign.eval.writing` (eval.json, predictions.jsonl) and
:mod:`~pluralign.eval.report`. This module ties them together and re-exports
their public names, so ``from pluralign.eval.evaluate import ...`` keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pluralign.data.records import read_examples
from pluralign.eval.by_group import GroupBreakdown, group_breakdown
from pluralign.eval.config import EvalConfig
from pluralign.eval.predict import (
    evaluate_model,
    kshot_evaluation,
    marker_mass_after_descriptions,
    predict_local,
    read_curves,
    run_dir_of,
)
from pluralign.eval.predictions import (
    EvalResult,
    ModelEvaluation,
    PromptGroup,
    PromptPrediction,
    group_prompts,
)
from pluralign.eval.reference import reference_lines
from pluralign.eval.report import write_report
from pluralign.eval.scoring import (
    judge_predictions,
    marker_start_share,
    score_predictions,
    similarity_predictions,
)
from pluralign.eval.writing import write_outputs
from pluralign.registry import JUDGES, load_plugins
from pluralign.runs import FINAL_DIR

__all__ = [
    "EvalConfig", "EvalResult", "GroupBreakdown", "ModelEvaluation", "PromptGroup",
    "PromptPrediction", "build_judge", "compare", "evaluate", "evaluate_model", "group_prompts",
    "judge_predictions", "marker_mass_after_descriptions", "marker_start_share", "model_label",
    "predict_local", "read_curves", "run_dir_of", "score_predictions", "similarity_predictions",
    "write_outputs",
]

logger = logging.getLogger(__name__)


def model_label(ref: str, taken: Sequence[str] = ()) -> str:
    """A short unique label: the run name for ``runs/NAME/final``, else the folder or keyword."""
    path = Path(ref)
    label = path.parent.name if path.name in (FINAL_DIR, "") and path.parent.name else path.name
    label = label or ref
    base, i = label, 2
    while label in taken:
        label, i = f"{base}-{i}", i + 1
    return label



def build_judge(config: EvalConfig) -> Any:
    """The judge ``config.judge`` names in ``JUDGES``, with the config's options.

    A judge factory with a ``from_eval_config`` classmethod picks its own
    options from the config; one without it (a plugin's) is built without any.
    """
    factory = JUDGES.get(config.judge)
    from_config = getattr(factory, "from_eval_config", None)
    return from_config(config) if from_config is not None else factory()


def _prompts(config: EvalConfig) -> tuple[list[PromptGroup], list[Any]]:
    """The distinct prompts of ``config.data`` (the first ``max_prompts``) and their records."""
    records = read_examples(config.data)
    if not records:
        raise ValueError(f"{config.data}: holds no records (empty, or blank lines only)")
    groups = group_prompts(records)
    if config.max_prompts is not None:
        groups = groups[: config.max_prompts]
        kept = {(g.prompt, g.group) for g in groups}
        records = [r for r in records if (r.prompt, r.group) in kept]
    return groups, records


def evaluate(config: EvalConfig, *, judge: Any = None, embedder: Any = None) -> EvalResult:
    """Evaluate every model of ``config`` and write eval.json, predictions.jsonl and the report.

    ``judge`` and ``embedder`` replace the configured ones (objects, e.g. in tests).
    """
    if not config.models and not config.kshot:
        raise ValueError("models: give at least one model to evaluate (or kshot > 0)")
    if not config.data:
        raise ValueError("data: a JSONL record file is required")
    groups, records = _prompts(config)
    for failure in load_plugins():  # plugins' metrics are scored beside pluralign's
        logger.warning("plugin failed to load: %s", failure)
    judge = judge if judge is not None else build_judge(config)
    embedder = embedder if embedder is not None else config.embedder
    evaluations: list[ModelEvaluation] = []
    for ref in config.models:
        label = model_label(ref, [e.label for e in evaluations])
        logger.info("evaluating %s (%s) on %d prompts", label, ref, len(groups))
        evaluations.append(evaluate_model(ref, label, groups, records, config, judge, embedder))
    if config.kshot:
        evaluations.append(kshot_evaluation(groups, records, config, judge, embedder))
    lines = reference_lines([g.target for g in groups], seed=config.seed)
    by_group = group_breakdown(evaluations, groups, seed=config.seed)  # None for one group
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = write_outputs(out, config, evaluations, lines, by_group)
    files.update(write_report(out, evaluations, lines, plot_questions=config.plot_questions,
                              by_group=by_group))
    return EvalResult(evaluations, lines, out, files, by_group)


def compare(runs: Sequence[str], data: str, out: str = "eval", **options: Any) -> EvalResult:
    """Evaluate several runs side by side in one report (``pluralign eval --model A --model B``)."""
    return evaluate(EvalConfig(models=list(runs), data=data, output_dir=out, **options))
