"""TRL's own options, reachable from a ``TrainConfig``: ``training_args``.

``TrainConfig`` names the settings pluralign reasons about (steps, learning
rate, selection, the belief loss). Every other field of the method family's
TRL config (``weight_decay``, ``max_grad_norm``, ``adam_beta2``,
``torch_compile``, ``fsdp``, ``deepspeed``, GDPO's ``share_prefix`` ...) passes
through ``TrainConfig.training_args``: on the command line as ``--weight_decay
0.1``, in YAML at the top level or under ``training_args:``. Each value is
checked against the TRL field's type when the config is read, and against
the method family's own TRL class when the config is built, so a typo or an
option of another family fails before any model loads.

Imports TRL only when a pass-through option is used (TRL takes seconds to import).
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from typing import Any

#: TRL fields that pluralign sets itself, with what to use instead. Passing them through
#: would break a run's folder, its selection or its data (SFT packing mixes records).
RESERVED = {
    "output_dir": "output_dir (a TrainConfig field)",
    "eval_strategy": "eval_steps; pluralign evaluates when it has eval data",
    "report_to": "report_to (a TrainConfig field)",
    "remove_unused_columns": "nothing: the trainers need their own columns",
    "load_best_model_at_end": "select_best_by with validation_fraction",
    "metric_for_best_model": "select_best_by",
    "greater_is_better": "select_best_by",
    "resume_from_checkpoint": "resume",
    "desirable_weight": "kto_desirable_weight",
    "undesirable_weight": "kto_undesirable_weight",
    "packing": "nothing: belief SFT trains on whole records",
    "dataset_text_field": "nothing: pluralign tokenises records itself",
    "sequence_format": "sequence_format (a TrainConfig field)",
    "pairing": "method: the method decides the pairing",
    "activation_checkpointing": "gradient_checkpointing (a TrainConfig field)",
}


def family_config_class(family: str) -> type:
    """The TRL config class a method family's trainer takes."""
    if family == "sft":
        from trl import SFTConfig

        return SFTConfig
    if family == "kto":
        from pluralign.train.kto import GDPOKTOConfig

        return GDPOKTOConfig
    from pluralign.train.preference import GDPOConfig

    return GDPOConfig


@functools.cache
def field_types(family: str | None = None) -> Mapping[str, Any]:
    """Type hints of the TRL fields ``training_args`` may set: of ``family``'s class, or
    (None) of any family's, which is what reading a config can check before it knows the
    method."""
    families = (family,) if family else ("sft", "preference", "kto")
    types: dict[str, Any] = {}
    for name in families:
        for key, tp in typing.get_type_hints(family_config_class(name)).items():
            # A name whose type differs between families (loss_type: SFT's str, DPO's
            # list[str]) takes either until the method says which family checks it.
            types[key] = tp if types.get(key, tp) == tp else types[key] | tp
    return types  # RESERVED ones included: check_training_args names what to use instead


def check_training_args(training_args: Mapping[str, Any], *, family: str,
                        own_fields: Mapping[str, Any]) -> dict[str, Any]:
    """``training_args`` with each value checked against ``family``'s TRL field type;
    ``ValueError`` naming the key for a reserved one, one that ``TrainConfig`` already has
    (``own_fields``), or one the family's TRL config lacks."""
    from pluralign.config import ConfigError, coerce
    from pluralign.registry import did_you_mean

    if not training_args:
        return {}
    allowed = field_types(family)
    checked = {}
    for key, value in training_args.items():
        where = f"training_args.{key}"
        if key in RESERVED:
            raise ValueError(f"{where}: pluralign sets it; use {RESERVED[key]}")
        if key in own_fields:
            raise ValueError(f"{where}: a TrainConfig field; set {key} itself")
        if key not in allowed:
            raise ValueError(f"{where}: not an option of {family_config_class(family).__name__} "
                             f"(the {family} trainers).{did_you_mean(key, list(allowed))}")
        try:
            checked[key] = coerce(value, allowed[key], where)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return checked
