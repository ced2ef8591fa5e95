"""Data builders: GlobalOpinionQA, movie reviews, the paper's released sets, belief mining.

Each builder is a function registered in :data:`pluralign.registry.BUILDERS`
that takes its config (and, where an LLM writes text, a backend) and returns
a :class:`BuildResult` (records by split and a :class:`BuildReport` of every
count); :func:`save_build` writes the JSONL splits and the dataset card.
"""

from __future__ import annotations

from pluralign.data.builders.cards import BuildReport, BuildResult, save_build, write_card
from pluralign.data.builders.checks import ValidationResult, dataset_stats, validate_file
from pluralign.data.builders.mining import MiningConfig, build_mining
from pluralign.data.builders.mmoqa import MmoqaConfig, build_mmoqa, convert_row
from pluralign.data.builders.opinions import (
    OpinionsConfig,
    build_opinions,
    draw_pairs,
    load_opinion_rows,
    parse_options,
    parse_selections,
)
from pluralign.data.builders.option_rules import build_option_map, classify_option, load_option_map
from pluralign.data.builders.reviews import ReviewsConfig, build_reviews
from pluralign.data.builders.splits import split_examples, write_splits
from pluralign.data.builders.writers import RESPONSE_WRITERS, ResponseWriter

__all__ = [
    "RESPONSE_WRITERS",
    "BuildReport",
    "BuildResult",
    "MiningConfig",
    "MmoqaConfig",
    "OpinionsConfig",
    "ResponseWriter",
    "ReviewsConfig",
    "ValidationResult",
    "build_mining",
    "build_mmoqa",
    "build_opinions",
    "build_option_map",
    "build_reviews",
    "classify_option",
    "convert_row",
    "dataset_stats",
    "draw_pairs",
    "load_opinion_rows",
    "load_option_map",
    "parse_options",
    "parse_selections",
    "save_build",
    "split_examples",
    "validate_file",
    "write_card",
    "write_splits",
]
