"""GDPO and DPO on TRL: ``GDPOConfig(DPOConfig)`` and ``GDPOTrainer(DPOTrainer)``.

The trainer keeps everything TRL brings (accelerate, FSDP/DeepSpeed, peft,
precomputed reference log-probs, logging backends) and replaces only the loss:
one policy forward over the concatenated [chosen; rejected] batch gives the
response log-probs and the last hidden states, from which the belief
distribution at the last prompt position and the belief-span NLL are computed
for a few positions only. By default that forward is
:mod:`pluralign.train.logprobs`'s (only response positions go through the LM
head; each pair's shared prefix runs once); with ``compact_logprobs=False`` it
is TRL's fused head, the hidden states then read by a hook on the backbone.
The loss itself is :func:`pluralign.train.losses.gdpo_loss` (pure, tested);
plain DPO is the same trainer with the belief weights at 0.

Datasets come as text records (one column per record field, see
:mod:`pluralign.train.text_dataset`), which the trainer tokenises itself as
TRL's ``DPOTrainer`` does (adding the sequence format's tokens to the tokenizer
and the model's embeddings first), or pre-tokenised by
:func:`pluralign.train.dataset.preference_dataset`: besides TRL's
``prompt_ids``/``chosen_ids``/``rejected_ids`` the rows carry the belief token
ids and target distribution of the prompt and the belief-span lengths.
Precomputed reference log-probs are computed as batches first use their rows
(:mod:`pluralign.train.reference_cache`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import use_adapter

from pluralign.beliefs.formats import named_format
from pluralign.beliefs.margin_groups import split_by_margin_group
from pluralign.runs import write_format_info
from pluralign.train.common import GuardedCheckpointsMixin, HiddenStateCapture, check_finite
from pluralign.train.gdpo_config import GDPOConfig
from pluralign.train.logprobs import (
    PairRequest,
    install_pair_forward,
    logit_options_in_use,
    prefix_sharing_blockers,
    shared_prefix_lengths,
)
from pluralign.train.losses import gdpo_loss
from pluralign.train.metrics import belief_diagnostics
from pluralign.train.reference_cache import (
    ROW_KEY,
    LazyReferenceMixin,
    add_row_keys,
)
from pluralign.train.text_dataset import (
    add_missing_format_tokens,
    is_text_dataset,
    tokenize_text_dataset,
)

logger = logging.getLogger(__name__)

#: Dataset columns beside TRL's own that the GDPO collator turns into tensors.
BELIEF_COLUMNS = (
    "belief_token_ids", "target_probs", "chosen_belief_len", "rejected_belief_len", "margin_group",
)
#: TRL's tokenised columns, which a pre-tokenised dataset has beside the belief columns.
TOKENIZED_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
#: Columns read where present: datasets tokenised before they existed lack them.
OPTIONAL_BELIEF_COLUMNS = ("options_len",)
#: Batch keys the collator adds; removed before anything reaches the model.
BELIEF_BATCH_KEYS = (
    "prompt_lens", "chosen_belief_lens", "rejected_belief_lens", "belief_token_ids",
    "belief_mask", "target_probs", "margin_group", "options_lens",
)


def mask_spans(mask: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``mask`` (N, T) with positions ``starts[n] <= t < starts[n] + lengths[n]`` set to 0."""
    positions = torch.arange(mask.size(1))
    in_span = (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])
    return mask.masked_fill(in_span, 0)


def pad_rows(rows: list[list[Any]], value: Any, dtype: torch.dtype) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([list(row) + [value] * (width - len(row)) for row in rows], dtype=dtype)


@dataclass
class BeliefPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator plus belief tensors; optionally masks the belief span.

    Questions may have different numbers of belief classes K: belief ids and
    targets are padded to the batch's largest K with ``belief_mask`` marking
    the real entries.
    """

    exclude_belief_from_preference: bool = False

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        prompt_lens = torch.tensor([len(e["prompt_ids"]) for e in examples])
        chosen_lens = torch.tensor([e["chosen_belief_len"] for e in examples])
        rejected_lens = torch.tensor([e["rejected_belief_len"] for e in examples])
        # Options given after the marker (marker-options format) are no part of any response.
        options_lens = torch.tensor([int(e.get("options_len", 0)) for e in examples])
        starts = torch.cat([prompt_lens, prompt_lens])  # chosen rows, then rejected rows
        if bool(options_lens.any()):
            batch["completion_mask"] = mask_spans(batch["completion_mask"], starts + 1,
                                                  torch.cat([options_lens, options_lens]))
        if self.exclude_belief_from_preference:
            batch["completion_mask"] = mask_spans(batch["completion_mask"], starts,
                                                  torch.cat([chosen_lens, rejected_lens]))
        ids = [e["belief_token_ids"] for e in examples]
        batch["prompt_lens"] = prompt_lens
        batch["chosen_belief_lens"] = chosen_lens
        batch["rejected_belief_lens"] = rejected_lens
        batch["options_lens"] = options_lens
        batch["belief_token_ids"] = pad_rows(ids, 0, torch.long)
        batch["belief_mask"] = pad_rows([[True] * len(row) for row in ids], False, torch.bool)
        batch["target_probs"] = pad_rows([e["target_probs"] for e in examples], 0.0, torch.float32)
        batch["margin_group"] = torch.tensor([int(e["margin_group"]) for e in examples])
        add_row_keys(batch, examples)
        return batch


class HiddenSource(Protocol):
    """Last hidden states of a forward and the LM head to project them with."""

    hidden: torch.Tensor | None

    def project(self, hidden: torch.Tensor) -> torch.Tensor: ...


@dataclass
class HiddenStates:
    """Hidden states handed over by the forward itself (no hook needed)."""

    hidden: torch.Tensor
    project: Callable[[torch.Tensor], torch.Tensor]


def belief_span_logps(
    capture: HiddenSource,
    input_ids: torch.Tensor,
    prompt_lens: torch.Tensor,
    span_lens: torch.Tensor,
    belief_token_ids: torch.Tensor,
    options_lens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Belief log-probs from the captured hidden states of the chosen rows.

    Returns ``(belief_logps (B, K), span_token_logps (B, L), span_mask (B, L))``:
    full-vocabulary log-probs of the K belief tokens at the last prompt
    position, and the log-probs of the chosen belief span's tokens (marker and
    description) with the mask of real span positions. ``options_lens`` (B,):
    tokens of given options right after the marker, which the mask leaves out.
    Only ``B x L`` positions are projected through the LM head (L = the longest
    belief span).
    """
    batch = prompt_lens.size(0)
    hidden = capture.hidden[:batch]
    width = int(span_lens.max())
    offsets = torch.arange(width, device=hidden.device)
    # Position t predicts token t + 1: the last prompt token predicts the belief marker.
    positions = (prompt_lens.to(hidden.device) - 1)[:, None] + offsets[None, :]
    positions = positions.clamp(max=hidden.size(1) - 2)
    rows = torch.arange(batch, device=hidden.device)[:, None]
    logps = torch.log_softmax(capture.project(hidden[rows, positions]).float(), dim=-1)
    span_tokens = input_ids[:batch].to(hidden.device)[rows, positions + 1]
    span_token_logps = logps.gather(-1, span_tokens[..., None]).squeeze(-1)
    span_mask = offsets[None, :] < span_lens.to(hidden.device)[:, None]
    if options_lens is not None:  # offset 0 is the marker, the given options follow it
        span_mask &= ~((offsets[None, :] >= 1)
                       & (offsets[None, :] < 1 + options_lens.to(hidden.device)[:, None]))
    belief_logps = logps[:, 0].gather(-1, belief_token_ids.to(hidden.device))
    return belief_logps, span_token_logps, span_mask


def _named_arguments(trainer_class: type, args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> dict[str, Any]:
    """``trainer_class.__init__``'s arguments by name (positional ones included)."""
    names = list(inspect.signature(trainer_class.__init__).parameters)[1:]  # less self
    return {**dict(zip(names, args, strict=False)), **kwargs}


def _eval_datasets(eval_dataset: Any) -> list[Any]:
    if eval_dataset is None:
        return []
    return list(eval_dataset.values()) if isinstance(eval_dataset, dict) else [eval_dataset]


class GDPOTrainer(GuardedCheckpointsMixin, LazyReferenceMixin, DPOTrainer):
    """DPO/GDPO trainer: a drop-in ``DPOTrainer`` for belief-conditioned data.

    ``train_dataset``/``eval_dataset`` are text records (tokenised here with
    ``args.sequence_format``, ``args.pairing`` and ``args.group_in_prompt``) or rows
    tokenised by :func:`pluralign.train.dataset.preference_dataset`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs = _named_arguments(DPOTrainer, args, kwargs)
        config = kwargs.get("args")
        if config is None:  # as TRL's DPOTrainer defaults its config
            model = kwargs.get("model")
            name = model if isinstance(model, str) else model.config._name_or_path
            config = kwargs["args"] = GDPOConfig(f"{str(name).split('/')[-1]}-GDPO")
        if not isinstance(config, GDPOConfig):
            raise TypeError(f"args: GDPOTrainer needs a GDPOConfig (TRL's DPOConfig plus the "
                            f"belief-loss options), got {type(config).__name__}")
        tokenizer = kwargs.get("processing_class")
        if kwargs.get("data_collator") is None:
            if tokenizer is None:
                raise ValueError("processing_class: GDPOTrainer needs the tokenizer (it "
                                 "tokenises text datasets and pads with its pad token)")
            kwargs["data_collator"] = BeliefPreferenceCollator(
                pad_token_id=tokenizer.pad_token_id,
                max_length=config.max_length,
                exclude_belief_from_preference=config.exclude_belief_from_preference,
            )
        format_info = self._add_text_format_tokens(kwargs, config)
        super().__init__(**kwargs)
        #: What save_model writes to pluralign_format.json when the trainer tokenised text
        #: itself (evaluation prompts a model in the format it trained in); None otherwise.
        self.format_info = format_info
        self._set_up_fast_forward()

    @staticmethod
    def _add_text_format_tokens(kwargs: dict[str, Any], config: GDPOConfig
                                ) -> dict[str, Any] | None:
        """Given a text dataset: the sequence format's tokens added to the tokenizer and the
        model's embeddings (before TRL puts a ``peft_config`` adapter on, as ``pluralign
        train`` does), and the format information that ``save_model`` records."""
        datasets = [kwargs.get("train_dataset"), *_eval_datasets(kwargs.get("eval_dataset"))]
        if not any(d is not None and is_text_dataset(d) for d in datasets):
            return None
        if kwargs.get("processing_class") is None:
            raise ValueError("processing_class: GDPOTrainer needs the tokenizer to tokenise a "
                             "text dataset")
        fmt = named_format(config.sequence_format, group_in_prompt=config.group_in_prompt)
        add_missing_format_tokens(kwargs.get("model"), kwargs["processing_class"], fmt)
        # With group_in_prompt the format's group_template goes in too: evaluation,
        # generation and serving then write the group line as training did.
        return {"pairing": config.pairing, "sequence_format": config.sequence_format,
                **fmt.to_info()}

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        if self.format_info is not None and self.args.should_save:
            write_format_info(Path(output_dir or self.args.output_dir), self.format_info)

    def _set_up_fast_forward(self) -> None:
        """Capture hook and compact pair forward, once. Also called from the reference
        precompute, which TRL runs inside ``__init__`` (after patching its fused head)."""
        if hasattr(self, "_capture"):
            return
        self._capture = HiddenStateCapture(self.model)
        self._compact, self._share_prefix = self._fast_forward_options(self.args)
        if self._compact:
            install_pair_forward(self._capture.causal_lm)

    def _fast_forward_options(self, config: GDPOConfig) -> tuple[bool, bool]:
        """(compact head, shared prefix): as configured, less what the model or setup rules out."""
        causal_lm = self._capture.causal_lm
        compact, share = config.compact_logprobs, config.share_prefix
        unsupported = logit_options_in_use(causal_lm) if compact else []
        if unsupported:
            logger.warning("compact_logprobs and share_prefix are off: the model's config sets "
                           "%s, which only TRL's fused head applies", ", ".join(unsupported))
            return False, False
        blockers = prefix_sharing_blockers(causal_lm) if share else []
        if share and config.gradient_checkpointing:
            blockers.append("gradient_checkpointing=True disables the key/value cache it runs "
                            "from (GDPOConfig's default is False)")
        if blockers:
            logger.warning("share_prefix is off: %s", "; ".join(blockers))
        return compact, share and compact and not blockers

    # -- data: text records are tokenised here; tokenised rows must keep our columns
    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, name: str) -> Any:
        if is_text_dataset(dataset):
            return tokenize_text_dataset(dataset, processing_class, args.sequence_format,
                                         pairing=args.pairing, name=name,
                                         max_length=args.max_length,
                                         group_in_prompt=args.group_in_prompt)
        missing = sorted({*TOKENIZED_COLUMNS, *BELIEF_COLUMNS} - set(dataset.column_names))
        if missing:
            raise ValueError(
                f"the {name} dataset lacks the columns {missing} of a tokenised dataset; build "
                "it with pluralign.train.dataset.preference_dataset(records, tokenizer, fmt, "
                "pairing=...), or give text records (pluralign.train.text_dataset)")
        return dataset

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys(
            [*self._signature_columns, *BELIEF_COLUMNS, *OPTIONAL_BELIEF_COLUMNS]))

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        inputs = {k: v for k, v in inputs.items() if k not in (*BELIEF_BATCH_KEYS, ROW_KEY)}
        self._set_up_fast_forward()
        if not self._reference_is_adapter_off_policy(model):
            return super().compute_ref_log_probs(model, inputs)
        # The policy with its adapter off, through the compact head: TRL's fused head
        # scores every position against the whole vocabulary (in fp32 during the
        # precompute), which made the precompute half of a short run's set-up time.
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        unwrapped = self.accelerator.unwrap_model(self.model)
        adapter_off = use_adapter(
            unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        shared = (shared_prefix_lengths(inputs["input_ids"], inputs["attention_mask"])
                  if self._share_prefix else None)
        with torch.no_grad(), adapter_off, self.accelerator.autocast():
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            pair_logprobs=PairRequest(labels, shared))
        seq_len = inputs["completion_mask"].size(1) - 1
        return outputs.log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)

    def _reference_is_adapter_off_policy(self, model: Any) -> bool:
        """Whether the reference is this policy with its LoRA adapter off, scored the plain
        way (no length-desensitised weighting), so the compact forward can compute it."""
        return (self._compact and self.ref_model is None and self.ld_alpha is None
                and is_peft_model(self.model) and model is self.model)

    # -- loss
    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        rows = inputs.pop(ROW_KEY, None)  # present when the reference log-probs are lazy
        belief = {key: inputs.pop(key) for key in BELIEF_BATCH_KEYS}
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs, hidden = self._policy_forward(model, inputs, labels)
        seq_len = completion_mask.size(1) - 1
        logps = outputs.log_probs[:, -seq_len:].sum(dim=1)
        policy_chosen_logps, policy_rejected_logps = logps.chunk(2, dim=0)
        ref_chosen_logps, ref_rejected_logps = self._reference_logps(inputs, rows)
        belief_logps, span_logps, span_mask = belief_span_logps(
            hidden, inputs["input_ids"], belief["prompt_lens"],
            belief["chosen_belief_lens"], belief["belief_token_ids"], belief["options_lens"],
        )
        belief_mask = belief["belief_mask"].to(belief_logps.device)
        result = gdpo_loss(
            policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
            belief_logps, belief["target_probs"].to(belief_logps.device), span_logps, span_mask,
            beta=self.beta,
            calibration_weight=self.args.calibration_weight,
            belief_nll_weight=self.args.belief_nll_weight,
            preference_weight=self.args.preference_weight,
            normalize=self.args.calibration_normalize,
            belief_nll_reduction=self.args.belief_nll_reduction,
            belief_mask=belief_mask,
            sft_weight=self.args.chosen_nll_weight,
            chosen_token_counts=completion_mask[:, 1:].sum(dim=1).chunk(2, dim=0)[0],
        )
        loss = result.losses.mean()
        check_finite(loss, self.state.global_step, {
            "preference": result.preference_losses, "kl": result.kl,
            "belief_nll": result.belief_nll,
        })
        self._record_metrics(mode, result, belief_logps, belief, inputs)
        if return_outputs:
            return loss, outputs
        return loss

    def _policy_forward(self, model: Any, inputs: dict[str, Any], labels: torch.Tensor
                        ) -> tuple[Any, HiddenSource]:
        """Per-token log-probs (``outputs.log_probs``) and where the hidden states are read."""
        model_kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
        if not self._compact:
            with self._capture.armed():
                outputs = model(**model_kwargs, labels=labels, fused_lm_head=True, use_cache=False)
            return outputs, self._capture
        shared = (shared_prefix_lengths(inputs["input_ids"], inputs["attention_mask"])
                  if self._share_prefix else None)
        outputs = model(**model_kwargs, pair_logprobs=PairRequest(labels, shared))
        return outputs, HiddenStates(outputs.hidden, self._capture.project)

    def _reference_logps(self, inputs: dict[str, Any], rows: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        if rows is not None:
            chosen, rejected = self._lazy_reference_logps(rows, inputs, paired=True)
            return chosen, rejected
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        return self.compute_ref_log_probs(self.ref_model or self.model, inputs)

    def _record_metrics(
        self, mode: str, result: Any, belief_logps: torch.Tensor, belief: dict[str, Any],
        inputs: dict[str, Any],
    ) -> None:
        metrics = self._metrics[mode]
        for name, value in result.metrics.items():
            if not name.startswith("rewards/"):  # rewards are logged per pair below
                metrics[name].append(float(value))
        margins = result.reward_margins
        gathered = self.accelerator.gather_for_metrics((margins, belief["margin_group"].to(
            margins.device)))
        for name, values in split_by_margin_group(*gathered).items():
            if values:  # an empty list would make TRL's averaging divide by zero
                metrics[f"rewards/margins_{name}"].extend(values)
        metrics["rewards/margins"].extend(gathered[0].float().tolist())
        metrics["rewards/accuracies"].extend((gathered[0] > 0).float().tolist())
        diagnostics = belief_diagnostics(
            belief_logps.detach(), belief["target_probs"], belief["belief_mask"]
        )
        for name, values in diagnostics.items():  # per pair; eval_belief/jsd is per prompt
            metrics[f"belief/{name}_pairs"].extend(values)
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum()
            self._total_train_tokens += int(tokens)
        metrics["num_tokens"] = [self._total_train_tokens]
