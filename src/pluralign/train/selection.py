"""Checkpoint selection on a validation split carved from the training file.

The GDPO paper reports the checkpoint that did best on a validation set
(its appendix G). Here the validation split is carved from the *training*
records, never from the prompts a run is reported on:

* where a question has several wordings in the training file (paraphrases,
  framings), one wording of some questions is held out whole, so validation
  measures new wordings of trained questions, the setting that is reported;
* where every question has a single wording (the demo trains on each question
  as asked), some records are held out and their prompts stay in training, so
  validation measures the fit to the training prompts and still catches a
  run that drifts away from p*.

:class:`BestStateCallback` keeps, in memory, a copy of the trainable weights
at the evaluation with the best value of the selection metric and puts them
back when training ends, so ``final/`` holds the selected weights without
writing a checkpoint to disk at every evaluation.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

from pluralign.data.records import group_prompt_key, group_question_key
from pluralign.train.metrics import append_metrics_record

if TYPE_CHECKING:
    from pluralign.data.records import GroupPreferenceExample

#: Metrics a run can be selected by, and whether lower is better.
SELECTION_METRICS: dict[str, bool] = {
    "eval_belief/jsd": True,
    "eval_loss": True,
}


@dataclass
class ValidationCarve:
    """Training and validation records, and how the validation split was carved."""

    train: list[GroupPreferenceExample]
    validation: list[GroupPreferenceExample]
    by: str  #: "wording" (held-out prompts of trained questions) or "records"


def carve_validation(
    records: Sequence[GroupPreferenceExample], fraction: float, seed: int, *,
    by_group: bool = False,
) -> ValidationCarve:
    """Hold out about ``fraction`` of the training prompts (or records) for validation.

    Prompts are held out whole where their question keeps another wording in
    training (at most one wording per question); otherwise records are held
    out and their prompts stay in training. At least one item is held out and
    at least one training record stays. ``by_group`` (prompts that name their
    group): a question and a wording are a group's own, so each group holds out
    its own wording of a question and keeps the others.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    wordings: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for record in records:
        prompts = wordings.setdefault(group_question_key(record, by_group=by_group), [])
        prompt = group_prompt_key(record, by_group=by_group)
        if prompt not in prompts:
            prompts.append(prompt)
    all_prompts = sum(len(p) for p in wordings.values())
    # Only wordings after the first: the question's first (often original) wording trains.
    candidates = [prompts[rng.randrange(1, len(prompts))]
                  for prompts in wordings.values() if len(prompts) >= 2]
    if candidates:
        rng.shuffle(candidates)
        held = set(candidates[: max(1, round(fraction * all_prompts))])

        def is_held(record: GroupPreferenceExample) -> bool:
            return group_prompt_key(record, by_group=by_group) in held

        return ValidationCarve([r for r in records if not is_held(r)],
                               [r for r in records if is_held(r)], "wording")
    if len(records) < 2:
        raise ValueError("validation needs at least 2 training records")
    indices = list(range(len(records)))
    rng.shuffle(indices)
    count = min(len(records) - 1, max(1, round(fraction * len(records))))
    held_ids = set(indices[:count])
    return ValidationCarve([r for i, r in enumerate(records) if i not in held_ids],
                           [r for i, r in enumerate(records) if i in held_ids], "records")


class BestStateCallback(TrainerCallback):
    """Keep the trainable weights of the best evaluation; restore them at the end.

    ``metric`` is read from the evaluation's metrics (``eval_loss``) or from
    ``belief_source.history`` (``eval_belief/jsd``, measured by
    :class:`pluralign.train.metrics.BeliefEvalCallback`, which must run first).
    The choice is appended to ``metrics.jsonl`` as a ``selected_step`` record.
    """

    def __init__(self, metric: str, metrics_file: str | Path,
                 belief_source: Any = None) -> None:
        if metric not in SELECTION_METRICS:
            raise ValueError(f"cannot select by {metric!r}; known: {', '.join(SELECTION_METRICS)}")
        self.metric = metric
        self.lower_is_better = SELECTION_METRICS[metric]
        self.path = Path(metrics_file)
        self.belief_source = belief_source
        self.best_value: float | None = None
        self.best_step: int | None = None
        self._state: dict[str, torch.Tensor] | None = None

    def _value(self, metrics: dict[str, Any] | None) -> float | None:
        if metrics and self.metric in metrics:
            return float(metrics[self.metric])
        history = getattr(self.belief_source, "history", None)
        if history and self.metric in history[-1]:
            return float(history[-1][self.metric])
        return None

    def _better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value < self.best_value if self.lower_is_better else value > self.best_value

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None,
                    metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        value = self._value(metrics)
        if model is None or value is None or not self._better(value):
            return
        self.best_value, self.best_step = value, state.global_step
        # Trainable weights only: LoRA adapters are a few MB; full fine-tuning copies all.
        self._state = {name: p.detach().clone() for name, p in model.named_parameters()
                       if p.requires_grad}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None,
                     **kwargs: Any) -> None:
        if model is None or self._state is None:
            return
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self._state:
                    param.copy_(self._state[name])
        if state.is_world_process_zero:
            record = {"step": state.global_step, "time": time.time(),
                      "selected_step": self.best_step, "selected_by": self.metric,
                      "selected_value": self.best_value}
            append_metrics_record(self.path, record)
        self._state = None
