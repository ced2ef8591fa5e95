"""Scoring a model's predictions: judge verdicts, response similarities, then every metric.

:func:`judge_predictions` and :func:`similarity_predictions` fill in each
generation's verdict and RS; :func:`score_predictions` then computes every
metric registered in :data:`pluralign.registry.METRICS` (pluralign's and
plugins') from the inputs it declares (:mod:`pluralign.eval.metric_inputs`),
plus the format diagnostics below, which are checks of pluralign's sequence
formats rather than metrics of the paper and so are not registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pluralign.eval.generate import Generation, starts_with_marker
from pluralign.eval.judges import JudgeItem
from pluralign.eval.metric_inputs import bind_inputs, scorer_of
from pluralign.eval.metrics import (
    MetricResult,
    mean_with_interval,
    proportion_with_interval,
    response_similarity,
)
from pluralign.eval.predictions import PromptPrediction
from pluralign.registry import METRICS

__all__ = ["judge_predictions", "marker_start_share", "metric_inputs", "registered_metrics",
           "score_predictions", "similarity_predictions"]


def judge_predictions(predictions: Sequence[PromptPrediction], judge: Any) -> None:
    """Fill ``verdicts`` of every generation with one call of the judge.

    Empty, whitespace-only and unparsed responses express no belief: they get
    the verdict "empty" without being sent to the judge, and BPC counts them.
    """
    slots, items = [], []
    for p in predictions:
        p.verdicts = ["empty"] * len(p.generations)
        for j, g in enumerate(p.generations):
            if g.expresses_nothing:
                continue
            slots.append((p, j))
            items.append(JudgeItem(question=p.group.prompt, class_id=g.class_id,
                                   belief=p.group.description(g.class_id), response=g.response,
                                   references=p.group.references))
    verdicts = judge.judge(items) if items else []
    for (p, j), verdict in zip(slots, verdicts, strict=True):
        p.verdicts[j] = verdict


def similarity_predictions(predictions: Sequence[PromptPrediction], embedder: Any = None) -> None:
    """Fill ``similarities``: RS of each response against the reference of its belief.

    An empty, whitespace-only or unparsed response scores 0 (it says nothing
    like the reference); only a belief without any reference response is left
    unscored (None).
    """
    slots, generated, references = [], [], []
    for p in predictions:
        p.similarities = [None] * len(p.generations)
        for j, g in enumerate(p.generations):
            reference = p.group.reference_for(g.class_id)
            if reference is None:
                continue
            if g.expresses_nothing:
                p.similarities[j] = 0.0
            else:
                slots.append((p, j))
                generated.append(g.response)
                references.append(reference)
    if not slots:
        return
    result = response_similarity(generated, references, embedder)
    assert result.per_item is not None
    for (p, j), value in zip(slots, result.per_item, strict=True):
        p.similarities[j] = float(value)


def metric_inputs(predictions: Sequence[PromptPrediction], *, seed: int = 0) -> dict[str, Any]:
    """What a metric may ask for (see :data:`pluralign.eval.metric_inputs.INPUTS`).

    An input that does not exist for these predictions is absent rather than
    empty, so a metric that needs it is skipped instead of scoring nothing.
    """
    inputs: dict[str, Any] = {
        "predictions": list(predictions), "seed": seed,
        "target": [p.group.target for p in predictions],
        "predicted": [p.predicted for p in predictions],
    }
    if any(p.sampled_counts is not None for p in predictions):
        inputs["sampled"] = [p.sampled for p in predictions]
    gens = [g for p in predictions for g in p.generations]
    if gens:  # n_samples=0 reads belief distributions only
        inputs["generations"] = gens
        inputs["verdicts"] = [v for p in predictions for v in p.verdicts]
        inputs["similarities"] = [s for p in predictions for s in p.similarities]
    described = [g for g in gens if g.has_description]
    if described:  # reviews ({rating}{review}) have no description to agree with
        inputs["predicted_classes"] = [g.class_id for g in described]
        inputs["description_classes"] = [g.description_class for g in described]
    return inputs


def _add(metrics: dict[str, MetricResult], name: str, key: str, result: Any) -> None:
    if not isinstance(result, MetricResult):
        raise TypeError(f'metric "{name}" returned {type(result).__name__} for "{key}", '
                        "not a MetricResult")
    if key in metrics:  # a plugin must not overwrite another metric's result
        raise ValueError(f'metric "{name}" reports "{key}", which another metric reported')
    metrics[key] = result


def registered_metrics(inputs: dict[str, Any]) -> dict[str, MetricResult]:
    """Every registered metric whose inputs exist, in registration order (built-ins first)."""
    metrics: dict[str, MetricResult] = {}
    for name in METRICS.registration_order():
        scorer = scorer_of(METRICS.get(name))
        kwargs = bind_inputs(name, scorer, inputs)
        if kwargs is None:
            continue
        result = scorer(**kwargs)
        items = result.items() if isinstance(result, dict) else [(name, result)]
        for key, value in items:
            if value is not None:
                _add(metrics, name, key, value)
    return metrics


def score_predictions(predictions: Sequence[PromptPrediction], *, seed: int = 0
                      ) -> dict[str, MetricResult]:
    """Every registered metric (JSD reading and sampled, CBC, BPC, RS, plugins') and the
    format diagnostics, from filled-in predictions."""
    inputs = metric_inputs(predictions, seed=seed)
    metrics = registered_metrics(inputs)
    if "generations" in inputs:
        _add(metrics, "marker_start", "marker_start", marker_start_share(inputs["generations"]))
    masses = [p.after_description_mass for p in predictions
              if p.after_description_mass is not None]
    if masses:
        mean, low, high = mean_with_interval(masses, seed=seed)
        _add(metrics, "marker_mass_after_description", "marker_mass_after_description",
             MetricResult("marker_mass_after_description", mean, len(masses), low, high,
                          {"prompts": len(masses)}, np.asarray(masses)))
    return metrics


def marker_start_share(generations: Sequence[Generation]) -> MetricResult:
    """Share of generations whose response opens with another belief marker (a leak)."""
    starts = sum(starts_with_marker(g.response, has_description=g.has_description)
                 for g in generations)
    value, low, high = proportion_with_interval(starts, len(generations))
    return MetricResult("marker_start", value, len(generations), low, high,
                        {"marker_starts": starts, "generations": len(generations)})
