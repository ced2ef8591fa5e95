"""The shared training recipe of the demo and the reproduction."""

from __future__ import annotations

from pluralign.train.recipe import RECIPE


def test_recipe_builds_each_stage_with_its_own_steps_and_rates():
    recipe = RECIPE.replace(sft_steps=7, preference_steps=9, calibration_weight=3.0)
    sft = recipe.train_config("sft", start="smollm2-135m", train_file="t.jsonl",
                              output_dir="runs/sft", seed=4)
    gdpo = recipe.train_config("gdpo", start="runs/sft/final", train_file="t.jsonl",
                               output_dir="runs/gdpo", seed=4)
    dpo = recipe.train_config("dpo", start="runs/sft/final", train_file="t.jsonl",
                              output_dir="runs/dpo", seed=4)
    assert (sft.max_steps, sft.learning_rate) == (7, recipe.sft_learning_rate)
    assert (gdpo.max_steps, gdpo.learning_rate) == (9, recipe.preference_learning_rate)
    assert gdpo.weights()[0] == 3.0
    assert dpo.weights() == (0.0, 0.0, 1.0)  # the recipe's belief weights never touch DPO
    assert gdpo.model.lora_r == recipe.lora_r and gdpo.model.lora_dropout == 0.0
    assert gdpo.validation_fraction == recipe.validation_fraction > 0
    assert gdpo.selection_metric() == "eval_belief/jsd"
    assert sft.selection_metric() == dpo.selection_metric() == "eval_loss"
    assert sft.seed == gdpo.seed == 4


def test_a_full_fine_tuning_recipe_builds_without_lora():
    full = RECIPE.replace(lora_r=0).train_config("gdpo", start="runs/sft/final",
                                                  train_file="t.jsonl", output_dir="o", seed=0)
    assert full.model.lora_r == 0


def test_every_sft_family_method_gets_the_sft_steps_and_rate():
    # icf and uniform-sft are SFT-family methods: they train like SFT, not like a preference stage.
    recipe = RECIPE.replace(sft_steps=7, preference_steps=9)
    for method in ("uniform-sft", "icf"):
        config = recipe.train_config(method, start="smollm2-135m", train_file="t.jsonl",
                                     output_dir=f"runs/{method}", seed=0)
        assert (config.max_steps, config.learning_rate) == (7, recipe.sft_learning_rate)
    kto = recipe.train_config("kto", start="runs/sft/final", train_file="t.jsonl",
                              output_dir="runs/kto", seed=0)
    assert (kto.max_steps, kto.learning_rate) == (9, recipe.preference_learning_rate)


def test_gdpo_stages_add_the_chosen_nll_and_dpo_stays_plain():
    def args(method, recipe=RECIPE, **overrides):
        return recipe.train_config(method, start="s", train_file="t.jsonl", output_dir="o",
                                   seed=0, **overrides).training_args

    rpo = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, RECIPE.chosen_nll_weight]}
    assert RECIPE.chosen_nll_weight == 1.0
    assert args("gdpo") == args("gdpo-calibration") == rpo
    # The paper's baselines keep their own losses; KTO's trainer has no sft term.
    assert args("dpo") == args("gdpo-conditioned") == args("kto") == args("gdpo-kto") == {}
    assert args("sft") == {}
    assert args("gdpo", RECIPE.replace(chosen_nll_weight=0.0)) == {}
    # A caller's own TRL options join the recipe's rather than replace them.
    assert args("gdpo", training_args={"weight_decay": 0.1}) == {**rpo, "weight_decay": 0.1}


def test_base_dtype_is_fp32_by_default_and_auto_picks_bf16_where_it_is_fast(monkeypatch):
    import pytest

    import pluralign.train.recipe as recipe_module

    def stage(recipe):
        return recipe.train_config("gdpo", start="s", train_file="t.jsonl", output_dir="o",
                                   seed=0)

    auto = RECIPE.replace(base_dtype="auto")
    monkeypatch.setattr(recipe_module, "bf16_is_fast", lambda: True)
    # The default stays fp32: the bf16 base missed the conflicting-pairs quality bar.
    assert RECIPE.base_dtype == "float32" and stage(RECIPE).model.dtype == "float32"
    assert stage(auto).model.dtype == "bfloat16"
    # Full fine-tuning trains the base itself: its weights and Adam state stay fp32.
    assert stage(auto.replace(lora_r=0)).model.dtype == "float32"
    monkeypatch.setattr(recipe_module, "bf16_is_fast", lambda: False)
    assert stage(auto).model.dtype == "float32"
    assert stage(RECIPE.replace(base_dtype="bfloat16")).model.dtype == "bfloat16"
    with pytest.raises(ValueError, match="base_dtype: must be auto, float32 or bfloat16"):
        RECIPE.replace(base_dtype="fp16")


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(tiny_lm, monkeypatch, caplog):
    """bf16 autocast or a bf16 base on a CPU that emulates bf16 is many times slower than
    fp32 (88 s an SFT step on a 2-core AVX2 CPU): the run says so in one warning."""
    import copy
    import dataclasses

    import torch

    import pluralign.train.recipe as recipe_module
    from pluralign.train.api import warn_if_bf16_is_emulated

    model, _ = tiny_lm
    config = RECIPE.train_config("sft", start="tiny", train_file="t.jsonl", output_dir="o",
                                 seed=0)
    fp32 = dataclasses.replace(config, bf16=False)
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    monkeypatch.setattr(recipe_module, "bf16_is_fast", lambda: False)
    with caplog.at_level("WARNING", logger="pluralign.train.api"):
        assert not warn_if_bf16_is_emulated(model, fp32)
        assert caplog.text == ""
        assert warn_if_bf16_is_emulated(model, dataclasses.replace(config, bf16=True))
        assert "bf16 (autocast) on a CPU without native bf16" in caplog.text
        caplog.clear()
        assert warn_if_bf16_is_emulated(bf16_model, fp32)
        assert "bf16 (model.dtype bfloat16)" in caplog.text
    monkeypatch.setattr(recipe_module, "bf16_is_fast", lambda: True)
    assert not warn_if_bf16_is_emulated(bf16_model, dataclasses.replace(config, bf16=True))
