"""Prompt framing of training records."""

from __future__ import annotations

import pytest

from pluralign.data.toy import conflicting_opinions
from pluralign.train.framing import PROMPT_FRAMES, frame_prompts


def test_frames_wrap_the_prompt_and_keep_everything_else():
    records = conflicting_opinions(3, 20, seed=0)
    framed = frame_prompts(records, seed=3)
    assert len(framed) == len(records)
    used = set()
    for before, after in zip(records, framed, strict=True):
        frame = next(f for f in PROMPT_FRAMES if f.format(prompt=before.prompt) == after.prompt)
        used.add(frame)
        assert after.target_distribution == before.target_distribution
        assert (after.chosen_response, after.rejected_response) == (
            before.chosen_response, before.rejected_response)
        assert after.question_id == before.question_id
    assert used == set(PROMPT_FRAMES)  # 60 draws over 6 frames reach every one
    assert [r.prompt for r in frame_prompts(records, seed=3)] == [r.prompt for r in framed]
    assert [r.prompt for r in frame_prompts(records, seed=4)] != [r.prompt for r in framed]


def test_a_frame_without_the_prompt_slot_is_refused():
    with pytest.raises(ValueError, match=r"\{prompt\}"):
        frame_prompts(conflicting_opinions(1, 1), seed=0, frames=["Question:"])
