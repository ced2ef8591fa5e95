"""The GDPO paper's subsets of pairs (majority / lowest minority / others): defined on
hand-built records, carried to the trainers, logged during training, drawn in the report."""

from __future__ import annotations

import math

import pytest
import torch

from pluralign.beliefs.margin_groups import split_by_margin_group
from pluralign.data.records import (
    MARGIN_GROUPS,
    Belief,
    GroupPreferenceExample,
    is_majority_chosen,
    margin_group,
    write_examples,
)
from pluralign.eval import report
from pluralign.eval.evaluate import ModelEvaluation
from pluralign.eval.margins import MarginsResult, _summaries

STANCES = (Belief(1, "Strongly oppose"), Belief(2, "Somewhat oppose"),
           Belief(4, "Somewhat support"), Belief(5, "Strongly support"))


def record(probs: tuple[float, ...], chosen: int, prompt: str = "Tea or coffee?"
           ) -> GroupPreferenceExample:
    beliefs = STANCES[: len(probs)]
    rejected = next(b.class_id for b in beliefs if b.class_id != chosen)
    return GroupPreferenceExample(
        prompt=prompt, beliefs=beliefs, target_distribution=probs, chosen_belief=chosen,
        rejected_belief=rejected, chosen_response=f"I say {chosen}.",
        rejected_response=f"I say {rejected}.", group="Testland")


# ------------------------------------------------------------------ definition


@pytest.mark.parametrize(("probs", "expected"), [
    # Distinct shares: highest, lowest, the two between.
    ((0.1, 0.2, 0.3, 0.4), {1: "lowest_minority", 2: "others", 4: "others", 5: "majority"}),
    # Ties for the highest share are all majority, ties for the lowest all lowest minority.
    ((0.4, 0.4, 0.1, 0.1), {1: "majority", 2: "majority", 4: "lowest_minority",
                            5: "lowest_minority"}),
    # A uniform p*: the highest share is also the lowest; majority wins.
    ((0.25, 0.25, 0.25, 0.25), {1: "majority", 2: "majority", 4: "majority", 5: "majority"}),
    # Two beliefs: no "others".
    ((0.7, 0.3), {1: "majority", 2: "lowest_minority"}),
    # A tie in the middle stays "others".
    ((0.5, 0.2, 0.2, 0.1), {1: "majority", 2: "others", 4: "others", 5: "lowest_minority"}),
])
def test_margin_group_of_hand_built_records(probs, expected):
    got = {c: margin_group(record(probs, c)) for c in expected}
    assert got == expected
    for class_id, group in got.items():  # the majority group is is_majority_chosen
        assert is_majority_chosen(record(probs, class_id)) == (group == "majority")


def test_margin_groups_are_the_papers_three_in_order():
    assert MARGIN_GROUPS == ("majority", "lowest_minority", "others")


def test_split_by_margin_group_keeps_minority_as_the_union():
    values = torch.tensor([1.0, -2.0, 0.5, -0.25, 3.0])
    groups = torch.tensor([0, 1, 2, 2, 0])
    split = split_by_margin_group(values, groups)
    assert split == {"majority": [1.0, 3.0], "lowest_minority": [-2.0],
                     "others": [0.5, -0.25], "minority": [-2.0, 0.5, -0.25]}


def test_eval_summaries_split_three_ways_plus_the_union():
    margins = torch.tensor([1.0, 3.0, -2.0, -4.0, 0.5])
    groups = ["majority", "majority", "lowest_minority", "lowest_minority", "others"]
    summary = _summaries(margins, groups, seed=0)
    assert {k: (v.n, v.value) for k, v in summary.items()} == {
        "all": (5, pytest.approx(-0.3)), "majority": (2, 2.0), "lowest_minority": (2, -3.0),
        "others": (1, 0.5), "minority": (3, pytest.approx(-5.5 / 3))}
    assert summary["lowest_minority"].name == "margins_lowest_minority"


# ------------------------------------------------------------------ training


def test_preference_rows_carry_the_margin_group_code(tiny_lm):
    from pluralign.beliefs.formats import OPINION_FORMAT
    from pluralign.train.dataset import preference_rows

    records = [record((0.1, 0.2, 0.3, 0.4), c) for c in (5, 1, 2)]
    rows = preference_rows(records, tiny_lm[1], OPINION_FORMAT, pairing="gdpo")
    assert [r["margin_group"] for r in rows] == [0, 1, 2]
    assert "is_majority" not in rows[0]


def eval_records() -> list[GroupPreferenceExample]:
    """Two questions, each with a majority, a lowest-minority and an 'others' pair."""
    out = []
    for prompt in ("Tea or coffee?", "Cats or dogs?"):
        out += [record((0.1, 0.2, 0.3, 0.4), c, prompt) for c in (5, 1, 2, 4)]
    return out


@pytest.mark.parametrize(("method", "prefix"), [("gdpo", "eval_rewards/margins_"),
                                                ("kto", "eval_rewards/desirable_")])
def test_training_logs_the_three_groups(method, prefix, tmp_path):
    from pluralign.models import ModelConfig
    from pluralign.train.api import train
    from pluralign.train.config import TrainConfig
    from pluralign.train.metrics import read_metrics

    write_examples(tmp_path / "train.jsonl", eval_records())
    write_examples(tmp_path / "eval.jsonl", eval_records())
    result = train(TrainConfig(
        method=method, train_file=str(tmp_path / "train.jsonl"),
        eval_file=str(tmp_path / "eval.jsonl"), output_dir=str(tmp_path / "run"),
        model=ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0, device="cpu"),
        max_steps=1, eval_steps=1, logging_steps=1, save_steps=1,
        per_device_train_batch_size=8, learning_rate=5e-3), console_logs=False)
    evals = [r for r in read_metrics(result.output_dir) if f"{prefix}majority" in r]
    assert evals, "no evaluation record with margins"
    last = evals[-1]
    for name in (*MARGIN_GROUPS, "minority"):
        assert math.isfinite(last[f"{prefix}{name}"]), name
    # The union is the pair-weighted mean of its parts (2 lowest-minority, 4 others pairs).
    union = (2 * last[f"{prefix}lowest_minority"] + 4 * last[f"{prefix}others"]) / 6
    assert last[f"{prefix}minority"] == pytest.approx(union, abs=1e-5)


# ------------------------------------------------------------------ report


def margins_result(values: dict[str, list[float]]) -> MarginsResult:
    groups = [g for g in MARGIN_GROUPS for _ in values.get(g, [])]
    margins = [v for g in MARGIN_GROUPS for v in values.get(g, [])]
    return MarginsResult(margins=margins, groups=groups, chosen_rewards=margins,
                         rejected_rewards=[0.0] * len(margins),
                         summary=_summaries(torch.tensor(margins), groups, seed=0))


def test_report_margin_bars_and_table_show_the_three_groups(captured, tmp_path):
    evaluation = ModelEvaluation("gdpo", "runs/gdpo/final", "gdpo", [], {}, margins_result(
        {"majority": [1.0, 3.0], "lowest_minority": [-1.0], "others": [0.5, 0.7]}))
    assert report.plot_margins([evaluation], tmp_path / "m.png") == tmp_path / "m.png"
    ax = captured[0].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "majority", "lowest minority", "others"]
    assert [round(bar.get_height(), 3) for bar in ax.patches] == [2.0, -1.0, 0.6]
    header, row = report._methods_table([evaluation])
    assert header[-4:-1] == ["margin majority", "margin lowest minority", "margin others"]
    assert row[-4].startswith("2.000") and row[-3].startswith("-1.000") and "(n=2)" in row[-2]


def test_report_curves_draw_the_three_groups_per_panel(captured, tmp_path):
    records = [{"step": s, "eval_belief/jsd": 0.3,
                "eval_rewards/margins_majority": 0.1 * s,
                "eval_rewards/margins_lowest_minority": -0.2 * s,
                "eval_rewards/margins_others": 0.05 * s,
                "eval_rewards/margins_minority": -0.1 * s} for s in (1, 2)]
    records.append({"step": 2, "rewards/margins_majority": 0.4,
                    "rewards/margins_lowest_minority": -0.3, "rewards/margins_minority": -0.3})
    panels = dict(report.curve_panels(records))
    assert list(panels) == ["JSD to p* over training", "reward margins, eval pairs",
                            "reward margins, training batches"]
    assert panels["reward margins, eval pairs"] == [
        ("majority", [(1, 0.1), (2, 0.2)]), ("lowest minority", [(1, -0.2), (2, -0.4)]),
        ("others", [(1, 0.05), (2, 0.1)])]  # the union is not drawn twice
    assert [label for label, _ in panels["reward margins, training batches"]] == [
        "majority", "lowest minority"]
    evaluation = ModelEvaluation("gdpo", "m", "gdpo", [], {}, curves=records)
    report.plot_curves(evaluation, tmp_path / "c.png")
    labels = [[line.get_label() for line in ax.get_lines() if not line.get_label().startswith(
        "_")] for ax in captured[0].axes]
    assert labels[1] == ["majority", "lowest minority", "others"]


def test_report_curves_of_a_run_logged_before_the_split_show_its_minority():
    records = [{"step": 1, "eval_rewards/margins_majority": 0.1,
                "eval_rewards/margins_minority": -0.1}]
    assert report.curve_panels(records) == [("reward margins, eval pairs", [
        ("majority", [(1, 0.1)]), ("minority (all non-majority)", [(1, -0.1)])])]
