"""SFT on belief + response (and Uniform SFT) on TRL's ``SFTTrainer``.

The NLL goes through :mod:`pluralign.train.logprobs`'s compact head: only
the positions with a label (belief and response; the prompt is -100) are
projected onto the vocabulary. TRL's fused head scores every position, which
was 45% of an SFT step on the bundled model (BENCHMARKS.md, "Training step
speed"). Settings that need the full logits (a custom loss function, label
smoothing, DFT, MoE auxiliary losses, logit transforms, sequence parallelism)
keep TRL's path.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

from pluralign.train.common import GuardedCheckpointsMixin, check_finite, unwrap_to_causal_lm
from pluralign.train.logprobs import PairRequest, install_pair_forward, logit_options_in_use


class BeliefSFTTrainer(GuardedCheckpointsMixin, SFTTrainer):
    """``SFTTrainer`` with the compact-head NLL, guarded checkpoints and a stop on
    non-finite losses.

    Rows are pre-tokenised (``input_ids`` and ``labels`` with the prompt set to
    -100) by :func:`pluralign.train.dataset.sft_dataset`. The compact path logs
    the loss and ``num_tokens``; TRL's ``entropy`` and ``mean_token_accuracy``
    need every logit and are not logged.
    """

    #: False keeps TRL's fused-head loss even where the compact one applies (the step-speed
    #: benchmark compares the two).
    compact_nll: bool = True

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if return_outputs or not (self.compact_nll and self._compact_nll_applies(inputs)):
            result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
        else:
            result = self._compact_nll(model, inputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        check_finite(loss, self.state.global_step, {"nll": loss})
        return result

    def _compact_nll_applies(self, inputs: dict[str, Any]) -> bool:
        """Whether the plain token NLL is what TRL would compute here."""
        causal_lm = unwrap_to_causal_lm(self.model)
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        return (self.compute_loss_func is None and self.label_smoother is None
                and self.args.loss_type == "nll" and not self.aux_loss_enabled
                and not getattr(parallelism, "sp_enabled", False)
                and "labels" in inputs and "attention_mask" in inputs
                and not logit_options_in_use(causal_lm))

    def _compact_nll(self, model: Any, inputs: dict[str, Any],
                     num_items_in_batch: Any) -> torch.Tensor:
        """Mean NLL over labelled tokens (over ``num_items_in_batch`` when the Trainer
        counts tokens across accumulation steps and ranks, as TRL does)."""
        install_pair_forward(unwrap_to_causal_lm(model))
        labels = inputs["labels"]
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        pair_logprobs=PairRequest(labels=labels))
        label_count = (labels[:, 1:] != -100).sum()
        tokens = label_count if num_items_in_batch is None else num_items_in_batch
        loss = -outputs.log_probs.sum() / torch.as_tensor(tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._count_tokens(inputs)
        return loss

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        mode = "train" if self.model.training else "eval"
        if mode == "train":
            batch_tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum())
            self._total_train_tokens += batch_tokens.sum().item() // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
