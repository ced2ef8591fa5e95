"""``GPAConfig``: one dataclass for every GPA stage, the pipeline and ``pluralign gpa``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pluralign.config import YamlConfig, reject_non_finite
from pluralign.llm import LLMConfig


def _pipeline_llm() -> LLMConfig:
    # Classification and labelling answers are short; generous caps only cost time on CPU.
    return LLMConfig(max_tokens=96, progress=False)


@dataclass
class GPAConfig(YamlConfig):
    """Group Preference Alignment: logs -> signals -> attributes -> rules -> rubrics -> CT/FT."""

    inputs: list[str] = field(
        default_factory=list,
        metadata={"help": "Conversation log files: JSON list, JSONL, or an export object "
                          "({'conversations': [...]}) in the messages or OpenAI export format."},
    )
    work_dir: str = field(
        default="gpa_runs/run",
        metadata={"help": "Folder every stage writes its output into (and reads its input from)."},
    )
    group_field: str = field(
        default="metadata.country",
        metadata={"help": "Dotted path of the field naming a conversation's group."},
    )
    group_map: str | None = field(
        default=None,
        metadata={"help": "JSON object or CSV (id,group) mapping conversation ids to groups; "
                          "wins over group_field."},
    )
    max_conversations: int | None = field(
        default=None, metadata={"help": "Use only the first N well-formed conversations."}
    )
    max_turns: int = field(
        default=40, metadata={"help": "Messages per conversation considered (longer ones cut)."}
    )
    max_chars: int = field(
        default=1200,
        metadata={"help": "Characters of a prompt or answer quoted in a generation or judge "
                          "request (labelling requests quote label_chars)."},
    )
    heldout_fraction: float = field(
        default=0.2,
        metadata={"help": "Share of each group's conversations kept out of rubric mining; "
                          "their first prompts are the evaluation prompts, and their turns "
                          "validate each rubric item without a judge (rubrics.md)."},
    )
    min_conversations: int = field(
        default=3,
        metadata={"help": "Groups with fewer conversations get no rubric (reported)."},
    )
    max_groups: int | None = field(
        default=None, metadata={"help": "Build rubrics for the N largest eligible groups only."}
    )
    use_llm_labels: bool = field(
        default=True,
        metadata={"help": "Ask the LLM to label every candidate turn and attribute (adds "
                          "recall to the cue patterns). Costs one request per user turn that "
                          "follows an answer: the slowest stage with a local model."},
    )
    cue_chars: int = field(
        default=240,
        metadata={"help": "Cue patterns look only at the first N characters of a user message "
                          "(its instruction); a cue word in pasted text after it is not a "
                          "reaction."},
    )
    label_chars: int = field(
        default=400,
        metadata={"help": "Characters of the answer and of the user's reaction quoted in an "
                          "LLM labelling prompt (classify, attributes); more context costs "
                          "prompt time on CPU."},
    )
    min_support: int = field(
        default=1, metadata={"help": "Conversations a rule needs as evidence."}
    )
    min_lift: float = field(
        default=1.0,
        metadata={"help": "Smoothed rate in the group / rate in the other groups a rule needs."},
    )
    max_rubric_items: int = field(default=8, metadata={"help": "Items per group rubric."})
    rubric_phrasing: Literal["llm", "template"] = field(
        default="llm",
        metadata={"help": "Rubric item text written by the LLM (checked, template fallback) "
                          "or taken from the attribute templates."},
    )
    relevance: Literal["embedding", "keywords"] = field(
        default="embedding",
        metadata={"help": "GPA-CT: pick rubric items by embedding similarity to the prompt "
                          "(bundled MiniLM) or by keyword overlap."},
    )
    top_k: int = field(default=3, metadata={"help": "GPA-CT: rubric items placed in context."})
    prompts_per_group: int = field(
        default=4,
        metadata={"help": "Held-out prompts answered (GPA-CT) and evaluated per group; fewer "
                          "is faster, with wider confidence intervals."},
    )
    prompts_file: str | None = field(
        default=None,
        metadata={"help": "JSONL of {group, prompt} to answer with GPA-CT instead of the "
                          "held-out prompts."},
    )
    answer_max_tokens: int = field(
        default=128,
        metadata={"help": "Token cap of generated answers (CT, pairs, baselines, GPA-FT); "
                          "generation time grows with it, and below ~110 tokens an answer "
                          "cannot pass a 'long answers' item (80+ words)."},
    )
    ft_groups: int = field(
        default=1, metadata={"help": "GPA-FT: fine-tune models for the N largest rubric groups."}
    )
    ft_method: Literal["dpo", "sft"] = field(
        default="dpo", metadata={"help": "GPA-FT training method (pluralign.train)."}
    )
    ft_model: str = field(
        default="smollm2-135m", metadata={"help": "GPA-FT base model reference (load_model)."}
    )
    ft_lora_r: int = field(default=8, metadata={"help": "GPA-FT LoRA rank (0: full weights)."})
    ft_pairs_per_group: int = field(
        default=8,
        metadata={"help": "GPA-FT: synthetic follow/violate pairs per group (two generated "
                          "answers each)."},
    )
    ft_max_steps: int = field(
        default=4,
        metadata={"help": "GPA-FT optimiser steps: the default is a smoke-sized run that "
                          "shows the stage works; a model that follows the rubric needs "
                          "far more steps and pairs."},
    )
    ft_batch_size: int = field(default=2, metadata={"help": "GPA-FT pairs per step."})
    ft_learning_rate: float = field(default=5e-5, metadata={"help": "GPA-FT learning rate."})
    ft_max_length: int = field(default=384, metadata={"help": "GPA-FT longest sequence."})
    retention_margin: float = field(
        default=0.10,
        metadata={"help": "Capability retention passes when the fine-tuned model's mean loss "
                          "on the retention instructions (retention_data) is at most "
                          "(1 + margin) x the base loss."},
    )
    retention_data: str | None = field(
        default=None,
        metadata={"help": "Held-out instruction data for the retention check: JSONL (.gz too) "
                          "of {prompt, answer} or HH-RLHF 'chosen' transcripts, e.g. "
                          "../shared/data/hh_rlhf/harmless_base_test.jsonl.gz (default: 8 "
                          "built-in instructions, too few for a tight interval)."},
    )
    retention_examples: int = field(
        default=64,
        metadata={"help": "Examples of retention_data scored (a seeded sample); each costs "
                          "two forwards per model."},
    )
    data_sizes: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 1.0],
        metadata={"help": "`gpa data-size`: shares of the group's mined conversations that "
                          "GPA-CT and GPA-FT are built from (seeded, nested; held-out "
                          "conversations are never mined). The largest share's rubric is the "
                          "reference the answers of every share are measured against."},
    )
    data_size_group: str | None = field(
        default=None,
        metadata={"help": "`gpa data-size`: the group whose mined conversations are "
                          "subsampled (default: the largest eligible group)."},
    )
    judge_model: str | None = field(
        default=None,
        metadata={"help": "Judge model (default: the llm's). With judge_base_url: an "
                          "OpenAI-compatible judge."},
    )
    judge_base_url: str | None = field(
        default=None, metadata={"help": "Judge server URL (OpenAI-compatible)."}
    )
    llm: LLMConfig = field(
        default_factory=_pipeline_llm,
        metadata={"help": "The LLM backend of every labelling and generation step."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of splits, pair order and judging."})

    #: Other names of ``pluralign gpa``: the work folder as ``--output_dir`` (the one name
    #: of every command's output folder) or the older ``--work`` (``-w``), the conversation
    #: logs as ``--logs``, and the older LLM options (``--llm-backend openai``).
    config_aliases: ClassVar[dict[str, str]] = {
        "output_dir": "work_dir", "work": "work_dir", "logs": "inputs",
        "llm_backend": "llm.backend", "llm_model": "llm.model", "base_url": "llm.base_url",
        "api_key_env": "llm.api_key_env", "llm_cache": "llm.cache_dir",
        "llm_timeout": "llm.timeout", "llm_retries": "llm.max_retries"}

    def __post_init__(self) -> None:
        reject_non_finite(self)
        for name in ("max_turns", "max_chars", "cue_chars", "label_chars",
                     "min_conversations", "max_rubric_items",
                     "top_k", "prompts_per_group", "answer_max_tokens", "ft_pairs_per_group",
                     "retention_examples",
                     "ft_max_steps", "ft_batch_size", "ft_max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("max_conversations", "max_groups"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be >= 1 or null, got {value}")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction: must be in [0, 1), got {self.heldout_fraction}")
        if self.min_support < 1:
            raise ValueError(f"min_support: must be >= 1, got {self.min_support}")
        for name in ("min_lift", "retention_margin", "ft_groups", "ft_lora_r"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.ft_learning_rate <= 0:
            raise ValueError(f"ft_learning_rate: must be > 0, got {self.ft_learning_rate}")
        if not self.data_sizes or any(not 0 < share <= 1 for share in self.data_sizes) \
                or len(set(self.data_sizes)) != len(self.data_sizes):
            raise ValueError(f"data_sizes: distinct shares in (0, 1] needed, got "
                             f"{self.data_sizes}")
        if not self.group_field.strip() and not self.group_map:
            raise ValueError("group_field: name a field (e.g. metadata.country) or a group_map")

    @classmethod
    def quick(cls, **overrides: Any) -> GPAConfig:
        """The ``--quick`` preset (:data:`QUICK_PRESET`), then ``overrides``."""
        return cls(**{**quick_overrides(), **overrides})


@dataclass(frozen=True)
class PresetCap:
    """One setting of a preset and what it gives up, shown in ``pluralign gpa run --help``."""

    value: Any
    trade_off: str


#: ``--quick``: every stage still runs, with caps that bring a run with the bundled
#: SmolLM2-135M on 2 CPU cores to a few minutes. Measured on the 50-conversation WildChat
#: sample: the 116 LLM turn labels took 5.5 minutes (1 with label_chars=400) and not one
#: of them was a label; the model describes the message instead of classifying it.
QUICK_PRESET: dict[str, PresetCap] = {
    "use_llm_labels": PresetCap(
        False, "preference turns and attributes come from the cue patterns only; the LLM "
               "labels that add recall (phrasings no cue knows) are not asked for"),
    "max_groups": PresetCap(
        2, "rubrics, GPA-CT answers and evaluation for the two largest eligible groups only "
           "(rules are still contrasted against every group)"),
}


def quick_overrides() -> dict[str, Any]:
    """The field values of :data:`QUICK_PRESET`."""
    return {name: cap.value for name, cap in QUICK_PRESET.items()}


def describe_quick() -> str:
    """One line per cap of the quick preset: ``field=value: what it trades away``."""
    return "\n".join(f"{name}={cap.value}: {cap.trade_off}" for name, cap in QUICK_PRESET.items())
