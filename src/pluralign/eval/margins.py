"""Reward margins of a trained model against its reference, split by the paper's subsets.

Per pair ``margin = beta * [(log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))]``
(the DPO implicit reward margin), with the pairing the model trained with: GDPO's
rejected sequence carries the chosen belief, DPO's the rejected belief. Training
records it in the run's format file (:func:`pairing_for_model` reads it). Pairs are split
as in the paper's Figures 2 and 3 by :func:`pluralign.data.records.margin_group`:
majority (the chosen belief has the prompt's highest ``p*``), lowest minority
(its lowest ``p*``) and others. The paper's observation is that DPO drives the
lowest-minority margins negative while GDPO raises both. ``minority`` (every pair
that is not majority) is kept for readers of earlier results.

Sequence log-probs sum the token log-probs of the completion (belief span and
response through eos); for GDPO pairing the shared belief prefix adds the same
amount to both sides and cancels in the margin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from tqdm.auto import tqdm

from pluralign.beliefs.formats import IGNORE_INDEX, OPINION_FORMAT, Pairing, SequenceFormat
from pluralign.beliefs.readout import masked_sum, token_logps_from_logits
from pluralign.beliefs.tokenize import TokenizedSequence, tokenize_example
from pluralign.data.records import MARGIN_GROUPS, GroupPreferenceExample, margin_group
from pluralign.eval.metrics import MetricResult, mean_with_interval
from pluralign.runs import FORMAT_FILE, read_format_info

Span = Literal["completion", "response"]


@dataclass
class MarginsResult:
    """Per-pair margins and their summaries (mean with a bootstrap interval)."""

    margins: list[float]
    groups: list[str]  #: each pair's margin group (majority, lowest_minority, others)
    chosen_rewards: list[float]
    rejected_rewards: list[float]
    #: keys "all", the MARGIN_GROUPS, and "minority" (lowest_minority and others together)
    summary: dict[str, MetricResult]

    @property
    def is_majority(self) -> list[bool]:
        """Per pair: is the chosen belief the prompt's majority one."""
        return [group == "majority" for group in self.groups]

    def as_dict(self) -> dict[str, Any]:
        return {name: result.as_dict() for name, result in self.summary.items()}


def pairing_for_method(method: str | None) -> Pairing:
    """The pairing a registered method trains with (:attr:`Method.pairing`; GDPO-style for
    no method or an unknown one): how a run folder written before the format file recorded
    the pairing is read."""
    if method is None:
        return "gdpo"
    # The registry, not the training package: evaluation never imports the training side.
    from pluralign.registry import METHODS, load_all

    load_all()
    if method not in METHODS:
        return "gdpo"
    return METHODS.get(method).pairing


def pairing_from_info(info: Mapping[str, Any]) -> Pairing:
    """The pairing a trained model's format file (``info``, as
    :func:`pluralign.runs.read_format_info` returns it) records; for a file written before
    training recorded it, its method's (:func:`pairing_for_method`)."""
    if "pairing" not in info:
        return pairing_for_method(info.get("method"))
    pairing = info["pairing"]
    if pairing not in get_args(Pairing):
        raise ValueError(f"{FORMAT_FILE}: pairing must be one of {', '.join(get_args(Pairing))}, "
                         f"got {pairing!r}")
    return pairing


def pairing_for_model(model_ref: str | Path) -> Pairing:
    """The pairing the model at ``model_ref`` (a run's ``final/``) trained with: read from
    its format file (a model pluralign did not train has none: GDPO-style)."""
    return pairing_from_info(read_format_info(model_ref))


def _right_pad(sequences: Sequence[TokenizedSequence], pad_id: int, span: Span
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(s["input_ids"]) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq["input_ids"])
        ids[row, :n] = torch.tensor(seq["input_ids"])
        attention[row, :n] = 1
        if span == "response":
            mask[row, :n] = torch.tensor(seq["response_mask"])
        else:
            mask[row, :n] = torch.tensor([int(x != IGNORE_INDEX) for x in seq["labels"]])
    return ids, attention, mask


@torch.no_grad()
def sequence_logps(
    model: Any,
    sequences: Sequence[TokenizedSequence],
    *,
    pad_token_id: int,
    span: Span = "completion",
    batch_size: int = 8,
) -> torch.Tensor:
    """Summed token log-probs ``(N,)`` over each sequence's completion (or response) span."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        ids, attention, mask = _right_pad(sequences[start:start + batch_size], pad_token_id, span)
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device),
                       use_cache=False).logits
        token_logps = token_logps_from_logits(logits, ids.to(device))
        out.append(masked_sum(token_logps, mask.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def _summaries(margins: torch.Tensor, groups: Sequence[str], seed: int
               ) -> dict[str, MetricResult]:
    # The same split as the training logs (majority, lowest_minority, others, minority).
    from pluralign.beliefs.margin_groups import split_by_margin_group

    codes = torch.tensor([MARGIN_GROUPS.index(g) for g in groups], dtype=torch.long)
    parts = {"all": margins.tolist(), **split_by_margin_group(margins, codes)}
    summary = {}
    for name, listed in parts.items():
        values = np.asarray(listed, dtype=np.float32)
        mean, low, high = mean_with_interval(values, seed=seed)
        summary[name] = MetricResult(f"margins_{name}", mean, int(values.size), low, high,
                                     {"pairs": int(values.size)}, values)
    return summary


def reward_margins(
    model: Any,
    ref_model: Any,
    tokenizer: Any,
    records: Sequence[GroupPreferenceExample],
    *,
    fmt: SequenceFormat = OPINION_FORMAT,
    pairing: Pairing = "gdpo",
    beta: float = 0.1,
    span: Span = "completion",
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> MarginsResult:
    """Reward margins of ``model`` vs ``ref_model`` on ``records``, split by margin group."""
    if not records:
        raise ValueError("reward_margins needs at least one record")
    pairs = [tokenize_example(r, tokenizer, fmt, pairing=pairing) for r in records]
    chosen = [p["chosen"] for p in pairs]
    rejected = [p["rejected"] for p in pairs]
    pad = tokenizer.pad_token_id
    logps = {}
    jobs = [("pi_c", model, chosen), ("pi_r", model, rejected),
            ("ref_c", ref_model, chosen), ("ref_r", ref_model, rejected)]
    for key, lm, seqs in tqdm(jobs, desc="reward margins", disable=not progress):
        logps[key] = sequence_logps(lm, seqs, pad_token_id=pad, span=span,
                                    batch_size=batch_size)
    chosen_rewards = beta * (logps["pi_c"] - logps["ref_c"])
    rejected_rewards = beta * (logps["pi_r"] - logps["ref_r"])
    margins = chosen_rewards - rejected_rewards
    groups = [margin_group(r) for r in records]
    return MarginsResult(
        margins=margins.tolist(), groups=groups,
        chosen_rewards=chosen_rewards.tolist(), rejected_rewards=rejected_rewards.tolist(),
        summary=_summaries(margins, groups, seed),
    )
