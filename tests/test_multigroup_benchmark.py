"""Issue 20, item 4: the pure parts of benchmarks/multigroup.py (population baseline, JSD
between groups, tables), on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pluralign.data.records import Belief, GroupPreferenceExample

BELIEFS = (Belief(1, "No"), Belief(2, "Yes"))
#: Jensen-Shannon distance (natural log) between (1, 0) and (0.5, 0.5), by hand:
#: M = (0.75, 0.25); KL(P||M) = ln(4/3); KL(Q||M) = 0.5 ln(2/3) + 0.5 ln 2.
HALF_JSD = math.sqrt(0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2)))
#: Between (1, 0) and (0, 1): M = (0.5, 0.5), both KLs ln 2.
FULL_JSD = math.sqrt(math.log(2))


@pytest.fixture
def bench(benchmark_module):
    return benchmark_module("multigroup")


def _record(group: str, question: str, target: tuple[float, ...],
            beliefs: tuple[Belief, ...] = BELIEFS) -> GroupPreferenceExample:
    return GroupPreferenceExample(
        prompt=f"{question}?", beliefs=beliefs, target_distribution=target,
        chosen_belief=beliefs[0].class_id, rejected_belief=beliefs[1].class_id,
        chosen_response="a", rejected_response="b", group=group, question_id=question)


def _row(group: str, question: str, target: list[float], predicted: list[float] | None,
         prompt: str | None = None) -> dict:
    """A predictions.jsonl row, as pluralign eval writes it (the fields the benchmark reads)."""
    return {"model": "m", "prompt": prompt or f"{question}?", "group": group,
            "question_id": question, "beliefs": [{"class_id": 1, "description": "No"},
                                                 {"class_id": 2, "description": "Yes"}],
            "target": target, "predicted": predicted, "jsd": None}


def test_population_baseline_is_the_training_groups_mean_target(bench):
    records = [_record("A", "q1", (1.0, 0.0)), _record("A", "q1", (1.0, 0.0)),  # 2 records, 1 vote
               _record("B", "q1", (0.0, 1.0)), _record("C", "q1", (0.2, 0.8)),  # C: not training
               _record("A", "q2", (0.6, 0.4)),
               _record("B", "q3", (0.3, 0.3, 0.4), (*BELIEFS, Belief(3, "Maybe")))]
    population = bench.population_targets(records, ["A", "B"])
    assert population[("q1", (1, 2))] == pytest.approx([0.5, 0.5])
    assert population[("q2", (1, 2))] == pytest.approx([0.6, 0.4])
    assert population[("q3", (1, 2, 3))] == pytest.approx([0.3, 0.3, 0.4])
    assert len(population) == 3
    rows = [_row("U", "q1", [0.5, 0.5], None), _row("V", "q1", [1.0, 0.0], None),
            _row("V", "q2", [0.6, 0.4], None),
            _row("V", "q9", [1.0, 0.0], None)]  # no training group answered q9: left out
    by_group = bench.population_jsd(rows, population)
    assert by_group["U"] == pytest.approx(0.0, abs=1e-7)
    assert by_group["V"] == pytest.approx(HALF_JSD / 2, abs=1e-6)  # (HALF_JSD + 0) / 2
    assert set(by_group) == {"U", "V"}


def test_jsd_between_groups_pairs_the_same_prompt_of_two_groups(bench):
    rows = [_row("A", "q1", [1.0, 0.0], [0.5, 0.5]), _row("B", "q1", [0.5, 0.5], [0.5, 0.5]),
            _row("C", "q1", [0.0, 1.0], [0.0, 1.0]),
            _row("A", "q2", [1.0, 0.0], [1.0, 0.0]), _row("B", "q2", [0.0, 1.0], [0.0, 1.0]),
            _row("A", "q1", [1.0, 0.0], [1.0, 0.0], prompt="Other wording of q1?"),  # alone
            _row("C", "q2", [0.5, 0.5], None)]  # not read: no pair
    pairs = bench.between_groups(rows)
    assert list(pairs) == [("A", "B"), ("A", "C"), ("B", "C")]
    assert pairs[("A", "B")]["targets"] == pytest.approx([HALF_JSD, FULL_JSD])
    assert pairs[("A", "B")]["predictions"] == pytest.approx([0.0, FULL_JSD], abs=1e-7)
    assert pairs[("A", "C")]["targets"] == pytest.approx([FULL_JSD])
    assert pairs[("A", "C")]["predictions"] == pytest.approx([HALF_JSD])
    # One model's rows and one model per group's rows go in alike; the table's numbers.
    result = bench.part_c_result({"framings": {"one": rows, "six": rows[:2]},
                                  "questions": {"one": rows[3:5], "six": []}})
    ab = result["framings"][("A", "B")]
    assert ab["prompts"] == 2 and ab["targets"] == pytest.approx((HALF_JSD + FULL_JSD) / 2)
    assert ab["one"] == pytest.approx(FULL_JSD / 2) and ab["six"] == pytest.approx(0.0)
    assert math.isnan(result["framings"][("A", "C")]["six"])  # the six did not read A/C
    assert result["questions"][("A", "B")]["one"] == pytest.approx(FULL_JSD)
    # r over every prompt pair of every group pair: (A,B) x2, (A,C), (B,C).
    expected = np.corrcoef([HALF_JSD, FULL_JSD, FULL_JSD, HALF_JSD],
                           [0.0, FULL_JSD, HALF_JSD, HALF_JSD])[0, 1]
    assert bench.correlation(result["framings"]) == pytest.approx(expected)
    assert math.isnan(bench.correlation(result["questions"]))  # one prompt pair: no r


def test_table_a_has_a_row_per_group_and_the_mean_over_groups(bench):
    framings = {"United States": {"prompts": 4, "one": 0.1, "six": 0.2, "uniform": 0.3},
                "Japan": {"prompts": 2, "one": 0.3, "six": float("nan"), "uniform": 0.5}}
    questions = {"United States": {"prompts": 3, "one": 0.2, "six": 0.2, "uniform": 0.4},
                 "Japan": {"prompts": 1, "one": 0.4, "six": 0.1, "uniform": 0.2}}
    lines = bench.table_a({"framings": framings, "questions": questions})
    assert lines[0] == ("| group | framings: prompts | one model | six models | uniform "
                        "| questions: prompts | one model | six models | uniform |")
    assert lines[1].count("---") == 9
    assert lines[2] == "| US | 4 | 0.100 | 0.200 | 0.300 | 3 | 0.200 | 0.200 | 0.400 |"
    assert lines[3] == "| JP | 2 | 0.300 | n/a | 0.500 | 1 | 0.400 | 0.100 | 0.200 |"
    # The mean weighs each group once; a group's missing value is left out of it.
    assert lines[4] == "| mean | 6 | 0.200 | 0.200 | 0.400 | 4 | 0.300 | 0.150 | 0.300 |"
    assert len(lines) == 5


def test_tables_b_and_c_and_the_section(bench):
    b = {"Pakistan": {"prompts": 6, "no context": 0.3, "context": 0.2, "uniform": 0.4,
                      "population": 0.25},
         "Japan": {"prompts": 4, "no context": 0.1, "context": 0.2, "uniform": 0.2,
                   "population": 0.15}}
    lines = bench.table_b(b, context=3)
    assert lines[0].startswith("| unseen group | prompts | no context | group context (k=3) |")
    assert lines[2:] == ["| PK | 6 | 0.300 | 0.200 | 0.400 | 0.250 |",
                         "| JP | 4 | 0.100 | 0.200 | 0.200 | 0.150 |",
                         "| mean | 10 | 0.200 | 0.200 | 0.300 | 0.200 |"]
    pair = {"prompts": 2, "targets": 0.4, "one": 0.3, "six": 0.2,
            "per_prompt": ([0.3, 0.5], [0.2, 0.4])}
    c = {"framings": {("Japan", "United States"): pair},
         "questions": {("Germany", "Mexico"): {**pair, "prompts": 1, "targets": 0.2}}}
    lines = bench.table_c(c)
    assert lines[0].startswith("| groups | framings: prompts | targets | one model |")
    assert lines[2:] == ["| DE / MX | 0 | n/a | n/a | n/a | 1 | 0.200 | 0.300 | 0.200 |",
                         "| JP / US | 2 | 0.400 | 0.300 | 0.200 | 0 | n/a | n/a | n/a |",
                         "| mean | 2 | 0.400 | 0.300 | 0.200 | 1 | 0.200 | 0.300 | 0.200 |"]
    a = {"framings": {}, "questions": {}, "storage": {"one": 2**21, "six": 6 * 2**21}}
    args = bench.parse_args(["--quick", "--seed", "3", "--threads", "1"])
    text = bench.section({"a": a, "b": b, "c": c}, args, {"data": 1.0, "total": 2.5})
    assert text.startswith("## One model for many groups (`benchmarks/multigroup.py`)")
    for heading in ("### (a)", "### (b) Groups never trained on (PK, JP)", "### (c)"):
        assert heading in text
    assert "one model 2.0 MB (SFT + GDPO adapter), six models 12.0 MB" in text
    assert "Seed 3. Run time in minutes (`--threads 1`): data 1.0, total 2.5." in text
    assert "(--quick)." in text and "Pearson r" in text


def test_rows_are_chosen_shared_first_and_steps_split_six_ways(bench):
    rows = [{"question": "solo", "group": "A"}, {"question": "both", "group": "A"},
            {"question": "both", "group": "B"}, {"question": "other", "group": "B"},
            {"question": "both", "group": "Z"}]
    chosen = bench.select_rows(rows, {"A", "B"}, per_group=1)
    assert [(r["question"], r["group"]) for r in chosen] == [("both", "A"), ("both", "B")]
    assert len(bench.select_rows(rows, {"A", "B"}, per_group=5)) == 4
    one, single = bench.scaled(bench.RECIPE, 36), bench.scaled(bench.RECIPE, 36, parts=6)
    assert (one.sft_steps, one.preference_steps, single.preference_steps) == (36, 36, 6)
    # Validated as often (3 times a stage) and warmed up for the same share of the steps.
    assert one.eval_every == 12 and single.eval_every == 2
    assert (one.warmup_steps, single.warmup_steps) == (3, 1)
