"""``TrainConfig`` onto TRL's arguments, in one place.

:func:`training_arguments` gives the ``TrainingArguments`` keywords every
trainer family shares (what ``SFTConfig`` gets); :func:`trainer_arguments`
adds the method family's own: ``beta``, the reference log-probs and the
belief-loss options (:meth:`TrainConfig.belief_loss`) for the preference and
KTO trainers, KTO's example weights. A ``TrainConfig`` field that TRL takes
under the same name and meaning is listed in :data:`SAME_NAME_ARGUMENTS`
instead of being copied by hand; every other TRL field comes through
``TrainConfig.training_args`` (:mod:`pluralign.train.trl_options`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from pluralign.train.config import TrainConfig

#: ``TrainConfig`` fields that TRL's ``TrainingArguments`` takes unchanged.
SAME_NAME_ARGUMENTS = (
    "learning_rate", "optim", "lr_scheduler_type", "warmup_steps", "num_train_epochs",
    "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "eval_steps", "logging_steps", "save_steps",
    "save_total_limit", "seed", "bf16", "max_length",
)
#: ``TrainConfig`` fields that KTO takes under TRL's name.
KTO_ARGUMENTS = {"kto_desirable_weight": "desirable_weight",
                 "kto_undesirable_weight": "undesirable_weight"}


def training_arguments(config: TrainConfig, *, has_eval: bool) -> dict[str, Any]:
    """Keywords of TRL's ``TrainingArguments`` for ``config``, shared by every family;
    ``has_eval``: whether the trainer gets an eval dataset (it evaluates every eval_steps)."""
    accelerator = _has_accelerator()
    return {
        **{name: getattr(config, name) for name in SAME_NAME_ARGUMENTS},
        "output_dir": str(Path(config.output_dir)),
        "eval_strategy": "steps" if has_eval else "no",
        "eval_on_start": has_eval and config.eval_on_start,
        "data_seed": config.seed,
        # transformers 5 renamed it; the old name warns on every run (FutureWarning).
        "activation_checkpointing": config.gradient_checkpointing,
        "report_to": config.report_to or "none",
        "remove_unused_columns": True,
        "disable_tqdm": False,
        "dataloader_pin_memory": accelerator,
        # CPU-only processes started by `accelerate launch` join a gloo group only with use_cpu.
        "use_cpu": not accelerator or config.model.device == "cpu",
    }


def trainer_arguments(config: TrainConfig, *, has_eval: bool) -> dict[str, Any]:
    """Keywords of the TRL config of ``config``'s method family (``SFTConfig``,
    :class:`~pluralign.train.preference.GDPOConfig` or
    :class:`~pluralign.train.kto.GDPOKTOConfig`)."""
    arguments = training_arguments(config, has_eval=has_eval)
    family = config.method_spec.family
    if family != "sft":
        arguments.update(beta=config.beta,
                         precompute_ref_log_probs=config.precompute_ref_log_probs,
                         **asdict(config.belief_loss()))
    if family == "kto":
        arguments.update({trl: getattr(config, ours) for ours, trl in KTO_ARGUMENTS.items()})
    # Last: TRL's own options the user passed through (checked against this family's class).
    arguments.update(config.training_args)
    return arguments


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()
