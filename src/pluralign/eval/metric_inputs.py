"""How evaluation feeds a registered metric: named inputs, bound by parameter name.

Evaluation looks every metric up in :data:`pluralign.registry.METRICS` and
calls its *scorer*: the metric function itself, or the function attached to it
with :func:`scored_by` where the metric's own arguments are not what
evaluation holds (JSD reads distributions that may be missing, RS starts from
per-generation similarities, not embeddings). The scorer's parameters name the
inputs it needs (:data:`INPUTS`):

* a required parameter whose input is absent for this model (no generations
  when ``n_samples`` is 0, no described generation for reviews) skips the metric;
* an optional parameter gets its input when there is one (``seed``), else its
  default; parameters that are no input (``confidence``) keep their default;
* a required parameter that names no input at all is an error (a typo would
  otherwise skip the metric forever).

The scorer returns a :class:`~pluralign.eval.metrics.MetricResult`, reported
under the registered name, or a dict of them reported under their own keys
(JSD adds ``jsd_sampled``), or None (nothing to report). A plugin registers a
metric the same way as pluralign does::

    @METRICS.register("belief_mass")
    def belief_mass(predictions, *, seed=0) -> MetricResult: ...

This module imports nothing of :mod:`pluralign.eval`, so the metric modules
can use :func:`scored_by` without an import loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: The inputs evaluation can give a metric, by parameter name, and when it gives them.
INPUTS: dict[str, str] = {
    "predictions": "every prompt's PromptPrediction (always)",
    "target": "every prompt's target distribution p* (always)",
    "predicted": "every prompt's one-forward-pass belief distribution, None where a "
                 "baseline has none (always)",
    "sampled": "every prompt's sampled belief estimate, None where no sample held a belief "
               "(when the estimate was drawn)",
    "generations": "every belief-first generation (when there are generations)",
    "verdicts": "the judge's verdict of every generation (when there are generations)",
    "similarities": "every generation's response similarity to its belief's reference "
                    "response, None without one (when there are generations)",
    "predicted_classes": "the class of every generation that wrote a description (when "
                         "one did)",
    "description_classes": "the class each of those descriptions names, aligned with "
                           "predicted_classes",
    "seed": "the evaluation's seed (always)",
}

#: Attribute of a metric function that holds its scorer (see :func:`scored_by`).
SCORER_ATTRIBUTE = "eval_scorer"


def scored_by(scorer: Callable[..., Any]) -> Callable[[F], F]:
    """Decorator: evaluation computes the metric with ``scorer`` instead of calling it.

    The metric itself is returned unchanged (``METRICS.get("jsd") is jsd``).
    """

    def attach(metric: F) -> F:
        setattr(metric, SCORER_ATTRIBUTE, scorer)
        return metric

    return attach


def scorer_of(metric: Callable[..., Any]) -> Callable[..., Any]:
    """The function evaluation calls for ``metric``: its attached scorer, else itself."""
    return getattr(metric, SCORER_ATTRIBUTE, metric)


def bind_inputs(name: str, scorer: Callable[..., Any],
                inputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """Keyword arguments of ``scorer`` from ``inputs``; None when a required input is absent.

    Raises TypeError for a required parameter that names no input (see :data:`INPUTS`).
    """
    kwargs: dict[str, Any] = {}
    for param in inspect.signature(scorer).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name in inputs:
            kwargs[param.name] = inputs[param.name]
        elif param.default is param.empty:
            if param.name not in INPUTS:
                raise TypeError(
                    f'metric "{name}": its parameter "{param.name}" is no evaluation input '
                    f"and has no default; inputs: {', '.join(INPUTS)}")
            return None
    return kwargs
