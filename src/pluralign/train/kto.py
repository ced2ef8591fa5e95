"""KTO and GDPO-KTO on TRL: ``GDPOKTOConfig(KTOConfig)`` and ``GDPOKTOTrainer(KTOTrainer)``.

Each pair record becomes two unpaired rows: a desirable one (chosen belief and
response) and an undesirable one (rejected response, carrying the rejected
belief for KTO or the desirable belief for GDPO-KTO, paper appendix J). The
loss is :func:`pluralign.train.losses.gdpo_kto_loss`; plain KTO is the same
trainer with the belief weights at 0 and the belief span kept in the KTO
log-probs (see :class:`GDPOKTOConfig`). As in the GDPO trainer, the belief terms
come from the hidden states of the one policy forward (no extra forward).
KTO's reference point is estimated from mismatched (prompt, completion) pairs;
:func:`kto_dataset` takes each row's KL completion from another question.
Precomputed reference log-probs (of each row's completion and KL completion) are
computed as batches first use their rows (:mod:`pluralign.train.reference_cache`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from trl import KTOConfig, KTOTrainer
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

from pluralign.beliefs.formats import SequenceFormat
from pluralign.beliefs.margin_groups import split_by_margin_group
from pluralign.data.records import GroupPreferenceExample, question_key
from pluralign.train.belief_loss import BeliefLossArgs, belief_loss_help
from pluralign.train.common import GuardedCheckpointsMixin, HiddenStateCapture, check_finite
from pluralign.train.dataset import preference_rows
from pluralign.train.gdpo_config import bf16_off_where_unsupported, refuse_unimplemented_options
from pluralign.train.losses import gdpo_kto_loss
from pluralign.train.metrics import belief_diagnostics
from pluralign.train.preference import belief_span_logps, mask_spans, pad_rows
from pluralign.train.reference_cache import (
    LAZY_REF_HELP,
    ROW_KEY,
    LazyReferenceMixin,
    add_row_keys,
)

logger = logging.getLogger(__name__)

KTO_BELIEF_COLUMNS = ("belief_len", "KL_belief_len", "belief_token_ids", "target_probs",
                      "margin_group")
KTO_BATCH_KEYS = ("prompt_lens", "belief_lens", "belief_token_ids", "belief_mask",
                  "target_probs", "margin_group")


#: TRL ``KTOConfig`` options that :class:`GDPOKTOTrainer` does not implement: the reason, and
#: the values besides TRL's default that mean the same. Any other value is refused.
UNIMPLEMENTED_KTO_OPTIONS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "loss_type": ("the preference term is KTO's loss with its KL reference point", ()),
    "router_aux_loss_coef": ("the MoE router auxiliary loss is not added to the loss", (0.0,)),
    "pad_to_multiple_of": ("the belief collator pads to the longest row of the batch",
                           (None, "none", "null")),
}


@dataclass
class GDPOKTOConfig(BeliefLossArgs, KTOConfig):
    """``KTOConfig`` plus the belief-calibration weights and options.

    With the defaults the trainer computes GDPO-KTO (paper appendix J) on data
    built with ``pairing="gdpo"``: calibration, belief NLL and KTO weighted
    1:1:1, the KTO rewards conditioned on the desirable belief, i.e. the belief
    span left out of the KTO log-probs (``exclude_belief_from_preference=True``).
    Unlike DPO's margin, KTO's per-row reward does not cancel the span, so plain
    KTO needs ``calibration_weight=0``, ``belief_nll_weight=0`` *and*
    ``exclude_belief_from_preference=False``, on data built with
    ``pairing="dpo"`` (each answer scored whole, its belief included), as the
    ``kto`` method sets them.

    TRL options the trainer does not implement (see
    :data:`UNIMPLEMENTED_KTO_OPTIONS`) are refused with a ``ValueError`` naming
    the option when set away from TRL's default, instead of being ignored. The
    belief options and their checks are
    :class:`~pluralign.train.belief_loss.BeliefLossArgs`'.
    """

    #: GDPO-KTO's default: KTO's per-row reward does not cancel a shared belief span.
    exclude_belief_from_preference: bool = field(
        default=True, metadata=belief_loss_help("exclude_belief_from_preference"))
    lazy_ref_log_probs: bool = field(default=True, metadata=LAZY_REF_HELP)

    def __post_init__(self) -> None:
        # Before TRL's own handling, which would resolve pad_to_multiple_of first.
        refuse_unimplemented_options(self, KTOConfig, "GDPOKTOTrainer", UNIMPLEMENTED_KTO_OPTIONS)
        bf16_off_where_unsupported(self)
        super().__post_init__()  # TRL's checks, then BeliefLossArgs' (one place)


def kto_dataset(
    records: Sequence[GroupPreferenceExample], tokenizer: Any, fmt: SequenceFormat, *,
    pairing: str, batch_size: int, seed: int = 0,
) -> Dataset:
    """Two unpaired rows per record, in a seeded order, plus mismatched KL completions.

    KTO estimates its reference point from mismatched pairs ``(x_i, y_j)``: the
    completion ``y_j`` of another example paired with the row's prompt ``x_i``.
    TRL trains KTO in dataset order (its KL pairing needs sequential sampling),
    so the rows are shuffled once with ``seed``: record files are grouped by
    question, and in file order a batch would hold one question only. The KL
    completions are then chosen by :func:`kl_donors`: never from the row's own
    question (``question_id``, else the prompt text), hence never from its own
    prompt or record; within its block of ``batch_size`` rows (the training
    batch) where the block allows it, else from elsewhere in the data. Data of
    a single question fall back to other prompts of it, data of a single
    prompt to other records of it, each with a warning; one record is an
    error. The order is the same every epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if fmt.marker_options_template is not None:
        # Its KL completions come from other questions, whose given options differ.
        raise ValueError("sequence_format: gdpo-kto does not support options written after "
                         "the belief marker (marker-options); use separated or "
                         "separated-options")
    rows: list[dict[str, Any]] = []
    keys: list[tuple[str, str, int]] = []
    pairs = preference_rows(records, tokenizer, fmt, pairing=pairing)
    for index, (record, pair) in enumerate(zip(records, pairs, strict=True)):
        shared = {k: pair[k] for k in ("prompt_ids", "belief_token_ids", "target_probs",
                                       "margin_group")}
        rows.append({**shared, "completion_ids": pair["chosen_ids"], "label": True,
                     "belief_len": pair["chosen_belief_len"]})
        rows.append({**shared, "completion_ids": pair["rejected_ids"], "label": False,
                     "belief_len": pair["rejected_belief_len"]})
        keys += [(question_key(record), record.prompt, index)] * 2
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    rows, keys = [rows[i] for i in order], [keys[i] for i in order]
    for row, donor in zip(rows, kl_donors(keys, batch_size, rng), strict=True):
        row["KL_completion_ids"] = rows[donor]["completion_ids"]
        row["KL_belief_len"] = rows[donor]["belief_len"]
    return Dataset.from_list(rows)


#: What a row's KL completion must not share with the row, most preferred first.
KL_MISMATCH_LEVELS = ("question", "prompt", "record")


def kl_donors(keys: Sequence[tuple[str, str, int]], batch_size: int,
              rng: random.Random) -> list[int]:
    """For each row, the row whose completion is its KL completion.

    ``keys[i]`` is row ``i``'s ``(question, prompt, record)``. Donors differ
    from their row at the first level of :data:`KL_MISMATCH_LEVELS` at which
    the data hold two distinct values (a warning says when that is not the
    question; one record alone is an error). Within a block of ``batch_size``
    rows where no value holds more than half the block, the donors are a
    permutation of the block (TRL's advice: the KL completions of a batch are
    its own completions, paired with other prompts); otherwise each row of the
    block draws its donor from the rows of other values in the whole data.
    """
    level = next((n for n in range(len(KL_MISMATCH_LEVELS))
                  if len({key[n] for key in keys}) >= 2), None)
    if level is None:
        raise ValueError("KTO needs at least two records: the KL completion of a row must come "
                         "from another record")
    if level > 0:
        logger.warning(
            "the KTO data hold a single %s: KL completions come from other %ss of it, so "
            "KTO's reference point is not estimated from other questions",
            KL_MISMATCH_LEVELS[level - 1], KL_MISMATCH_LEVELS[level])
    values = [key[level] for key in keys]
    anywhere = _OtherValueSampler(values, rng)
    donors: list[int] = []
    for start in range(0, len(values), batch_size):
        block = range(start, min(start + batch_size, len(values)))
        within = _block_derangement(block, values)
        donors += within if within is not None else [anywhere.draw(i) for i in block]
    return donors


def _block_derangement(block: range, values: Sequence[Any]) -> list[int] | None:
    """A permutation of ``block`` mapping no row to a row of its own value, or None.

    One exists when no value holds more than half the block: rows laid out
    value by value, shifted by the largest group's size, never land in their
    own group.
    """
    groups: dict[Any, list[int]] = {}
    for i in block:
        groups.setdefault(values[i], []).append(i)
    largest = max(len(group) for group in groups.values())
    if 2 * largest > len(block):
        return None
    laid_out = [i for group in groups.values() for i in group]
    donor_of = {row: laid_out[(p + largest) % len(laid_out)] for p, row in enumerate(laid_out)}
    return [donor_of[i] for i in block]


class _OtherValueSampler:
    """Draws, uniformly and seeded, a row whose value differs from a given row's."""

    def __init__(self, values: Sequence[Any], rng: random.Random) -> None:
        self.values, self.rng = values, rng
        # Rows sorted by value: each value's rows are one slice, skipped in O(1) per draw.
        self.order = sorted(range(len(values)), key=lambda i: (values[i], i))
        self.span: dict[Any, tuple[int, int]] = {}
        for position, row in enumerate(self.order):
            first, _ = self.span.get(values[row], (position, position))
            self.span[values[row]] = (first, position + 1)

    def draw(self, row: int) -> int:
        first, end = self.span[self.values[row]]
        pick = self.rng.randrange(len(self.order) - (end - first))
        return self.order[pick if pick < first else pick + (end - first)]


@dataclass
class BeliefUnpairedCollator(DataCollatorForUnpairedPreference):
    """TRL's unpaired collator plus belief tensors; optionally masks belief spans."""

    exclude_belief_from_preference: bool = False

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        prompt_lens = torch.tensor([len(e["prompt_ids"]) for e in examples])
        belief_lens = torch.tensor([e["belief_len"] for e in examples])
        if self.exclude_belief_from_preference:
            for prefix, lens in (("", belief_lens),
                                 ("KL_", torch.tensor([e["KL_belief_len"] for e in examples]))):
                key = f"{prefix}completion_mask"
                if key in batch:
                    batch[key] = mask_spans(batch[key], prompt_lens, lens)
        ids = [e["belief_token_ids"] for e in examples]
        batch["prompt_lens"] = prompt_lens
        batch["belief_lens"] = belief_lens
        batch["belief_token_ids"] = pad_rows(ids, 0, torch.long)
        batch["belief_mask"] = pad_rows([[True] * len(r) for r in ids], False, torch.bool)
        batch["target_probs"] = pad_rows([e["target_probs"] for e in examples], 0.0,
                                         torch.float32)
        batch["margin_group"] = torch.tensor([int(e["margin_group"]) for e in examples])
        add_row_keys(batch, examples)
        return batch


class GDPOKTOTrainer(GuardedCheckpointsMixin, LazyReferenceMixin, KTOTrainer):
    """KTO/GDPO-KTO trainer: a drop-in ``KTOTrainer`` for belief-conditioned data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config: GDPOKTOConfig = kwargs["args"]
        tokenizer = kwargs["processing_class"]
        kwargs.setdefault("data_collator", BeliefUnpairedCollator(
            pad_token_id=tokenizer.pad_token_id, max_length=config.max_length,
            exclude_belief_from_preference=config.exclude_belief_from_preference,
        ))
        super().__init__(*args, **kwargs)
        self._capture = HiddenStateCapture(self.model)

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, name: str) -> Any:
        needed = {"prompt_ids", "completion_ids", "KL_completion_ids", "label",
                  *KTO_BELIEF_COLUMNS}
        missing = needed - set(dataset.column_names)
        if missing:
            raise ValueError(f"the {name} dataset lacks the columns {sorted(missing)}; build it "
                             "with pluralign.train.kto.kto_dataset(records, tokenizer, ...)")
        return dataset

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns,
                                                      *KTO_BELIEF_COLUMNS]))

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        inputs = {k: v for k, v in inputs.items() if k not in (*KTO_BATCH_KEYS, ROW_KEY)}
        return super().compute_ref_log_probs(model, inputs)

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        rows = inputs.pop(ROW_KEY, None)  # present when the reference log-probs are lazy
        belief = {key: inputs.pop(key) for key in KTO_BATCH_KEYS}
        batch = {k: (v.to(self.accelerator.device) if isinstance(v, torch.Tensor) else v)
                 for k, v in inputs.items()}
        policy_kl_logps = self._compute_kl_logps(model, batch)  # no grad, hook not armed
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        with self._capture.armed():
            outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=labels, fused_lm_head=True, use_cache=False)
        policy_logps = outputs.log_probs[:, -(labels.size(1) - 1):].sum(-1)
        ref_logps, ref_kl_logps = self._kto_reference(batch, rows)
        belief_logps, span_logps, span_mask = belief_span_logps(
            self._capture, batch["input_ids"], belief["prompt_lens"], belief["belief_lens"],
            belief["belief_token_ids"],
        )
        result = gdpo_kto_loss(
            policy_logps, ref_logps, batch["label"].bool(), belief_logps,
            belief["target_probs"].to(belief_logps.device), span_logps, span_mask,
            policy_kl_logps=policy_kl_logps, reference_kl_logps=ref_kl_logps, beta=self.beta,
            desirable_weight=self.desirable_weight, undesirable_weight=self.undesirable_weight,
            calibration_weight=self.args.calibration_weight,
            belief_nll_weight=self.args.belief_nll_weight,
            preference_weight=self.args.preference_weight,
            normalize=self.args.calibration_normalize,
            belief_nll_reduction=self.args.belief_nll_reduction,
            belief_mask=belief["belief_mask"].to(belief_logps.device),
        )
        loss = result.losses.mean()
        check_finite(loss, self.state.global_step, {
            "preference": result.preference_losses, "kl": result.kl,
            "belief_nll": result.belief_nll,
        })
        self._record(mode, result, belief_logps, belief, batch)
        return (loss, outputs) if return_outputs else loss

    def _kto_reference(self, batch: dict[str, Any], rows: torch.Tensor | None
                       ) -> tuple[torch.Tensor, Any]:
        if rows is not None:
            ref_logps, ref_kl_logps = self._lazy_reference_logps(rows, batch, paired=False)
            return ref_logps, ref_kl_logps
        if self.precompute_ref_logps:
            return batch["ref_logps"], batch.get("ref_KL_logps")
        return self.compute_ref_log_probs(self.ref_model or self.model, batch)

    def _record(self, mode: str, result: Any, belief_logps: torch.Tensor,
                belief: dict[str, Any], batch: dict[str, Any]) -> None:
        metrics = self._metrics[mode]
        for name, value in result.metrics.items():
            metrics[name].append(float(value))
        desirable = batch["label"].bool().to(result.rewards.device)
        groups = belief["margin_group"].to(result.rewards.device)
        # The reward of a desirable example, split by the margin group of its belief.
        for name, values in split_by_margin_group(result.rewards[desirable],
                                                  groups[desirable]).items():
            if values:
                metrics[f"rewards/desirable_{name}"].extend(values)
        for name, values in belief_diagnostics(belief_logps.detach(), belief["target_probs"],
                                               belief["belief_mask"]).items():
            metrics[f"belief/{name}_pairs"].extend(values)
        if mode == "train":
            self._total_train_tokens += int(batch["attention_mask"].sum())
        metrics["num_tokens"] = [self._total_train_tokens]
