"""GPA stage 8 pieces: verdict parsing, adherence checks, the judge's side bias."""

from __future__ import annotations

import math

import pytest

from data_llm_server import stub_backend
from gpa_llm_server import ChatScriptedServer
from pluralign.gpa.common import StepStats
from pluralign.gpa.evaluate import (
    adherence,
    evaluation_markdown,
    judge_sides,
    judged_verdicts,
    parse_choice,
    parse_yes_no,
)

RUBRIC = {"items": [
    {"item_id": "G#1", "attribute": "length", "direction": "less",
     "text": "Keep answers short and to the point."},
    {"item_id": "G#2", "attribute": "tone", "direction": "more",
     "text": "Use a warm, polite and friendly tone."},
]}


def test_verdict_parsing_reads_lead_ins_and_refuses_to_guess():
    assert [parse_choice(t) for t in ("Response B", "The answer is b", "b", "A or B",
                                      "The Rails was")] == ["B", "B", None, None, None]
    assert [parse_yes_no(t) for t in ("Yes.", "The answer is no.", "No, the response does not",
                                      "The response does not follow the", "The Rails was",
                                      None)] == [True, False, False, False, None, None]


@pytest.fixture
def warm_judge():
    # Judges tone only: "yes" when the answer says "please", else an unparseable ramble.
    server = ChatScriptedServer(lambda system, user: "Yes." if "please" in user.split(
        "Question:")[0] else "The story continues").start()
    yield stub_backend(server), server
    server.stop()


def test_adherence_measures_what_it_can_judges_the_rest_and_keeps_every_check(warm_judge):
    judge, server = warm_judge
    responses = {"gpa_ct": ["Short, please.", None], "zero_shot": ["word " * 80, "Ok."]}
    summary, checks = adherence("G", RUBRIC, responses, judge, StepStats())
    # gpa_ct: 1 answer (the None is skipped) x 2 items; zero_shot: 2 answers x 2 items.
    assert len(checks) == 6 and len(server.bodies) == 3  # only the tone items are judged
    ct = summary["gpa_ct"]
    assert (ct["adherence"], ct["checks"], ct["measured"], ct["undecided"]) == (1.0, 2, 1, 0)
    zero = summary["zero_shot"]
    # length: 80 words fails, "Ok." passes; tone: both judged answers are undecided.
    assert (zero["adherence"], zero["checks"], zero["undecided"]) == (0.5, 2, 2)
    # Wilson intervals: never zero-width on a handful of checks.
    assert 0 < zero["low"] < 0.5 < zero["high"] < 1 and ct["low"] < 1
    judged = [c for c in checks if c["how"] == "judged"]
    assert {c["raw"] for c in judged} == {"Yes.", "The story continues"}
    assert all(set(c) == {"group", "method", "prompt_index", "item_id", "passed", "raw", "how"}
               for c in checks)


def test_no_checks_give_no_number():
    summary, checks = adherence("G", {"items": []}, {"gpa_ct": ["x"]}, None, StepStats())
    assert checks == [] and math.isnan(summary["gpa_ct"]["adherence"])


def test_a_judge_that_always_picks_one_side_is_flagged():
    # Both orders of every pair are asked: a judge that always says A only makes ties.
    biased = [{"choices": ["A", "A"], "outcome": "tie"}] * 4 + [
        {"choices": ["A", None], "outcome": "undecided"}]
    sides = judge_sides(biased)
    assert (sides["A"], sides["B"], sides["undecided"], sides["position_ties"]) == (9, 0, 1, 4)
    assert "every pair it decided is a tie" in sides["position_bias_note"]
    assert sides["usable"] is False and "one-sided" in sides["problems"][0]
    balanced = judge_sides([{"choices": ["A", "B"], "outcome": "win"}] * 3)
    assert balanced["position_bias_note"] is None and balanced["usable"] is True
    markdown = evaluation_markdown({"win_rates": [], "judge": sides, "adherence": {},
                                    "retention": {}, "skipped": {"X": "no held-out prompts"}})
    assert "Judge verdicts: A 9, B 0, undecided 1." in markdown
    assert "Caution: the judge answered A in 9 of 9 decided verdicts" in markdown
    assert "- X: no held-out prompts" in markdown


def test_a_judge_that_always_says_no_is_flagged():
    checks = [{"how": "judged", "passed": False}] * 5 + [{"how": "measured", "passed": True},
                                                          {"how": "judged", "passed": None}]
    verdicts = judged_verdicts(checks)
    assert (verdicts["yes"], verdicts["no"], verdicts["undecided"]) == (0, 5, 1)
    assert verdicts["note"].startswith("the judge answered no in 5 of 5 decided adherence")
    markdown = evaluation_markdown({"win_rates": [], "adherence": {}, "retention": {},
                                    "skipped": {}, "judged_adherence": verdicts})
    assert "yes 0, no 5, undecided 1" in markdown and "Caution: the judge answered no" in markdown
