"""Trainers: every method runs, checkpoints, resumes, and keeps its reference fixed."""

from __future__ import annotations

import json
import math

import pytest
import torch

import pluralign
from pluralign.data.records import write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.models import ModelConfig, load_model
from pluralign.registry import METHODS
from pluralign.train.api import build_trainer, train
from pluralign.train.common import COMPLETE_MARKER, TrainingDiverged
from pluralign.train.config import TrainConfig
from pluralign.train.metrics import read_metrics


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_examples(root / "train.jsonl", conflicting_opinions(4, 4, seed=0))
    write_examples(root / "eval.jsonl", conflicting_opinions(4, 2, seed=1))
    return root


def make_config(toy_files, tmp_path, method: str, **overrides) -> TrainConfig:
    settings = dict(
        method=method, train_file=str(toy_files / "train.jsonl"),
        eval_file=str(toy_files / "eval.jsonl"), output_dir=str(tmp_path / method),
        model=ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0, device="cpu"),
        max_steps=2, eval_steps=2, logging_steps=1, save_steps=1,
        per_device_train_batch_size=4, learning_rate=5e-3,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def logits_of(model, tokenizer, text="What do you think about nuclear power?"):
    batch = tokenizer([text], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_two_steps_and_reloads(method, toy_files, tmp_path, tiny_lm):
    base_model, tokenizer = tiny_lm
    result = train(make_config(toy_files, tmp_path, method))
    assert result.global_step == 2

    train_losses = [r["loss"] for r in read_metrics(result.output_dir) if "loss" in r]
    assert len(train_losses) == 2 and all(math.isfinite(x) for x in train_losses)
    assert (result.output_dir / "checkpoint-2" / COMPLETE_MARKER).is_file()
    assert (result.output_dir / "config.yaml").is_file()
    # TRL's copy of the starting adapter (its reference) is not kept in final/.
    assert not (result.final_dir / "ref").exists()
    assert (result.output_dir / "checkpoint-2" / "ref").is_dir() == (
        METHODS.get(method).family != "sft")

    reloaded, _ = load_model(str(result.final_dir))
    trained = result.trainer.model
    torch.testing.assert_close(logits_of(reloaded, tokenizer), logits_of(trained, tokenizer))
    base_logits = logits_of(base_model, tokenizer)
    vocab = base_logits.size(-1)
    # The default format adds one token (the belief separator) to the vocabulary.
    assert logits_of(reloaded, tokenizer).size(-1) == vocab + 1
    assert not torch.allclose(logits_of(reloaded, tokenizer)[..., :vocab], base_logits, atol=1e-4)
    with reloaded.disable_adapter():  # the LoRA reference is the untouched base model
        torch.testing.assert_close(logits_of(reloaded, tokenizer)[..., :vocab], base_logits)


def test_gdpo_metrics_hook_reading_equals_prompt_forward(toy_files, tmp_path):
    result = train(make_config(toy_files, tmp_path, "gdpo"))
    records = read_metrics(result.output_dir)
    pairs = [r for r in records if "eval_belief/jsd_pairs" in r]
    prompts = [r for r in records if "eval_belief/jsd" in r]
    assert pairs and prompts
    # Each eval prompt has the same number of pairs, so the per-pair mean equals the
    # per-prompt mean: the belief read from the training forward's hidden states equals
    # the one from a separate prompt-only forward.
    assert pairs[-1]["eval_belief/jsd_pairs"] == pytest.approx(prompts[-1]["eval_belief/jsd"],
                                                               abs=1e-5)
    assert {"eval_rewards/margins_majority", "eval_rewards/margins_minority",
            "eval_calibration/kl", "eval_calibration/belief_nll",
            "eval_loss/preference"} <= set(pairs[-1])
    assert any("tokens_per_second" in r for r in records)


def test_resume_continues_from_the_last_complete_checkpoint(toy_files, tmp_path):
    train(make_config(toy_files, tmp_path, "gdpo"))
    run_dir = tmp_path / "gdpo"
    (run_dir / "checkpoint-3").mkdir()  # a save that died half-way: no COMPLETE marker
    result = train(make_config(toy_files, tmp_path, "gdpo", max_steps=4, resume=True))
    assert result.global_step == 4
    assert (run_dir / "incomplete-checkpoint-3").is_dir()
    steps = [r["step"] for r in read_metrics(run_dir) if "loss" in r]
    assert steps == [1, 2, 3, 4]
    state = json.loads((run_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_rerun_into_a_used_folder_needs_resume(toy_files, tmp_path):
    train(make_config(toy_files, tmp_path, "sft"))
    with pytest.raises(ValueError, match="pass --resume"):
        train(make_config(toy_files, tmp_path, "sft"))


def test_full_finetuning_keeps_an_explicit_frozen_reference(toy_files, tmp_path, tiny_lm):
    base_model, _ = tiny_lm
    config = make_config(toy_files, tmp_path, "dpo", precompute_ref_log_probs=False,
                         model=ModelConfig(model="tiny", device="cpu"), learning_rate=1e-3)
    result = train(config)
    reference = result.trainer.ref_model
    assert reference is not None and reference is not result.trainer.model
    for (name, ref_param), base_param in zip(reference.named_parameters(),
                                             base_model.parameters(), strict=True):
        # Beyond the base vocabulary: the separator's row, added at the mean of the others.
        assert torch.equal(ref_param[: base_param.size(0)], base_param), name
    policy = dict(result.trainer.model.named_parameters())
    assert not torch.equal(policy["model.layers.0.mlp.up_proj.weight"],
                           base_model.model.layers[0].mlp.up_proj.weight)


def test_non_finite_loss_stops_the_run_without_saving(toy_files, tmp_path, monkeypatch):
    import pluralign.train.preference as preference

    real = preference.gdpo_loss

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out.losses = out.losses * float("nan")
        return out

    monkeypatch.setattr(preference, "gdpo_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="the loss became nan at step 0"):
        train(make_config(toy_files, tmp_path, "gdpo"))
    run_dir = tmp_path / "gdpo"
    assert not (run_dir / "final").exists()
    assert not list(run_dir.glob("checkpoint-*"))


def test_pluralign_train_is_callable(toy_files, tmp_path):
    result = pluralign.train(make_config(toy_files, tmp_path, "sft", max_steps=1))
    assert result.global_step == 1
    fmt = json.loads((result.final_dir / "pluralign_format.json").read_text())
    assert fmt == {"method": "sft", "pairing": "dpo", "sequence_format": "separated",
                   "belief_format": "digit",
                   "use_chat_template": False, "separator": "<|belief|>", "add_bos": False,
                   "prompt_template": "<Q>{prompt}<A>", "description_template": "<{description}>",
                   "system_prompt": None, "option_template": "{class_id} = {description}",
                   "marker_options_template": None}


@pytest.mark.parametrize("method", ["dpo", "gdpo"])
def test_the_format_file_records_the_pairing_that_margins_use(method, toy_files, tmp_path):
    from pluralign.eval.margins import pairing_for_model
    from pluralign.runs import read_format_info, write_format_info

    result = train(make_config(toy_files, tmp_path, method, max_steps=1, eval_file=None))
    info = read_format_info(result.final_dir)
    assert info["pairing"] == METHODS.get(method).pairing == method
    assert pairing_for_model(result.final_dir) == method
    # Margins follow the recorded pairing, not the method name.
    flipped = {"dpo": "gdpo", "gdpo": "dpo"}[method]
    write_format_info(result.final_dir, {**info, "pairing": flipped})
    assert pairing_for_model(result.final_dir) == flipped


def test_build_trainer_is_the_trainer_train_runs(toy_files, tmp_path):
    from pluralign.data.records import read_examples
    from pluralign.train.metrics import MetricsJsonlCallback
    from pluralign.train.preference import GDPOTrainer

    records = read_examples(toy_files / "train.jsonl")
    config = make_config(toy_files, tmp_path, "gdpo", train_file="", eval_file=None,
                         calibration_weight=0.5)
    trainer = build_trainer(config, train_records=records[:6],
                            trainer_options={"share_prefix": False})
    assert isinstance(trainer, GDPOTrainer) and len(trainer.train_dataset) == 6
    args = trainer.args  # the config's belief options, the method's exclusion, the option
    assert (args.calibration_weight, args.belief_nll_weight, args.preference_weight) == (
        0.5, 1.0, 1.0)
    assert args.exclude_belief_from_preference and not args.share_prefix
    assert any(isinstance(c, MetricsJsonlCallback) for c in trainer.callback_handler.callbacks)
    assert not (tmp_path / "gdpo" / "final").exists()  # train() writes final/, not this
    trainer.train()
    assert trainer.state.global_step == 2


def test_console_logs_off_keeps_the_bar_and_the_metrics_file(toy_files, tmp_path, capsys):
    config = make_config(toy_files, tmp_path, "sft", max_steps=2, logging_steps=1)
    result = pluralign.train(config, console_logs=False)
    printed = capsys.readouterr()
    assert "'loss'" not in printed.out + printed.err  # no logged dicts on the console
    assert "2/2" in printed.err  # the progress bar still ran to the end
    logged = [json.loads(line) for line in result.metrics_file.read_text().splitlines()]
    assert any("loss" in row for row in logged)


def test_special_token_mode_trains_and_reloads(toy_files, tmp_path):
    result = train(make_config(toy_files, tmp_path, "gdpo", belief_format="special",
                               max_steps=1))
    reloaded, tokenizer = load_model(str(result.final_dir))
    ids = tokenizer("<|belief_5|>", add_special_tokens=False).input_ids
    assert len(ids) == 1
    assert reloaded.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_cli_train_with_yaml_and_overrides(toy_files, tmp_path):
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text(
        f"method: dpo\ntrain_file: {toy_files / 'train.jsonl'}\n"
        f"output_dir: {tmp_path / 'cli-run'}\nmodel:\n  model: tiny\n  lora_r: 2\n"
    )
    result = CliRunner().invoke(app, ["train", str(yaml_path), "--max_steps", "1",
                                      "--model.lora_alpha", "4"])
    assert result.exit_code == 0, result.output
    assert "trained 1 steps" in result.output
    saved = TrainConfig.load(tmp_path / "cli-run" / "config.yaml")
    assert (saved.method, saved.max_steps, saved.model.lora_r, saved.model.lora_alpha) == (
        "dpo", 1, 2, 4.0)


@pytest.mark.slow
def test_accelerate_launch_with_two_cpu_processes(toy_files, tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        accelerate = Path(shutil.which("accelerate") or "accelerate")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"method: gdpo\ntrain_file: {toy_files / 'train.jsonl'}\n"
        f"output_dir: {tmp_path / 'ddp'}\nmodel:\n  model: tiny\n  lora_r: 4\n"
        "max_steps: 2\nlogging_steps: 1\nper_device_train_batch_size: 2\n"
    )
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "pluralign", "train", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 2 steps") == 1  # printed by the main process only
    records = [r for r in read_metrics(tmp_path / "ddp") if "loss" in r]
    # 16 pairs, 2 per process, 2 processes: 4 steps per epoch, so step 2 is half an epoch.
    assert [(r["step"], r["epoch"]) for r in records] == [(1, 0.25), (2, 0.5)]
    assert (tmp_path / "ddp" / "final" / "adapter_model.safetensors").is_file()


def _collated_batch(tokenizer, records, exclude: bool, fmt=None):
    from pluralign.beliefs.formats import OPINION_FORMAT
    from pluralign.train.dataset import preference_rows
    from pluralign.train.preference import BeliefPreferenceCollator

    rows = preference_rows(records, tokenizer, fmt or OPINION_FORMAT, pairing="gdpo")
    collator = BeliefPreferenceCollator(pad_token_id=tokenizer.pad_token_id,
                                        exclude_belief_from_preference=exclude)
    return rows, collator(rows)


def test_collator_masks_exactly_the_belief_span(tiny_lm):
    _, tokenizer = tiny_lm
    records = conflicting_opinions(2, 2, seed=3)
    rows, kept = _collated_batch(tokenizer, records, exclude=False)
    _, masked = _collated_batch(tokenizer, records, exclude=True)
    removed = kept["completion_mask"] - masked["completion_mask"]
    half = len(rows)
    for i, row in enumerate(rows):
        start = len(row["prompt_ids"])
        for r, span in ((i, row["chosen_belief_len"]), (half + i, row["rejected_belief_len"])):
            expected = torch.zeros_like(removed[r])
            expected[start : start + span] = 1
            assert torch.equal(removed[r], expected)
            # the masked tokens are the marker and "<description>", e.g. "4<Somewhat support>"
            text = tokenizer.decode(masked["input_ids"][r, start : start + span])
            assert text[0].isdigit() and text[1] == "<" and text.endswith(">")
    assert masked["belief_token_ids"].shape == (half, 4)
    assert torch.allclose(masked["target_probs"].sum(-1), torch.ones(half), atol=1e-3)


def test_belief_logps_from_the_hook_equal_a_full_forward(tiny_lm):
    from pluralign.train.common import HiddenStateCapture
    from pluralign.train.preference import belief_span_logps

    model, tokenizer = tiny_lm
    _, batch = _collated_batch(tokenizer, conflicting_opinions(2, 2, seed=4), exclude=True)
    capture = HiddenStateCapture(model)
    try:
        with torch.no_grad(), capture.armed():
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits
        belief_logps, span_logps, span_mask = belief_span_logps(
            capture, batch["input_ids"], batch["prompt_lens"], batch["chosen_belief_lens"],
            batch["belief_token_ids"])
    finally:
        capture.remove()
    full = torch.log_softmax(logits.float(), dim=-1)
    for b in range(batch["prompt_lens"].size(0)):
        last = int(batch["prompt_lens"][b]) - 1
        torch.testing.assert_close(belief_logps[b], full[b, last, batch["belief_token_ids"][b]])
        for j in range(int(batch["chosen_belief_lens"][b])):
            token = batch["input_ids"][b, last + j + 1]
            torch.testing.assert_close(span_logps[b, j], full[b, last + j, token])
        assert int(span_mask[b].sum()) == int(batch["chosen_belief_lens"][b])


def test_options_given_after_the_marker_are_in_no_loss(tiny_lm):
    """marker-options: the options between marker and description are masked out of the
    preference completion and of the belief span the NLL reads; the marker and the
    description stay in both."""
    import dataclasses

    from pluralign.beliefs.formats import OPINION_FORMAT
    from pluralign.train.common import HiddenStateCapture
    from pluralign.train.preference import belief_span_logps

    model, tokenizer = tiny_lm
    fmt = dataclasses.replace(OPINION_FORMAT, marker_options_template="(Options: {options})")
    rows, batch = _collated_batch(tokenizer, conflicting_opinions(2, 2, seed=3), False, fmt)
    half = len(rows)
    for i, row in enumerate(rows):
        start, given = len(row["prompt_ids"]), row["options_len"]
        assert given > 5
        assert tokenizer.decode(batch["input_ids"][i, start + 1 : start + 1 + given]) == (
            "(Options: 1 = Strongly oppose; 2 = Somewhat oppose; 4 = Somewhat support; "
            "5 = Strongly support)")
        for r in (i, half + i):
            mask = batch["completion_mask"][r]
            assert mask[start] == 1 and mask[start + 1 + given] == 1
            assert int(mask[start + 1 : start + 1 + given].sum()) == 0
    capture = HiddenStateCapture(model)
    try:
        with torch.no_grad(), capture.armed():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        _, _, span_mask = belief_span_logps(
            capture, batch["input_ids"], batch["prompt_lens"], batch["chosen_belief_lens"],
            batch["belief_token_ids"], batch["options_lens"])
    finally:
        capture.remove()
    for b, row in enumerate(rows):
        given = row["options_len"]
        expected = [True] + [False] * given + [True] * (row["chosen_belief_len"] - 1 - given)
        assert span_mask[b, : row["chosen_belief_len"]].tolist() == expected
        assert int(span_mask[b].sum()) == row["chosen_belief_len"] - given


def test_uniform_sft_draws_every_available_belief(tiny_lm):
    from pluralign.train.dataset import uniform_belief_records

    records = conflicting_opinions(1, 200, seed=5)
    drawn = [class_id for _, class_id, _ in uniform_belief_records(records, seed=0)]
    counts = {c: drawn.count(c) for c in set(drawn)}
    assert set(counts) == {1, 2, 4, 5}
    assert all(35 <= n <= 65 for n in counts.values()), counts  # ~50 each of 200


def test_same_seed_gives_the_same_model(toy_files, tmp_path):
    from safetensors.torch import load_file

    weights = []
    for name in ("a", "b"):
        config = make_config(toy_files, tmp_path / name, "gdpo", eval_file=None)
        weights.append(load_file(train(config).final_dir / "adapter_model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


@pytest.mark.slow
@pytest.mark.parametrize("lora_r", [0, 8])
def test_bundled_model_trains_with_and_without_lora(lora_r, toy_files, tmp_path):
    config = make_config(
        toy_files, tmp_path, "gdpo", eval_file=None, max_steps=1, max_train_examples=4,
        per_device_train_batch_size=2, learning_rate=1e-5,
        model=ModelConfig(model="smollm2-135m", lora_r=lora_r, device="cpu"),
    )
    result = train(config)
    losses = [r["loss"] for r in read_metrics(result.output_dir) if "loss" in r]
    assert result.global_step == 1 and math.isfinite(losses[0])
    saved = {p.name for p in result.final_dir.iterdir()}
    assert ("adapter_model.safetensors" if lora_r else "model.safetensors") in saved


@pytest.mark.parametrize("bf16", [False, True])
def test_short_bf16_runs_on_cpu_train_with_eager_attention(bf16, toy_files, tmp_path):
    from pluralign.train.common import unwrap_to_causal_lm

    result = train(make_config(toy_files, tmp_path, "gdpo", bf16=bf16, max_steps=1,
                               eval_steps=1, save_steps=1))
    kernel = unwrap_to_causal_lm(result.trainer.model).config._attn_implementation
    assert kernel == ("eager" if bf16 else "sdpa")
    # the choice is the training run's: the saved model loads with the default kernel
    reloaded, _ = load_model(str(result.final_dir))
    assert unwrap_to_causal_lm(reloaded).config._attn_implementation == "sdpa"
