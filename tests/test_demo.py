from __future__ import annotations

import math

import pytest

from pluralign.demo import DemoRunConfig, StageClock, run_demo


def test_demo_pipeline_runs_end_to_end_on_the_tiny_model(tmp_path):
    config = DemoRunConfig(
        # 13 questions: the first 12 have five beliefs, the 13th four (a ragged dataset).
        output_dir=str(tmp_path / "demo"), model="tiny", questions=13, pairs_per_question=4,
        sft_steps=1, preference_steps=1, batch_size=2, eval_every=1, samples=1,
        max_new_tokens=4, lora_r=2,
    )
    lines: list[str] = []
    result = run_demo(config, echo=lines.append)
    assert [row["method"] for row in result.rows] == ["sft", "dpo", "gdpo"]
    for row in result.rows:
        assert 0.0 <= row["jsd"] <= math.sqrt(math.log(2)) + 1e-9
    assert result.rows[0]["minority_margin"] is None  # SFT has no reward margins
    assert all(isinstance(row["minority_margin"], float) for row in result.rows[1:])
    assert set(result.reference_lines) >= {"majority", "reverse", "uniform"}
    assert result.report.is_file()
    assert [line[:5] for line in lines] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    # Measured stage times, printed by the CLI beside the table.
    assert list(result.stage_seconds) == ["data", "sft", "dpo", "gdpo", "evaluate"]
    assert all(s > 0 for s in result.stage_seconds.values())
    assert sum(result.stage_seconds.values()) <= result.seconds
    assert DemoRunConfig.load(tmp_path / "demo" / "config.yaml") == config


def test_stage_clock_rescales_the_estimate_with_measured_speed(monkeypatch):
    import pluralign.demo as demo

    now = [0.0]
    monkeypatch.setattr(demo.time, "perf_counter", lambda: now[0])
    lines: list[str] = []
    clock = StageClock({"a": 1.0, "b": 2.0, "c": 3.0}, lines.append)
    clock.start(0, "a", "first")
    now[0] = 60.0  # stage a (1 unit) took a minute, so 5 units are left at 1 min/unit
    clock.finish()
    clock.start(1, "b", "second")
    assert clock.seconds == {"a": 60.0}
    assert "estimating" in lines[0]
    assert "about 5.0 min left" in lines[1]


def test_demo_config_rejects_zero_steps():
    with pytest.raises(ValueError, match="sft_steps: must be >= 1"):
        DemoRunConfig(sft_steps=0)


def test_demo_config_names_an_unknown_sequence_format():
    with pytest.raises(ValueError, match=r"sequence_format: .*separated-options"):
        DemoRunConfig(sequence_format="separated-option")


def test_demo_passes_the_chosen_nll_weight_to_the_gdpo_stage():
    recipe = DemoRunConfig(chosen_nll_weight=0.5).recipe()
    gdpo = recipe.train_config("gdpo", start="s", train_file="t.jsonl", output_dir="o", seed=0)
    assert gdpo.training_args["loss_weights"] == [1.0, 0.5]
    assert DemoRunConfig(chosen_nll_weight=0.0).recipe().train_config(
        "gdpo", start="s", train_file="t.jsonl", output_dir="o", seed=0).training_args == {}
    with pytest.raises(ValueError, match="chosen_nll_weight: must be >= 0"):
        DemoRunConfig(chosen_nll_weight=-1.0)


def test_demo_groups_trains_one_model_and_compares_the_groups(tmp_path):
    import json

    from pluralign.beliefs.formats import GROUP_LINE

    config = DemoRunConfig(
        output_dir=str(tmp_path / "demo"), model="tiny", questions=4, pairs_per_question=2,
        sft_steps=1, preference_steps=1, batch_size=2, eval_every=1, samples=1,
        max_new_tokens=4, lora_r=2, groups=["Northvale", "Southmere"])
    result = run_demo(config, echo=lambda line: None)
    train_groups = {json.loads(line)["group"] for line in
                    (tmp_path / "demo" / "data" / "train.jsonl").read_text().splitlines()}
    assert train_groups == {"Northvale", "Southmere"}
    # Every stage wrote the group line into its format: one model answers for each group.
    for method in ("sft", "dpo", "gdpo"):
        info = json.loads((result.output_dir / method / "final" / "pluralign_format.json")
                          .read_text())
        assert info["group_template"] == GROUP_LINE
    comparison = result.by_group
    assert comparison is not None and comparison.groups == ["Northvale", "Southmere"]
    assert set(comparison.jsd) == {"sft", "dpo", "gdpo"}
    for per_group in comparison.jsd.values():
        assert all(0.0 <= v <= math.sqrt(math.log(2)) + 1e-9 for v in per_group.values())
    assert 1 <= len(comparison.examples) <= 3
    spreads = [q.target_spread for q in comparison.examples]
    assert spreads == sorted(spreads, reverse=True) and spreads[0] > 0
    for q in comparison.examples:
        assert set(q.targets) == set(q.predicted) == {"Northvale", "Southmere"}
        assert q.targets["Northvale"] != q.targets["Southmere"]
        assert all(abs(sum(p) - 1) < 1e-4 for p in q.predicted.values())
    assert comparison.target_spread > 0 and comparison.predicted_spread >= 0


@pytest.mark.parametrize(("groups", "message"), [
    (["Northvale"], "needs two or more different groups"),
    (["Northvale", "Northvale"], "needs two or more different groups"),
    (["Northvale", "Westfold"], "unknown demo group 'Westfold'"),
])
def test_demo_config_checks_its_groups(groups, message):
    with pytest.raises(ValueError, match=f"groups: {message}"):
        DemoRunConfig(groups=groups)


def test_compare_groups_refuses_a_one_group_evaluation(tmp_path):
    from pluralign.eval.group_comparison import compare_groups

    (tmp_path / "eval.json").write_text('{"models": {}}')
    with pytest.raises(ValueError, match=r"eval\.json: no per-group results"):
        compare_groups(tmp_path, model="gdpo")


def test_demo_command_prints_each_groups_distributions(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import pluralign.demo as demo
    from pluralign.cli.main import app
    from pluralign.eval.group_comparison import GroupComparison, QuestionForGroups

    seen = {}

    def fake_run_demo(config, echo=print):
        seen["groups"] = config.groups
        comparison = GroupComparison(
            "gdpo", ["Northvale", "Southmere"],
            {"gdpo": {"Northvale": 0.111, "Southmere": 0.222}},
            {"Northvale": {"uniform": 0.3}, "Southmere": {"uniform": 0.4}},
            [QuestionForGroups("demo-007", "Is tea good?", ["Yes", "No"],
                               {"Northvale": [0.9, 0.1], "Southmere": [0.2, 0.8]},
                               {"Northvale": [0.85, 0.15], "Southmere": [0.25, 0.75]}, 0.5)],
            predicted_spread=0.41, target_spread=0.5)
        return demo.DemoResult(tmp_path, tmp_path / "report.html", [], {}, 1.0, {}, comparison)

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    result = CliRunner().invoke(app, ["demo", "--groups", "Northvale", "--groups", "Southmere",
                                      "-o", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert seen["groups"] == ["Northvale", "Southmere"]
    assert "Is tea good? (demo-007)" in result.output
    assert "0.85" in result.output and "0.75" in result.output and "0.222" in result.output
    words = " ".join(result.output.split())  # rich wraps long lines
    assert "predicted distributions 0.410, between their targets 0.500" in words


def test_demo_trains_on_fp32_base_weights_and_bf16_is_one_option_away():
    def dtype(config):
        return config.recipe().train_config("gdpo", start="s", train_file="t.jsonl",
                                            output_dir="o", seed=0).model.dtype

    assert dtype(DemoRunConfig()) == "float32"
    assert dtype(DemoRunConfig(base_dtype="bfloat16")) == "bfloat16"
    with pytest.raises(ValueError, match="base_dtype: must be auto, float32 or bfloat16"):
        DemoRunConfig(base_dtype="half")
