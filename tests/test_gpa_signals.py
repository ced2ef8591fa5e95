"""GPA cue patterns (stages 2-3): the instruction head, general phrasings, reporting."""

from __future__ import annotations

from gpa_fixtures import LONG_ANSWER, conv, write_log
from pluralign.gpa import GPAConfig, run_attributes, run_classify, run_ingest
from pluralign.gpa.attributes import cue_attributes
from pluralign.gpa.io import read_jsonl, stage_path
from pluralign.gpa.signals import cue_label

PASTED = "Once upon a time there was a story that went on for a long while. " * 5


def test_cues_only_read_the_instruction_head_of_a_message():
    assert len(PASTED) > 240
    # A cue word inside pasted text after the request is not a reaction ...
    assert cue_label("Fix the grammar of this text:\n" + PASTED + " Please continue.") == \
        ("none", None)
    # ... the same word in the request is, and the window is a setting.
    assert cue_label("Please continue.\n" + PASTED)[0] == "more"
    assert cue_label("Fix the grammar:\n" + PASTED + " continue", chars=10_000)[0] == "more"
    assert cue_attributes("Check this:\n" + PASTED + " in a table") == []
    assert cue_attributes("Put it in a table:\n" + PASTED) == [("format", "more")]


def test_go_on_counts_only_as_a_request_to_go_on():
    assert cue_label("go on")[0] == "more"
    assert cue_label("Ok, go on!")[0] == "more"
    assert cue_label("Write a story where Tom wants to go on holiday") == ("none", None)


def test_general_correction_rephrase_and_more_phrasings():
    labels = {message: cue_label(message)[0] for message in (
        "Hmm, you got it wrong again.",
        "I am not asking about cats, I asked about dogs.",
        "We are talking about trains here",
        "Please redo the table with correct totals.",
        "Can you come up with something a bit catchier?",
        "Give me a shorter version of the above",
        "Now say it in French please",
        "Please extend the list to 20 items",
        "Write a follow up where the team wins the final",
    )}
    assert list(labels.values()) == ["correction", "correction", "correction", "correction",
                                     "rephrase", "rephrase", "rephrase", "more", "more"]


def test_signals_without_an_attribute_are_counted_not_dropped(tmp_path):
    rows = [conv(f"r{i}", "R", f"Name a title for video {i}", "Title.",
                 "Can you come up with something a little catchy?", "Better title.")
            for i in range(3)]
    rows.append(conv("r3", "R", "Explain tides", LONG_ANSWER, "Too long, shorter please", "Ok."))
    config = GPAConfig(inputs=[str(write_log(tmp_path, rows))], work_dir=str(tmp_path / "w"),
                       use_llm_labels=False, heldout_fraction=0.0)
    run_ingest(config)
    assert run_classify(config, None)["labels"] == {"rephrase": 3, "less": 1}
    summary = run_attributes(config, None)
    assert summary["signals_without_attribute"] == 3
    assert summary["pairs"] == {"length:less": 1}
    assert summary["unmatched_examples"][0].startswith("r0:2 rephrase: Can you come up")
    assert [r["conversation_id"] for r in read_jsonl(stage_path(config.work_dir,
                                                                "attributes"))] == ["r3"]
