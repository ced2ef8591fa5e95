"""``TrainConfig``: one dataclass for ``pluralign train`` and ``pluralign.train``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pluralign.beliefs.formats import check_format_name
from pluralign.config import YamlConfig, reject_non_finite
from pluralign.models import ModelConfig
from pluralign.registry import UnknownNameError, did_you_mean
from pluralign.train.belief_loss import (
    BELIEF_WEIGHTS,
    BeliefLossArgs,
    BeliefNormalization,
    NLLReduction,
    belief_loss_help,
    check_choices,
    check_weight,
)
from pluralign.train.methods import Method, get_method
from pluralign.train.report_to import NO_BACKEND, check_report_to
from pluralign.train.selection import SELECTION_METRICS
from pluralign.train.trl_options import check_training_args, field_types

_METHOD_DEFAULT = "Unset: the method's (`pluralign ls methods`)."


def _lora_default() -> ModelConfig:
    return ModelConfig(model="smollm2-135m", lora_r=8, lora_alpha=16.0)


@dataclass
class TrainConfig(YamlConfig):
    """A training run: method, data, model and optimisation settings."""

    method: str = field(
        default="gdpo",
        metadata={"help": "Training method (`pluralign ls methods`): sft, uniform-sft, icf, dpo, "
                          "gdpo, gdpo-calibration, gdpo-conditioned, kto, gdpo-kto."},
    )
    train_file: str = field(
        default="", metadata={"help": "JSONL of group preference records for training."}
    )
    eval_file: str | None = field(
        default=None, metadata={"help": "JSONL of records for evaluation during training."}
    )
    output_dir: str = field(
        default="runs/run",
        metadata={"help": "Run folder: config.yaml, metrics.jsonl, checkpoints, final/."},
    )
    model: ModelConfig = field(
        default_factory=_lora_default,
        metadata={"help": "Model to train (model.model, model.lora_r, ...); start DPO/GDPO "
                          "from an SFT run's final/ folder as the paper does."},
    )
    sequence_format: str = field(
        default="auto",
        metadata={"help": "Sequence format (`pluralign ls sequence-formats`): auto (default: "
                          "the format the training records name in metadata.sequence_format, "
                          "e.g. reviews for `pluralign data reviews`; else separated), "
                          "separated (a dedicated <|belief|> token ends the prompt and occurs "
                          "nowhere else), paper (the paper's exact <Q>{prompt}<A>{class}"
                          "<{description}>{response}, whose '>' before the belief slot also "
                          "closes every description, so trained models repeat markers), "
                          "reviews or reviews-paper ({rating}{review}, no description)."},
    )
    belief_format: Literal["digit", "special"] = field(
        default="digit",
        metadata={"help": "Belief marker: the paper's digit (`{class}<{description}>`) or "
                          "added special tokens `<|belief_k|>`."},
    )
    use_chat_template: bool = field(
        default=False,
        metadata={"help": "Render the prompt with the tokenizer's chat template."},
    )
    group_in_prompt: bool = field(
        default=False,
        metadata={"help": "Name each record's group in its prompt (a 'Group: NAME' line right "
                          "before the question), so one model learns a belief distribution per "
                          "group from a file of several groups; evaluation and generation read "
                          "it from the model's format file. Off: the paper's one model per "
                          "group (a file whose groups give one question different targets is "
                          "warned about)."},
    )
    group_context: int = field(
        default=0,
        metadata={"help": "With group_in_prompt: this many other questions of the same group, "
                          "with the group's answer distribution, before each prompt (GPO-style "
                          "group context, so a group never trained on can be described by a few "
                          "of its answers at evaluation). Drawn (seeded) from train_file only, "
                          "never the question asked; 0: none."},
    )
    beta: float = field(default=0.1, metadata={"help": "DPO/KTO beta (paper: 0.1)."})
    # The belief-loss options: BeliefLossArgs' fields, in this config's place; the weights
    # are optional (unset: the method's) and the method sets exclude_belief_from_preference.
    calibration_weight: float | None = field(
        default=None, metadata=belief_loss_help("calibration_weight", _METHOD_DEFAULT))
    belief_nll_weight: float | None = field(
        default=None, metadata=belief_loss_help("belief_nll_weight", _METHOD_DEFAULT))
    preference_weight: float | None = field(
        default=None, metadata=belief_loss_help("preference_weight", _METHOD_DEFAULT))
    calibration_normalize: BeliefNormalization = field(
        default="full_vocab", metadata=belief_loss_help("calibration_normalize"))
    belief_nll_reduction: NLLReduction = field(
        default="mean", metadata=belief_loss_help("belief_nll_reduction"))
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate."})
    optim: str = field(
        default="adamw_torch",
        metadata={"help": "Optimiser name as in transformers (paper: rmsprop)."},
    )
    lr_scheduler_type: str = field(
        default="constant_with_warmup", metadata={"help": "Learning-rate schedule."}
    )
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs (if max_steps < 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimiser steps; -1 uses epochs."})
    per_device_train_batch_size: int = field(
        default=4, metadata={"help": "Pairs (or examples for SFT/KTO) per device per step."}
    )
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Eval batch size."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated per optimiser step."}
    )
    max_length: int = field(default=512, metadata={"help": "Longest sequence in tokens."})
    too_long: str = field(
        default="error",
        metadata={"help": "A record longer than max_length (prompt + belief + response): "
                          "error (name its file and line) or drop (leave it out, counted on the "
                          "console and in run.json). No record is ever trained on cut."})
    precompute_ref_log_probs: bool = field(
        default=True,
        metadata={"help": "Compute each row's reference log-probs once, when a batch first uses "
                          "it, and reuse them (later epochs and evaluations); TRL's pass over "
                          "every row before step 1 for full fine-tuning without LoRA. False: a "
                          "reference forward every step."},
    )
    validation_fraction: float = field(
        default=0.0,
        metadata={"help": "Share of the training prompts carved off as a validation split for "
                          "checkpoint selection: one held-out wording of some trained questions "
                          "where questions have several, else held-out records (0: none)."},
    )
    select_best_by: str = field(
        default="auto",
        metadata={"help": "Which validation evaluation picks the weights saved to final/: "
                          "eval_belief/jsd, eval_loss, last (no selection), or auto (belief JSD "
                          "for methods with belief terms, the validation loss otherwise; last "
                          "without a validation split). Never selects on eval_file."},
    )
    frame_prompts: bool = field(
        default=False,
        metadata={"help": "Wrap each training prompt in one of a few fixed generic frames "
                          "(seeded; validation and eval prompts untouched), so the belief "
                          "reading follows the question rather than one wording of it."},
    )
    eval_steps: int = field(default=50, metadata={"help": "Evaluate every N steps."})
    eval_on_start: bool = field(
        default=True, metadata={"help": "Also evaluate before the first step (curve origin)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log training metrics every N steps."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Keep at most this many checkpoints."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for data order, LoRA init, sampling."})
    bf16: bool = field(default=False, metadata={"help": "Train in bfloat16 autocast."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Trade compute for memory."}
    )
    report_to: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra logging backends: tensorboard, wandb (install with "
                          "pip install \"pluralign[tensorboard]\" or \"pluralign[wandb]\"); "
                          "metrics.jsonl is always written."},
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Continue from the last complete checkpoint in output_dir (with the "
                          "run's own settings; only steps and logging/eval/save intervals may "
                          "change)."}
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace an earlier run's outputs in output_dir, or write into a "
                          "non-empty folder pluralign did not create (its files are never "
                          "deleted or rewritten)."}
    )
    max_train_examples: int | None = field(
        default=None, metadata={"help": "Use only the first N training records."}
    )
    max_eval_examples: int | None = field(
        default=None, metadata={"help": "Use only the first N eval records."}
    )
    icf_shots: int = field(
        default=3,
        metadata={"help": "icf: in-context examples (shots) before each prompt, from other "
                          "questions of train_file; the paper used 3 (GPT-2 Large) and 5 "
                          "(Pythia-2.8B). They count toward max_length. Records that carry a "
                          "context keep it."}
    )
    kto_desirable_weight: float = field(
        default=1.0, metadata={"help": "KTO weight of desirable examples."}
    )
    kto_undesirable_weight: float = field(
        default=1.0, metadata={"help": "KTO weight of undesirable examples."}
    )
    training_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Any other field of the method family's TRL config (TrainingArguments "
                          "and DPOConfig/KTOConfig/SFTConfig: weight_decay, max_grad_norm, "
                          "adam_beta2, torch_compile, deepspeed, GDPO's share_prefix ...), "
                          "checked against its TRL type. On the command line and at the top "
                          "of a YAML file such a field is given directly: --weight_decay 0.1."},
    )

    #: Keys that are no field of TrainConfig go to ``training_args`` when TRL has them.
    config_pass_through: ClassVar[str] = "training_args"

    @classmethod
    def pass_through_types(cls) -> Mapping[str, Any]:
        """The TRL fields ``training_args`` may hold, with their types (any family's)."""
        return {name: tp for name, tp in field_types().items()
                if name not in cls.__dataclass_fields__}

    def __post_init__(self) -> None:
        reject_non_finite(self)
        try:
            get_method(self.method)
        except UnknownNameError as exc:
            raise ValueError(f"method: {exc}") from None
        check_format_name(self.sequence_format, chat_template=self.use_chat_template)
        if self.beta <= 0:
            raise ValueError(f"beta: must be > 0, got {self.beta}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be > 0, got {self.learning_rate}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "eval_steps", "logging_steps", "save_steps",
                     "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.icf_shots < 1:
            raise ValueError(f"icf_shots: must be >= 1 (the paper used 3 or 5), got "
                             f"{self.icf_shots}")
        self._check_groups()
        if self.too_long not in ("error", "drop"):
            raise ValueError(f"too_long: must be error or drop, got {self.too_long!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction: must be in [0, 1), got "
                             f"{self.validation_fraction}")
        known = ("auto", "last", *SELECTION_METRICS)
        if self.select_best_by not in known:
            raise ValueError(f"select_best_by: unknown {self.select_best_by!r}."
                             f"{did_you_mean(self.select_best_by, known)} Known: "
                             f"{', '.join(known)}")
        if self.select_best_by not in ("auto", "last") and not self.validation_fraction:
            raise ValueError(f"select_best_by: {self.select_best_by} needs a validation split "
                             "(validation_fraction > 0); selection never uses eval_file, which "
                             "may hold the prompts you report on")
        for name in BELIEF_WEIGHTS:  # the resolved set is checked by belief_loss()
            if getattr(self, name) is not None:
                check_weight(name, getattr(self, name))
        check_choices(self)
        self._check_report_to()
        self.training_args = check_training_args(
            self.training_args, family=self.method_spec.family,
            own_fields=self.__dataclass_fields__)

    def _check_groups(self) -> None:
        if self.group_context < 0:
            raise ValueError(f"group_context: must be >= 0 (0: none), got {self.group_context}")
        if self.group_context and not self.group_in_prompt:
            raise ValueError("group_context: the examples describe the group that the prompt "
                             "names; set group_in_prompt too")
        if self.group_context and self.method_spec.in_context:
            raise ValueError(f"group_context: method {self.method} puts its own in-context "
                             "shots where the group context goes; use one of the two")

    def _check_report_to(self) -> None:
        """Fail now, in one line, on a backend that is unknown or not installed; transformers
        would fail only after the model loaded, with a long traceback."""
        if isinstance(self.report_to, str):  # the Python API's report_to="tensorboard"
            self.report_to = [part.strip() for part in self.report_to.split(",") if part.strip()]
        check_report_to(self.report_to)
        # "none" means what an empty list means; one spelling keeps config.yaml comparable.
        self.report_to = [name for name in self.report_to if name != NO_BACKEND]

    @property
    def method_spec(self) -> Method:
        return get_method(self.method)

    def selection_metric(self) -> str | None:
        """The metric that selects the saved weights, or None (keep the last step's)."""
        if self.select_best_by == "last" or not self.validation_fraction:
            return None
        if self.select_best_by == "auto":
            return "eval_belief/jsd" if self.method_spec.uses_belief_terms else "eval_loss"
        return self.select_best_by

    def belief_loss(self) -> BeliefLossArgs:
        """The belief-loss options the trainer gets: the method's weights with this config's
        overrides (:meth:`weights`), the method's ``exclude_belief_from_preference`` and this
        config's options. Raises ``ValueError`` when the three weights are all 0."""
        calibration, nll, preference = self.weights()
        return BeliefLossArgs(
            calibration_weight=calibration, belief_nll_weight=nll, preference_weight=preference,
            calibration_normalize=self.calibration_normalize,
            belief_nll_reduction=self.belief_nll_reduction,
            exclude_belief_from_preference=self.method_spec.exclude_belief_from_preference,
        )

    def weights(self) -> tuple[float, float, float]:
        """(calibration, belief NLL, preference): the method's, with this config's overrides."""
        method = self.method_spec
        return (
            method.calibration_weight if self.calibration_weight is None
            else self.calibration_weight,
            method.belief_nll_weight if self.belief_nll_weight is None
            else self.belief_nll_weight,
            method.preference_weight if self.preference_weight is None
            else self.preference_weight,
        )
