"""Group Preference Alignment (GPA): rubrics from conversation logs, GPA-CT and GPA-FT.

Stages (each writes its own file into ``GPAConfig.work_dir``)::

    ingest -> classify -> attributes -> rules -> rubrics -> context (GPA-CT)
           -> finetune (GPA-FT) -> evaluate

``run_data_size`` (``pluralign gpa data-size``) rebuilds one group's rubric, GPA-CT and
GPA-FT from shares of its mined conversations and measures them against each other.

>>> from pluralign.gpa import GPAConfig, run_pipeline  # doctest: +SKIP
>>> run_pipeline(GPAConfig(inputs=["logs.json"], work_dir="gpa/run"))  # doctest: +SKIP
"""

from __future__ import annotations

from pluralign.gpa.attributes import extract_attributes, measure, run_attributes
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.context import answer_with_rubric, run_context, select_items
from pluralign.gpa.data_size import run_data_size
from pluralign.gpa.evaluate import run_evaluate
from pluralign.gpa.finetune import pair_record, run_finetune, synthesize_pairs
from pluralign.gpa.ingest import IngestProblem, IngestResult, ingest, run_ingest
from pluralign.gpa.io import STAGE_FILES, StageInputError
from pluralign.gpa.pipeline import STAGES, run_pipeline
from pluralign.gpa.rubrics import generate_rubrics, rubric_markdown, run_rubrics
from pluralign.gpa.rules import mine_rules, run_rules
from pluralign.gpa.signals import classify_turns, run_classify

__all__ = [
    "STAGES",
    "STAGE_FILES",
    "GPAConfig",
    "IngestProblem",
    "IngestResult",
    "StageInputError",
    "answer_with_rubric",
    "classify_turns",
    "extract_attributes",
    "generate_rubrics",
    "ingest",
    "measure",
    "mine_rules",
    "pair_record",
    "rubric_markdown",
    "run_attributes",
    "run_classify",
    "run_context",
    "run_data_size",
    "run_evaluate",
    "run_finetune",
    "run_ingest",
    "run_pipeline",
    "run_rubrics",
    "run_rules",
    "select_items",
    "synthesize_pairs",
]
