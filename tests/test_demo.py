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
