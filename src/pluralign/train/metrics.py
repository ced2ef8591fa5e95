"""Training-time metrics: belief calibration, margins by margin group, metrics.jsonl."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from pluralign.beliefs.distances import jsd_per_prompt
from pluralign.runs import METRICS_FILE


def belief_diagnostics(
    belief_logps: torch.Tensor, target_probs: torch.Tensor, belief_mask: torch.Tensor
) -> dict[str, list[float]]:
    """Per-example JSD to p* and the full-vocabulary mass on the belief tokens.

    ``belief_logps`` (B, K) are full-vocabulary log-probs of the K belief tokens
    at the last prompt position; padded classes (``belief_mask`` False) are
    ignored. The predicted distribution is the softmax over the K tokens, the
    one-forward-pass reading the paper's JSD numbers correspond to.
    """
    mask = belief_mask.to(belief_logps.device)
    logits = belief_logps.float().masked_fill(~mask, float("-inf"))
    predicted = torch.softmax(logits, dim=-1)
    target = target_probs.to(predicted).masked_fill(~mask, 0.0)
    mass = belief_logps.float().exp().masked_fill(~mask, 0.0).sum(dim=-1)
    return {
        "jsd": jsd_per_prompt(predicted.cpu().numpy(), target.cpu().numpy()).tolist(),
        "mass": mass.tolist(),
    }


class MetricsJsonlCallback(TrainerCallback):
    """Append every log record (train and eval) to ``<output_dir>/metrics.jsonl``.

    Adds tokens/s measured between consecutive training log records from the
    trainer's ``num_tokens`` counter. The value is put into the trainer's log record
    itself, so every callback after this one (the ``report_to`` backends among them)
    receives it: :func:`add_metrics_callback` places this callback first.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self._last: tuple[float, float] | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:  # the backends write on rank 0 only
            return
        self._add_tokens_per_second(logs)
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time()}
        record.update({k: v for k, v in logs.items() if _is_number(v)})
        append_metrics_record(self.path, record)

    def _add_tokens_per_second(self, logs: dict[str, Any]) -> None:
        """Put ``tokens_per_second`` into a training record (``logs`` is the dict the
        trainer hands to every callback, so the backends after this one see it)."""
        tokens = logs.get("num_tokens")
        if tokens is None or any(k.startswith("eval_") for k in logs):
            return
        now = time.perf_counter()
        if self._last is not None and now > self._last[0]:
            logs["tokens_per_second"] = (tokens - self._last[1]) / (now - self._last[0])
        self._last = (now, tokens)


def add_metrics_callback(trainer: Any, output_dir: str | Path) -> MetricsJsonlCallback:
    """Give ``trainer`` a :class:`MetricsJsonlCallback`, first in its callback list.

    transformers adds the ``report_to`` callbacks when the trainer is built, and calls
    callbacks in list order with one shared ``logs`` dict: placed first, the metrics
    this callback derives (tokens/s) reach every backend, not only ``metrics.jsonl``.
    """
    callback = MetricsJsonlCallback(output_dir)
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback


def append_metrics_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to a run's ``metrics.jsonl`` (its folder created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


class BeliefEvalCallback(TrainerCallback):
    """At every evaluation, read the model's belief distribution on the eval prompts.

    Method-agnostic (one prompt-only forward per batch of prompts), so SFT, DPO,
    GDPO and KTO runs report the same ``eval_belief/jsd`` and
    ``eval_belief/mass`` in ``metrics.jsonl`` (``prefix`` replaces ``eval_belief``,
    e.g. ``heldout_belief`` for the eval file beside a validation split).

    The reading is logged through ``log`` (the trainer's ``log`` method) as a record
    of its own, so it reaches every ``report_to`` backend and, through
    :class:`MetricsJsonlCallback`, ``metrics.jsonl``.
    """

    def __init__(self, inputs: dict[str, list[Any]], *, log: Callable[[dict[str, float]], None],
                 pad_token_id: int, batch_size: int = 16, prefix: str = "eval_belief") -> None:
        self.inputs = inputs
        self.prefix = prefix
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size
        self.log = log
        self.history: list[dict[str, float]] = []

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:
        if model is None or not self.inputs["prompt_ids"]:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(),
                  **self.measure(model)}
        self.history.append(record)
        # A record of its own, called on every rank as Trainer.log expects (the backends
        # and metrics.jsonl write on rank 0 only). It runs after evaluate() has logged and
        # cleared TRL's eval metrics, so the record carries the reading alone.
        self.log({k: v for k, v in record.items() if k.startswith(f"{self.prefix}/")})

    def measure(self, model: Any) -> dict[str, float]:
        from pluralign.beliefs.readout import belief_distributions

        reading = belief_distributions(
            model, self.inputs["prompt_ids"], self.inputs["belief_token_ids"],
            pad_token_id=self.pad_token_id, batch_size=self.batch_size,
        )
        jsd = [
            float(jsd_per_prompt(predicted, target)[0])
            for predicted, target in zip(reading.probs, self.inputs["target_probs"], strict=True)
        ]
        return {
            f"{self.prefix}/jsd": sum(jsd) / len(jsd),
            f"{self.prefix}/mass": sum(reading.mass) / len(reading.mass),
        }
