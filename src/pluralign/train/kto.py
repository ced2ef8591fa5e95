"""KTO and GDPO-KTO on TRL: ``GDPOKTOConfig(KTOConfig)`` and ``GDPOKTOTrainer(KTOTrainer)``.

Each pair record becomes two unpaired rows: a desirable one (chosen belief and
response) and an undesirable one (rejected response, carrying the rejected
belief for KTO or the desirable belief for GDPO-KTO, paper appendix J). The
loss is :func:`pluralign.train.losses.gdpo_kto_loss`; plain KTO is the same
trainer with the belief weights at 0. As in the GDPO trainer, the belief terms
come from the hidden states of the one policy forward (no extra forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from datasets import Dataset
from trl import KTOConfig, KTOTrainer
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

from pluralign.data.records import GroupPreferenceExample
from pluralign.train.common import GuardedCheckpointsMixin, HiddenStateCapture, check_finite
from pluralign.train.dataset import preference_rows
from pluralign.train.losses import gdpo_kto_loss
from pluralign.train.metrics import belief_diagnostics, split_by_majority
from pluralign.train.preference import belief_span_logps, pad_rows
from pluralign.train.tokenize import SequenceFormat

KTO_BELIEF_COLUMNS = ("belief_len", "KL_belief_len", "belief_token_ids", "target_probs",
                      "is_majority")
KTO_BATCH_KEYS = ("prompt_lens", "belief_lens", "belief_token_ids", "belief_mask",
                  "target_probs", "is_majority")


@dataclass
class GDPOKTOConfig(KTOConfig):
    """``KTOConfig`` plus the belief-calibration weights and options."""

    calibration_weight: float = field(default=1.0, metadata={"help": "Weight of KL(p* || q)."})
    belief_nll_weight: float = field(default=1.0, metadata={"help": "Weight of the belief NLL."})
    preference_weight: float = field(default=1.0, metadata={"help": "Weight of the KTO term."})
    calibration_normalize: Literal["full_vocab", "belief_tokens"] = field(
        default="full_vocab", metadata={"help": "Belief log-probs: full vocabulary or over K."}
    )
    belief_nll_reduction: Literal["mean", "sum"] = field(
        default="mean", metadata={"help": "Belief NLL reduction over its tokens."}
    )
    exclude_belief_from_preference: bool = field(
        default=True, metadata={"help": "Leave the belief span out of the KTO log-probs."}
    )


def kto_dataset(
    records: Sequence[GroupPreferenceExample], tokenizer: Any, fmt: SequenceFormat, *,
    pairing: str, batch_size: int,
) -> Dataset:
    """Two unpaired rows per record plus mismatched KL completions.

    The KL completion of a row is the completion of the previous row within
    its block of ``batch_size`` rows (rotated by one), the mismatched pairs
    from which KTO estimates its reference point.
    """
    rows = []
    for pair in preference_rows(records, tokenizer, fmt, pairing=pairing):
        shared = {k: pair[k] for k in ("prompt_ids", "belief_token_ids", "target_probs",
                                       "is_majority")}
        rows.append({**shared, "completion_ids": pair["chosen_ids"], "label": True,
                     "belief_len": pair["chosen_belief_len"]})
        rows.append({**shared, "completion_ids": pair["rejected_ids"], "label": False,
                     "belief_len": pair["rejected_belief_len"]})
    for start in range(0, len(rows), batch_size):
        block = rows[start : start + batch_size]
        for i, row in enumerate(block):
            donor = block[i - 1]  # i - 1 == -1 wraps to the block's last row
            row["KL_completion_ids"] = donor["completion_ids"]
            row["KL_belief_len"] = donor["belief_len"]
    return Dataset.from_list(rows)


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
                    positions = torch.arange(batch[key].size(1))
                    in_span = (positions >= prompt_lens[:, None]) & (
                        positions < (prompt_lens + lens)[:, None])
                    batch[key] = batch[key].masked_fill(in_span, 0)
        ids = [e["belief_token_ids"] for e in examples]
        batch["prompt_lens"] = prompt_lens
        batch["belief_lens"] = belief_lens
        batch["belief_token_ids"] = pad_rows(ids, 0, torch.long)
        batch["belief_mask"] = pad_rows([[True] * len(r) for r in ids], False, torch.bool)
        batch["target_probs"] = pad_rows([e["target_probs"] for e in examples], 0.0,
                                         torch.float32)
        batch["is_majority"] = torch.tensor([bool(e["is_majority"]) for e in examples])
        return batch


class GDPOKTOTrainer(GuardedCheckpointsMixin, KTOTrainer):
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
        inputs = {k: v for k, v in inputs.items() if k not in KTO_BATCH_KEYS}
        return super().compute_ref_log_probs(model, inputs)

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        belief = {key: inputs.pop(key) for key in KTO_BATCH_KEYS}
        batch = {k: (v.to(self.accelerator.device) if isinstance(v, torch.Tensor) else v)
                 for k, v in inputs.items()}
        policy_kl_logps = self._compute_kl_logps(model, batch)  # no grad, hook not armed
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        with self._capture.armed():
            outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=labels, fused_lm_head=True, use_cache=False)
        policy_logps = outputs.log_probs[:, -(labels.size(1) - 1):].sum(-1)
        ref_logps, ref_kl_logps = self._kto_reference(batch)
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

    def _kto_reference(self, batch: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        if self.precompute_ref_logps:
            return batch["ref_logps"], batch.get("ref_KL_logps")
        return self.compute_ref_log_probs(self.ref_model or self.model, batch)

    def _record(self, mode: str, result: Any, belief_logps: torch.Tensor,
                belief: dict[str, Any], batch: dict[str, Any]) -> None:
        metrics = self._metrics[mode]
        for name, value in result.metrics.items():
            metrics[name].append(float(value))
        desirable = batch["label"].bool().to(result.rewards.device)
        majority = belief["is_majority"].to(result.rewards.device)
        # The reward of a desirable example, split by whether its belief is the majority one.
        for name, values in split_by_majority(result.rewards[desirable],
                                              majority[desirable]).items():
            if values:
                metrics[f"rewards/desirable_{name}"].extend(values)
        for name, values in belief_diagnostics(belief_logps.detach(), belief["target_probs"],
                                               belief["belief_mask"]).items():
            metrics[f"belief/{name}_pairs"].extend(values)
        if mode == "train":
            self._total_train_tokens += int(batch["attention_mask"].sum())
        metrics["num_tokens"] = [self._total_train_tokens]
