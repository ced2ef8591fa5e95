"""SFT on belief + response (and Uniform SFT) on TRL's ``SFTTrainer``."""

from __future__ import annotations

from typing import Any

from trl import SFTTrainer

from pluralign.train.common import GuardedCheckpointsMixin, check_finite


class BeliefSFTTrainer(GuardedCheckpointsMixin, SFTTrainer):
    """``SFTTrainer`` with guarded checkpoints and a stop on non-finite losses.

    Rows are pre-tokenised (``input_ids`` and ``labels`` with the prompt set to
    -100) by :func:`pluralign.train.dataset.sft_dataset`.
    """

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        loss = result[0] if return_outputs else result
        check_finite(loss, self.state.global_step, {"nll": loss})
        return result
