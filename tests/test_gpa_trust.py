"""Issue 22: a blind judge, judge-free held-out rubric validation, the unusable-judge rule."""

from __future__ import annotations

import re

import pytest
from scipy.stats.contingency import relative_risk

from data_llm_server import stub_backend
from gpa_fixtures import LONG_ANSWER
from gpa_llm_server import ChatScriptedServer
from pluralign.gpa.common import StepStats
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.evaluate import evaluation_markdown, judge_pairs, judge_sides, win_table
from pluralign.gpa.rubrics import rubric_markdown
from pluralign.gpa.trust import judge_is_bundled, judge_problems
from pluralign.gpa.validation import group_fit, lift_interval, validate_rubrics
from pluralign.llm import LLMConfig

RUBRIC_TEXT = "Keep answers short and to the point."


def _prefers_good(system: str, user: str) -> str:
    """A judge that reads the answers: it picks the one that says GOOD."""
    a, b = re.search(r"Response A:\n(.*)\n\nResponse B:\n(.*)\n\nWhich", user, re.S).groups()
    return "A" if "GOOD" in a else "B" if "GOOD" in b else "neither"


@pytest.fixture
def fair_judge():
    server = ChatScriptedServer(_prefers_good).start()
    yield stub_backend(server), server
    server.stop()


def test_blind_judge_never_sees_the_rubric_and_asks_both_orders(fair_judge):
    judge, server = fair_judge
    prompts = [{"prompt": "Explain tides", "conversation_id": "k0"},
               {"prompt": "Plan a trip", "conversation_id": "k1"}]
    responses = {"gpa_ct": ["GOOD tides", "bad trip"], "zero_shot": ["tides", "GOOD trip"],
                 "persona": ["GOOD too", None]}
    rows = judge_pairs("Kenya", prompts, responses, judge, GPAConfig(), StepStats())
    # 3 pairs with both answers (persona's None is skipped), each asked twice.
    assert len(rows) == 3 and len(server.bodies) == 6
    requests = [b["messages"][-1]["content"] for b in server.bodies]
    assert not any(RUBRIC_TEXT in r or "Kenya" in r or "guideline" in r.lower()
                   for r in requests)
    # Both orders: the method's answer is Response A as often as Response B.
    for answer, pairs in (("GOOD tides", 2), ("bad trip", 1)):
        shown = [r.index(answer) > r.index("Response B:") for r in requests if answer in r]
        assert sorted(shown) == [False] * pairs + [True] * pairs
    assert [(r["baseline"], r["prompt_index"], r["outcome"]) for r in rows] == [
        ("zero_shot", 0, "win"), ("zero_shot", 1, "loss"), ("persona", 0, "tie")]
    # Both persona and GPA-CT say GOOD: the judge falls back on position, a tie.
    assert [r["choices"] for r in rows] == [["A", "B"], ["B", "A"], ["A", "A"]]
    table = {r["baseline"]: r for r in win_table(rows)}
    assert (table["zero_shot"]["wins"], table["zero_shot"]["losses"]) == (1, 1)
    sides = judge_sides(rows)
    assert (sides["A"], sides["B"], sides["position_ties"]) == (4, 2, 1) and sides["usable"]


def test_a_judge_that_always_says_a_gives_ties_not_wins():
    server = ChatScriptedServer(lambda system, user: "A").start()
    try:
        rows = judge_pairs("G", [{"prompt": "p", "conversation_id": "c"}],
                           {"gpa_ct": ["x"], "zero_shot": ["y"], "persona": ["z"]},
                           stub_backend(server), GPAConfig(), StepStats())
    finally:
        server.stop()
    assert [r["outcome"] for r in rows] == ["tie", "tie"]
    assert [r["win_rate"] for r in win_table(rows)] == [None, None]


def test_lift_interval_is_scipys_katz_interval_with_a_zero_count_correction():
    lift = lift_interval(8, 10, 1, 10)
    reference = relative_risk(8, 10, 1, 10)
    interval = reference.confidence_interval(0.95)
    assert lift["lift"] == pytest.approx(8.0) and not lift["corrected"]
    assert (lift["low"], lift["high"]) == pytest.approx((interval.low, interval.high))
    assert lift["low"] == pytest.approx(1.2146, abs=1e-4)
    # No complaint after any following answer: scipy leaves the low end undefined; the
    # corrected ratio is (5.5/6) / (0.5/21) = 38.5, with a finite interval above 1.
    zero = lift_interval(5, 5, 0, 20)
    assert zero["corrected"] and zero["lift"] == pytest.approx(38.5) and zero["low"] > 1
    assert lift_interval(3, 4, 0, 0)["lift"] is None  # nothing followed the item
    with pytest.raises(ValueError, match="negatives <= totals"):
        lift_interval(5, 4, 0, 1)


def _heldout(cid: str, group: str, answer: str, reaction: str, split: str = "heldout"
             ) -> dict:
    turns = [("user", f"Question {cid}"), ("assistant", answer), ("user", reaction)]
    return {"conversation_id": cid, "group": group, "split": split,
            "messages": [{"turn": i, "role": r, "content": t}
                         for i, (r, t) in enumerate(turns)]}


def _log() -> list[dict]:
    """Held-out A: 8 of 10 long answers and 1 of 10 short ones draw "shorter" (lift 8).
    Held-out B: long and short answers draw it equally often (lift 1)."""
    rows = []
    for i in range(10):
        rows.append(_heldout(f"al{i}", "A", LONG_ANSWER, "Shorter please" if i < 8 else "Thanks"))
        rows.append(_heldout(f"as{i}", "A", "Short.", "Shorter please" if i < 1 else "Thanks"))
        rows.append(_heldout(f"bl{i}", "B", LONG_ANSWER, "Shorter please" if i < 5 else "Thanks"))
        rows.append(_heldout(f"bs{i}", "B", "Short.", "Shorter please" if i < 5 else "Thanks"))
        # Mined conversations contradict A's item: they must not count.
        rows.append(_heldout(f"am{i}", "A", "Short.", "Shorter please", split="mine"))
    return rows


def _item(item_id: str, attribute: str, direction: str) -> dict:
    return {"item_id": item_id, "attribute": attribute, "direction": direction,
            "text": f"{item_id} {attribute} {direction}", "rules": [f"{item_id}|rule"],
            "support": 3, "lift": 2.0}


def test_heldout_validation_finds_the_lift_built_into_the_log_and_marks_the_rubric():
    rubrics = {"A": {"items": [_item("A#1", "length", "less"), _item("A#2", "tone", "more")]},
               "B": {"items": [_item("B#1", "length", "less")]}}
    rules = [{"rule_id": f"{i}|rule", "evidence": [{"label": "less"}]}
             for i in ("A#1", "A#2", "B#1")]
    checks = validate_rubrics(rubrics, rules, _log(), cue_chars=240)
    own = checks["A#1"]["own"]
    assert (own["negative_violated"], own["violated"], own["negative_followed"],
            own["followed"]) == (8, 10, 1, 10)
    assert own["lift"] == pytest.approx(8.0) and own["low"] > 1
    assert checks["A#1"]["signals"] == ["less"] and checks["A#1"]["verdict"] == "replicates"
    assert checks["A#1"]["elsewhere"]["lift"] == pytest.approx(1.0)  # B's turns: no effect
    assert checks["B#1"]["own"]["lift"] == pytest.approx(1.0)
    assert checks["B#1"]["verdict"] == "does not replicate"
    assert checks["A#2"]["own"] is None and checks["A#2"]["verdict"].startswith("not measurable")
    # Both rubrics hold "shorter answers": on A's turns B's item explains as much as A's.
    fit = group_fit(rubrics, rules, _log(), cue_chars=240)
    assert (fit["A"]["own_items"], fit["A"]["other_items"]) == pytest.approx((8.0, 8.0))
    assert fit["A"]["belongs"] is False and fit["B"]["own_items"] == pytest.approx(1.0)
    for group, rubric in rubrics.items():
        rubric["heldout_fit"] = fit[group]
        for item in rubric["items"]:
            item["heldout"] = checks[item["item_id"]]
    markdown = rubric_markdown(rubrics, {})
    assert "8.00 (1) vs other groups' items 8.00 (1) on this group's held-out turns: does " \
           "not fit this group better" in markdown
    lines = {line.split("**")[1]: line for line in markdown.splitlines() if "**" in line}
    assert lines["A#1 length less"].startswith("- **A#1")
    assert "lift 8.00 [1.21, 52.69] (8/10 violating vs 1/10" in lines["A#1 length less"]
    assert lines["B#1 length less"].startswith("- [does not replicate on held-out conversa")
    assert lines["A#2 tone more"].startswith("- [not validated on held-out conversations]")


def test_bundled_or_one_sided_judges_are_unusable_and_the_report_says_so_first():
    assert judge_problems({"A": 9, "B": 1}, bundled=False) == []  # 90% is not more than 90%
    assert "one-sided: it answered A in 10 of 11" in judge_problems({"A": 10, "B": 1}, False)[0]
    assert "bundled smollm2-135m" in judge_problems({"A": 5, "B": 5}, bundled=True)[0]
    assert judge_problems({"A": 0, "B": 0}, False) == ["the judge decided no comparison"]
    assert judge_is_bundled(GPAConfig()) is True
    assert judge_is_bundled(GPAConfig(judge_base_url="http://judge/v1")) is False
    assert judge_is_bundled(GPAConfig(llm=LLMConfig(backend="openai", model="m"))) is False

    row = {"group": "A", "method": "gpa_ct", "baseline": "zero_shot", "wins": 12, "losses": 0,
           "ties": 0, "undecided": 0, "win_rate": 1.0, "low": 0.76, "high": 1.0}
    base = {"win_rates": [row], "adherence": {}, "retention": {}, "skipped": {}}
    bad = evaluation_markdown({**base, "judge": judge_sides(
        [{"choices": ["A", "B"], "outcome": "win"}] * 12, bundled=True)})
    assert bad.startswith("# GPA evaluation\n\n## What can be trusted")
    assert "Blind win rates: UNUSABLE, not results: the judge is the bundled" in bad
    assert "| A | gpa_ct | zero_shot | 12 | 0 | 0 | 0 | unusable |" in bad and "100%" not in bad
    rubrics = {"A": {"items": [{**_item("A#1", "length", "less"),
                                "heldout": {"verdict": "does not replicate", "own": None}},
                               _item("A#2", "tone", "more")]}}
    good = evaluation_markdown({**base, "judge": judge_sides(
        [{"choices": ["A", "B"], "outcome": "win"}] * 12)}, rubrics)
    assert "| 100% [76%, 100%] |" in good and "UNUSABLE" not in good
    assert "(judge-free): 0 of 2 replicate, 1 do not, 1 not validated" in good


def _hh_file(tmp_path, rows: list[dict]) -> str:
    import gzip
    import json

    path = tmp_path / "hh_test.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def test_retention_reads_hh_transcripts_and_gives_the_change_an_interval(tmp_path):
    import torch

    from pluralign.gpa.retention import load_retention_pairs, retention_check
    from pluralign.models import load_model

    rows = [{"chosen": f"\n\nHuman: Name fruit {i}\n\nAssistant: Which kind?\n\nHuman: "
                       f"Red\n\nAssistant: An apple, number {i}."} for i in range(5)]
    pairs = load_retention_pairs(_hh_file(tmp_path, rows), limit=3, seed=0)
    assert len(pairs) == 3 and all(a.startswith("An apple, number") for _, a in pairs)
    # The dialogue before the last assistant turn is the prompt.
    assert all(p.startswith("Human: Name fruit") and p.endswith("Which kind?\n\nHuman: Red")
               for p, _ in pairs)
    with pytest.raises(ValueError, match="row 0 has neither prompt/answer"):
        load_retention_pairs(_hh_file(tmp_path, [{"chosen": "no turns"}]), 1, 0)

    base, tuned = load_model("tiny"), load_model("tiny")
    same = retention_check(base, tuned, 0.1, pairs, "hh", seed=0)
    assert same["relative_change"] == 0 and (same["change_low"], same["change_high"]) == (0, 0)
    assert same["passed"] and same["instructions"] == 3 and same["source"] == "hh"
    with torch.no_grad():
        for weight in tuned[0].parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    moved = retention_check(base, tuned, 0.1, pairs, "hh", seed=0)
    assert moved["change_low"] < moved["change_high"]
    assert moved["change_low"] <= moved["relative_change"] <= moved["change_high"]
