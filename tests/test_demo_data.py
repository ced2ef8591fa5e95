"""The bundled demo opinion set: the file, the pairs drawn from it, its split and CLI."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pluralign.cli.demo_data import demo_data_command
from pluralign.cli.options import CONFIG_CONTEXT
from pluralign.data import read_examples
from pluralign.data.demo import (
    DEMO_GROUPS,
    DemoConfig,
    DemoDataError,
    build_demo,
    demo_path,
    demo_questions,
    demo_records,
    load_demo_questions,
)
from pluralign.registry import BUILDERS

# Words that name each class unambiguously in the demo's own scales.
CLASS_WORDS = {
    "Strongly disagree": r"strongly disagree|completely disagree",
    "Somewhat disagree": r"disagree",
    "Neither agree nor disagree": r"neither agree nor disagree|neutral",
    "Somewhat agree": r"agree",
    "Strongly agree": r"strongly agree|agree .*strongly",
    "Strongly oppose": r"strong.*(oppo|against)",
    "Somewhat oppose": r"oppose|against",
    "Somewhat support": r"support|in favour",
    "Strongly support": r"strong.*(support|in favour)",
    "Not a problem at all": r"problem at all|no problem|isn.t a problem",
    "A small problem": r"small problem|minor problem",
    "A moderately big problem": r"moderately big problem|fairly big problem",
    "A very big problem": r"very big|huge problem",
    "Not important": r"not important",
    "Somewhat important": r"somewhat important",
    "Very important": r"very important",
    "Will get worse": r"get worse",
    "Will stay about the same": r"stay (about|roughly) the same",
    "Will get better": r"get better",
    "No": r"^no\b|answer is no",
    "Yes": r"^yes\b|answer is yes",
}


def test_file_loads_with_40_to_60_questions_and_every_group():
    questions = demo_questions()
    assert demo_path().is_file()
    assert 40 <= len(questions) <= 60
    assert len({q.id for q in questions}) == len(questions)
    assert len({q.question for q in questions}) == len(questions)
    for q in questions:
        assert set(q.distributions) == set(DEMO_GROUPS)
        assert {b.class_id for b in q.beliefs} <= {1, 2, 3, 4, 5}


def test_distributions_sum_to_one_and_responses_cover_every_belief():
    for q in demo_questions():
        for probs in q.distributions.values():
            assert len(probs) == len(q.beliefs)
            assert math.isclose(sum(probs), 1.0, abs_tol=1e-9)
            assert all(p > 0 for p in probs)
        assert len(q.responses) == len(q.beliefs)
        assert len(set(q.responses)) == len(q.responses)
        for response in q.responses:
            assert 0 < len(response.split()) <= 25


def test_responses_state_their_class():
    for q in demo_questions():
        for belief, response in zip(q.beliefs, q.responses, strict=True):
            pattern = CLASS_WORDS[belief.description]
            assert re.search(pattern, response, re.IGNORECASE), (belief, response)


def test_distributions_are_varied_and_groups_differ():
    questions = demo_questions()
    for group in DEMO_GROUPS:
        tops = [max(q.distributions[group]) for q in questions]
        assert sum(t >= 0.6 for t in tops) >= 8, group  # clear majorities
        near_uniform = [q for q in questions
                        if max(q.distributions[group]) - min(q.distributions[group]) < 0.2]
        assert len(near_uniform) >= 8, group
        polarised = [q for q in questions if len(q.beliefs) > 2
                     and min(q.distributions[group][0], q.distributions[group][-1]) > 0.3]
        assert len(polarised) >= 8, group
    for q in questions:
        a, b, c = (q.distributions[g] for g in DEMO_GROUPS)
        assert a != b and b != c and a != c


def test_pairs_follow_p_star():
    records = demo_records(["Southmere"], pairs_per_question=2000, seed=3)
    by_question: dict[str, list] = {}
    for r in records:
        by_question.setdefault(r.question_id, []).append(r)
    for qid, rows in list(by_question.items())[:12]:
        chosen = Counter(r.chosen_belief for r in rows)
        for belief, p in zip(rows[0].class_ids, rows[0].target_distribution, strict=True):
            assert abs(chosen[belief] / len(rows) - p) < 0.04, (qid, belief)
        assert all(r.chosen_belief != r.rejected_belief for r in rows)
    q = demo_questions()[0]  # 5 beliefs: rejected uniform over the other 4
    rows = by_question[q.id]
    rejected = Counter(r.rejected_belief for r in rows if r.chosen_belief == 1)
    assert all(abs(n / sum(rejected.values()) - 0.25) < 0.06 for n in rejected.values())


def test_records_carry_the_matching_response_and_are_deterministic():
    records = demo_records(pairs_per_question=4, seed=1)
    assert len(records) == len(demo_questions()) * len(DEMO_GROUPS) * 4
    questions = {q.id: q for q in demo_questions()}
    for r in records[:50]:
        q = questions[r.question_id]
        assert r.chosen_response == q.responses[r.belief_index(r.chosen_belief)]
        assert r.prompt in (q.question, q.paraphrase)
    assert [r.to_dict() for r in records] == [
        r.to_dict() for r in demo_records(pairs_per_question=4, seed=1)]
    direct = demo_records(["Eastholm"], pairs_per_question=2, styles=("direct",))
    assert {r.style for r in direct} == {"direct"}


def test_split_by_question_has_no_overlap():
    parts = {s: demo_records(pairs_per_question=3, split=s, seed=7)
             for s in ("train", "eval", "test")}
    ids = {s: {r.question_id for r in rows} for s, rows in parts.items()}
    assert all(ids.values())
    assert not ids["train"] & ids["eval"] and not ids["train"] & ids["test"]
    assert not ids["eval"] & ids["test"]
    assert sum(len(v) for v in ids.values()) == len(demo_questions())
    # every group of a question lands in the same split
    for rows in parts.values():
        groups = Counter(r.question_id for r in rows)
        assert set(groups.values()) == {3 * len(DEMO_GROUPS)}


def test_bad_arguments_and_bad_file(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown demo groups"):
        demo_records(["Atlantis"])
    with pytest.raises(ValueError, match="split"):
        demo_records(split="validation")
    line = json.loads(demo_path().read_text(encoding="utf-8").splitlines()[0])
    line["distributions"]["Northvale"] = [0.5] * len(line["beliefs"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(DemoDataError, match=r"bad.jsonl:1: field 'distributions'"):
        load_demo_questions(bad)


def test_builder_is_registered():
    assert BUILDERS.get("demo") is build_demo
    result = build_demo(DemoConfig(groups=["Northvale"], pairs_per_question=2))
    assert result.total == 2 * len(demo_questions())
    assert result.report.counts["pairs"] == result.total


def test_cli_command_writes_splits_and_card(tmp_path: Path):
    app = typer.Typer()
    app.command(context_settings=CONFIG_CONTEXT)(demo_data_command)
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["--out", str(out), "-g", "Northvale", "-g", "Eastholm",
                                      "--pairs-per-question", "4", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    total = 0
    for split in ("train", "eval", "test"):
        rows = read_examples(out / f"{split}.jsonl")
        assert rows and {r.group for r in rows} <= {"Northvale", "Eastholm"}
        total += len(rows)
    assert total == len(demo_questions()) * 2 * 4
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "by question" in card and "Northvale" in card
    bad = CliRunner().invoke(app, ["--out", str(out), "-g", "Atlantis"])
    assert bad.exit_code == 2
