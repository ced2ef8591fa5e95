"""The training recipe of the demo and the GlobalOpinionQA reproduction.

SFT, then DPO and GDPO from the SFT model, all with LoRA. The settings come
from exploration on the demo data (BENCHMARKS.md, "Demo recipe exploration":
the learning rate 2e-3 with calibration and belief-NLL weights of 10 is what
made GDPO learn p* in 60 steps);
``benchmarks/recipe_sweep.py`` is the sweep that chooses them on the
development groups only (GlobalOpinionQA United States, Pakistan, S. Africa),
by belief JSD on a validation split carved from the training questions.
Nothing is tuned per group. Steps, and how many of the model's layers get a
LoRA adapter (``lora_top_layers``), are what a caller sizes to its time
budget: the demo trains every layer, the three-group reproduction the last 10
(``benchmarks/opinion_repro.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pluralign.models import ModelConfig
from pluralign.train.config import TrainConfig
from pluralign.train.methods import get_method


def bf16_is_fast() -> bool:
    """Whether bfloat16 autocast speeds training up here: a GPU that supports it, or a CPU
    with native bf16 instructions (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: Values of ``Recipe.base_dtype`` (and of the demo's and the reproduction's options).
BASE_DTYPES = ("auto", "float32", "bfloat16")


def check_base_dtype(value: str) -> None:
    """Refuse a ``base_dtype`` outside :data:`BASE_DTYPES`, naming the field."""
    if value not in BASE_DTYPES:
        raise ValueError(f"base_dtype: must be auto, float32 or bfloat16, got {value!r}")


@dataclass(frozen=True)
class Recipe:
    """Settings of the SFT -> DPO / GDPO pipeline (LoRA on the bundled model)."""

    sft_steps: int = 60
    sft_learning_rate: float = 2e-3
    preference_steps: int = 60
    preference_learning_rate: float = 2e-3
    batch_size: int = 8
    lora_r: int = 16
    lora_top_layers: int = 0
    lora_target_modules: tuple[str, ...] = ("all-linear",)
    beta: float = 0.5
    #: 10, not the paper's 1: Adam sets the step size, so a term's weight only sets its share
    #: of the update direction; at 1 the one-position calibration gradient is drowned by the
    #: preference and NLL terms over whole responses, and p* is barely learnt in 60 steps
    #: (BENCHMARKS.md, "Demo recipe exploration").
    calibration_weight: float | None = 10.0
    #: 10 as well: the chosen belief's marker and description get the same share, and the
    #: model writes the description that belongs to its class (demo CBC 0.65 -> 0.81).
    belief_nll_weight: float | None = 10.0
    #: TRL's "sft" loss term (RPO: the chosen sequence's NLL per token) beside GDPO's
    #: preference term, weight 1 as RPO uses. At lr 2e-3 belief-conditioned DPO alone let
    #: the responses loop ("learn to learn to ..."): on the demo (seed 0) it raised GDPO's
    #: BPC 0.56 -> 0.73 and RS 0.67 -> 0.90 with JSD 0.122 -> 0.125 (BENCHMARKS.md, "GDPO
    #: with the chosen NLL"). DPO stays the paper's plain sigmoid DPO; 0 turns it off.
    chosen_nll_weight: float = 1.0
    validation_fraction: float = 0.1
    frame_prompts: bool = True
    eval_every: int = 20
    warmup_steps: int = 5
    #: ``auto``: the format the records name (``separated`` where none is named).
    sequence_format: str = "auto"
    #: Precision of the frozen base weights under LoRA: float32, bfloat16, or auto (bfloat16
    #: where bf16 is fast, float32 elsewhere). A bf16 base skips the weight casts that bf16
    #: autocast makes at every matmul (the recipe's GDPO step on demo pairs 1.11x faster than
    #: autocast alone on 2 CPU cores, 1.49x fp32, 926 MB less) but runs the residual stream in
    #: bf16: on the conflicting-pairs benchmark GDPO's final eval JSD was 0.022 worse than
    #: fp32's (mean of seeds 0-2), over issue 19's 0.01 bar, so float32 stays the default
    #: (BENCHMARKS.md, "bf16 frozen base"). LoRA weights and the optimiser state stay fp32
    #: either way (peft keeps adapters in fp32).
    base_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_base_dtype(self.base_dtype)

    def resolved_base_dtype(self) -> str:
        """``base_dtype`` with auto resolved for this machine (full fine-tuning: float32)."""
        if self.base_dtype != "auto":
            return self.base_dtype
        return "bfloat16" if self.lora_r and bf16_is_fast() else "float32"

    def model_config(self, start: str) -> ModelConfig:
        # Dropout off: a LoRA dropout copies every activation and slows a CPU step by a
        # quarter; the DPO/GDPO trainers switch it off anyway.
        return ModelConfig(model=start, lora_r=self.lora_r, lora_alpha=2.0 * max(self.lora_r, 1),
                           lora_dropout=0.0, lora_top_layers=self.lora_top_layers,
                           lora_target_modules=list(self.lora_target_modules),
                           dtype=self.resolved_base_dtype())

    def train_config(self, method: str, *, start: str, train_file: str, output_dir: str,
                     seed: int, eval_file: str | None = None, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` of one stage (``sft`` or a preference method)."""
        sft = get_method(method).family == "sft"  # sft, uniform-sft, icf
        settings: dict[str, Any] = dict(
            method=method, train_file=train_file, eval_file=eval_file, output_dir=output_dir,
            model=self.model_config(start),
            max_steps=self.sft_steps if sft else self.preference_steps,
            learning_rate=self.sft_learning_rate if sft else self.preference_learning_rate,
            lr_scheduler_type="linear", warmup_steps=self.warmup_steps,
            per_device_train_batch_size=self.batch_size, per_device_eval_batch_size=16,
            eval_steps=self.eval_every, logging_steps=self.eval_every, save_steps=10_000,
            seed=seed, beta=self.beta, bf16=bf16_is_fast(),
            validation_fraction=self.validation_fraction, eval_on_start=False,
            frame_prompts=self.frame_prompts, sequence_format=self.sequence_format,
        )
        spec = get_method(method)
        if spec.uses_belief_terms:  # DPO keeps its belief weights at 0
            settings.update(calibration_weight=self.calibration_weight,
                            belief_nll_weight=self.belief_nll_weight)
            if spec.family == "preference" and self.chosen_nll_weight:
                settings["training_args"] = {"loss_type": ["sigmoid", "sft"],
                                             "loss_weights": [1.0, self.chosen_nll_weight]}
        training_args = {**settings.get("training_args", {}),
                         **overrides.pop("training_args", {})}
        settings.update(overrides)
        if training_args:
            settings["training_args"] = training_args
        return TrainConfig(**settings)

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)


#: The recipe the demo and the reproduction use.
RECIPE = Recipe()
