"""Prompt framing: training prompts wrapped in a few fixed, generic frames.

A model trained on one wording per question learns to read the belief
distribution off that wording (a template it has seen with many questions
maps to that template's usual answer shape) instead of off the question.
Wrapping each training record's prompt in one of a few generic frames, drawn
with a seed, shows every question in several surroundings, so the reading
follows the question. The frames are pluralign's own and generic; they are
applied to training records of every method alike; validation and evaluation
prompts are never touched.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pluralign.data.records import GroupPreferenceExample

#: The frames; the first keeps the prompt as it is.
PROMPT_FRAMES: tuple[str, ...] = (
    "{prompt}",
    "Question: {prompt}",
    "{prompt} Please answer briefly.",
    "Tell me where you stand. {prompt}",
    "A short survey item follows. {prompt}",
    "{prompt} Answer with your own view.",
)


def frame_prompts(records: Sequence[GroupPreferenceExample], seed: int,
                  frames: Sequence[str] = PROMPT_FRAMES) -> list[GroupPreferenceExample]:
    """Each record with its prompt wrapped in a frame drawn uniformly (seeded).

    Both responses of a record answer the same framed prompt, and its target
    distribution is unchanged: a frame does not change what is asked.
    """
    if not frames or any("{prompt}" not in frame for frame in frames):
        raise ValueError("every prompt frame must contain {prompt}")
    rng = random.Random(seed)
    return [dataclasses.replace(r, prompt=rng.choice(frames).format(prompt=r.prompt))
            for r in records]
