"""GDPOTrainer takes a text dataset as TRL's DPOTrainer does, and tokenises it itself
(issue 17.3); the README's TRL sample runs as written."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model

from pluralign.beliefs.formats import GROUP_LINE, PAPER_FORMAT, SEPARATED_FORMAT, SequenceFormat
from pluralign.beliefs.tokenize import add_format_tokens
from pluralign.data.records import write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.runs import FORMAT_FILE
from pluralign.train.dataset import preference_dataset
from pluralign.train.preference import GDPOConfig, GDPOTrainer

README = Path(__file__).resolve().parents[1] / "README.md"


def lora() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                      task_type="CAUSAL_LM")


def config(tmp_path: Path, **overrides) -> GDPOConfig:
    settings = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=2,
                    max_steps=2, learning_rate=1e-3, logging_steps=1, save_strategy="no",
                    report_to="none", use_cpu=True, disable_tqdm=True)
    return GDPOConfig(**{**settings, **overrides})


def text_dataset(records) -> Dataset:
    return Dataset.from_list([r.to_dict() for r in records])


def test_text_dataset_is_tokenised_as_preference_dataset_and_trains(fresh_tiny_lm, tmp_path):
    model, tokenizer = fresh_tiny_lm
    tokenizer = copy.deepcopy(tokenizer)  # the session tokenizer must not gain tokens
    vocabulary = len(tokenizer)
    records = conflicting_opinions(3, 2, seed=3)
    trainer = GDPOTrainer(model=model, args=config(tmp_path, precompute_ref_log_probs=True),
                          train_dataset=text_dataset(records), processing_class=tokenizer,
                          peft_config=lora())

    # The separated format's <|belief|> token went into the tokenizer and the embeddings.
    assert len(tokenizer) == vocabulary + 1
    assert trainer.model.get_input_embeddings().weight.shape[0] == vocabulary + 1
    expected_tokenizer = copy.deepcopy(fresh_tiny_lm[1])
    add_format_tokens(expected_tokenizer, None, SEPARATED_FORMAT)
    expected = preference_dataset(records, expected_tokenizer, SEPARATED_FORMAT, pairing="gdpo")
    assert trainer.train_dataset.select_columns(expected.column_names).to_list() == (
        expected.to_list())

    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(torch.isfinite(torch.tensor(losses)))
    trainer.save_model()
    info = json.loads((tmp_path / "run" / FORMAT_FILE).read_text())
    assert (info["sequence_format"], info["pairing"], info["separator"]) == (
        "separated", "gdpo", "<|belief|>")


def test_config_chooses_the_format_and_the_pairing(fresh_tiny_lm, tmp_path):
    model, tokenizer = fresh_tiny_lm
    tokenizer = copy.deepcopy(tokenizer)
    vocabulary = len(tokenizer)
    records = conflicting_opinions(2, 2, seed=4)
    trainer = GDPOTrainer(model=model, args=config(tmp_path, sequence_format="paper",
                                                   pairing="dpo"),
                          train_dataset=text_dataset(records), processing_class=tokenizer,
                          peft_config=lora())
    assert len(tokenizer) == vocabulary  # the paper's format adds no token
    expected = preference_dataset(records, tokenizer, PAPER_FORMAT, pairing="dpo")
    assert trainer.train_dataset.to_list() == expected.to_list()


def test_a_peft_model_gets_the_format_tokens_too(fresh_tiny_lm, tmp_path):
    model, tokenizer = fresh_tiny_lm
    tokenizer = copy.deepcopy(tokenizer)
    peft_model = get_peft_model(model, lora())
    trainer = GDPOTrainer(model=peft_model, args=config(tmp_path, max_steps=1),
                          train_dataset=text_dataset(conflicting_opinions(2, 2, seed=5)),
                          processing_class=tokenizer)
    assert peft_model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|belief|>") == len(tokenizer) - 1
    trainer.train()
    assert trainer.state.global_step == 1


def rows_with(index: int, **changes) -> Dataset:
    rows = [r.to_dict() for r in conflicting_opinions(2, 2, seed=6)]
    rows[index].update(changes)
    return Dataset.from_list(rows)


@pytest.mark.parametrize(("data", "message"), [
    (rows_with(2, chosen_response=None),
     "train dataset row 2: field 'chosen_response': must be non-empty text"),
    (rows_with(1, target_distribution=[0.5, 0.5, 0.5, 0.5]),
     "train dataset row 1: field 'target_distribution': sums to 2, not 1"),
    (rows_with(3, chosen_belief=9),
     "train dataset row 3: field 'chosen_belief': class id 9 is not in the belief set"),
    (rows_with(0, beliefs=[{"class_id": 12, "description": "Twelve"},
                           {"class_id": 1, "description": "One"}],
               target_distribution=[0.5, 0.5], chosen_belief=12, rejected_belief=1),
     "train dataset row 0: field 'beliefs': belief marker '12' is 2 tokens"),
    (Dataset.from_list([{k: v for k, v in r.to_dict().items() if k != "group"}
                        for r in conflicting_opinions(1, 2)]),
     "the train dataset lacks the column 'group': a text dataset has one column per field"),
    (Dataset.from_list([{"chosen" if k == "chosen_response" else k: v
                         for k, v in r.to_dict().items()} for r in conflicting_opinions(1, 2)]),
     "the train dataset lacks the column 'chosen_response' (rename the TRL columns: chosen -> "
     "chosen_response)"),
    (rows_with(0, source="survey"), "the train dataset has the column 'source', which is no "
                                    "record field"),
])
def test_a_bad_row_fails_in_one_line_naming_row_and_field(data, message, fresh_tiny_lm,
                                                          tmp_path):
    model, tokenizer = fresh_tiny_lm
    with pytest.raises(ValueError) as caught:
        GDPOTrainer(model=model, args=config(tmp_path), train_dataset=data,
                    processing_class=copy.deepcopy(tokenizer))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_row_longer_than_max_length_is_refused(fresh_tiny_lm, tmp_path):
    model, tokenizer = fresh_tiny_lm
    data = rows_with(1, chosen_response="word " * 80)
    with pytest.raises(ValueError, match=r"^train dataset row 1: prompt \+ belief \+ response "
                                         r"are \d+ tokens, max_length is 64; "):
        GDPOTrainer(model=model, args=config(tmp_path, max_length=64), train_dataset=data,
                    processing_class=copy.deepcopy(tokenizer))


def test_a_tokenised_dataset_without_the_belief_columns_names_the_right_builder(
        fresh_tiny_lm, tmp_path):
    model, tokenizer = fresh_tiny_lm
    data = Dataset.from_list([{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}])
    with pytest.raises(ValueError, match=r"preference_dataset\(records, tokenizer, fmt, "
                                         r"pairing=\.\.\.\)"):
        GDPOTrainer(model=model, args=config(tmp_path), train_dataset=data,
                    processing_class=tokenizer)


def test_config_checks_the_format_and_the_pairing_and_leaves_checkpointing_off():
    with pytest.raises(ValueError, match=r"^sequence_format: .*separatd"):
        GDPOConfig(output_dir="unused", use_cpu=True, sequence_format="separatd")
    with pytest.raises(ValueError, match=r"^pairing: must be one of gdpo, dpo, got 'kto'$"):
        GDPOConfig(output_dir="unused", use_cpu=True, pairing="kto")
    # TRL's DPOConfig turns it on, which would turn share_prefix off.
    assert GDPOConfig(output_dir="unused", use_cpu=True).gradient_checkpointing is False


def test_trls_sft_loss_type_adds_the_chosen_nll_to_the_trainers_loss(fresh_tiny_lm, tmp_path):
    # TRL's loss_type=["sigmoid", "sft"] (RPO): the trainer adds what TRL would.
    model, tokenizer = fresh_tiny_lm
    tokenizer = copy.deepcopy(tokenizer)
    records = conflicting_opinions(2, 2, seed=5)
    trainer = GDPOTrainer(model=model, args=config(tmp_path, loss_type=["sigmoid", "sft"],
                                                   loss_weights=[1.0, 0.5]),
                          train_dataset=text_dataset(records), processing_class=tokenizer,
                          peft_config=lora())
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()  # no dropout: two passes give the same log-probs
    with torch.no_grad():
        with_rpo = trainer.compute_loss(trainer.model, dict(batch))
        nll = trainer._metrics["eval"]["loss/chosen_nll"][-1]
        trainer.args.loss_type = ["sigmoid"]
        without = trainer.compute_loss(trainer.model, dict(batch))
        # The chosen rows' NLL per completion token (TRL: over the batch), from a plain pass.
        chosen = batch["input_ids"].size(0) // 2
        ids, mask = batch["input_ids"][:chosen], batch["completion_mask"][:chosen]
        logits = trainer.model(input_ids=ids,
                               attention_mask=batch["attention_mask"][:chosen]).logits
        token_logps = torch.log_softmax(logits[:, :-1].float(), -1).gather(
            -1, ids[:, 1:, None]).squeeze(-1)
        expected = -(token_logps * mask[:, 1:]).sum() / mask[:, 1:].sum()
    assert nll == pytest.approx(float(expected), rel=1e-4)
    assert float(with_rpo - without) == pytest.approx(0.5 * nll, rel=1e-4)


def test_a_record_file_loads_as_a_text_dataset(fresh_tiny_lm, tmp_path):
    from datasets import load_dataset

    model, tokenizer = fresh_tiny_lm
    records = conflicting_opinions(2, 2, seed=7)
    write_examples(tmp_path / "train.jsonl", records)
    data = load_dataset("json", data_files=str(tmp_path / "train.jsonl"),
                        cache_dir=str(tmp_path / "cache"))["train"]
    tokenizer = copy.deepcopy(tokenizer)
    trainer = GDPOTrainer(model=model, args=config(tmp_path), train_dataset=data,
                          processing_class=tokenizer, peft_config=lora())
    expected = preference_dataset(records, tokenizer, SEPARATED_FORMAT, pairing="gdpo")
    assert trainer.train_dataset.to_list() == expected.to_list()


def readme_sample() -> str:
    """The python block of the README section on GDPOTrainer for TRL users."""
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if "GDPOTrainer(" in b and "trainer.save_model()" in b]
    assert len(found) == 1, "README.md has no (or several) GDPOTrainer sample blocks"
    return found[0]


def test_the_readme_trl_sample_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = readme_sample()
    exec(compile(code, str(README), "exec"), {"__name__": "readme_sample"})
    output = tmp_path / re.search(r'output_dir="([^"]+)"', code).group(1)
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
                 FORMAT_FILE):
        assert (output / name).is_file(), name
    events = [p for p in output.rglob("events.out.tfevents.*") if os.path.getsize(p) > 0]
    assert events, f"no TensorBoard event file under {output}"
    shutil.rmtree(output)  # the adapter holds the resized embeddings: hundreds of MB


def two_groups() -> list:
    """Two groups asking the same questions (same prompts and ids) with other targets."""
    return (conflicting_opinions(2, 2, seed=0, group="Northvale")
            + conflicting_opinions(2, 2, seed=5, group="Southmere"))


def test_group_in_prompt_tokenises_the_group_line_and_records_it(fresh_tiny_lm, tmp_path,
                                                                 caplog):
    # One model for several groups through the TRL-style path, as `--group_in_prompt` trains.
    model, tokenizer = fresh_tiny_lm
    tokenizer = copy.deepcopy(tokenizer)
    records = two_groups()
    with caplog.at_level("WARNING", logger="pluralign.train.groups"):
        trainer = GDPOTrainer(model=model, args=config(tmp_path, group_in_prompt=True),
                              train_dataset=text_dataset(records), processing_class=tokenizer,
                              peft_config=lora())
    assert not caplog.records  # the prompts name the group: nothing to warn about
    grouped = dataclasses.replace(SEPARATED_FORMAT, group_template=GROUP_LINE)
    expected = preference_dataset(records, tokenizer, grouped, pairing="gdpo")
    assert trainer.train_dataset.select_columns(expected.column_names).to_list() == (
        expected.to_list())
    prompts = [tokenizer.decode(ids) for ids in trainer.train_dataset["prompt_ids"]]
    assert prompts[0] == f"<Q>Group: Northvale\n{records[0].prompt}<A><|belief|>"
    assert prompts[4] == f"<Q>Group: Southmere\n{records[4].prompt}<A><|belief|>"
    trainer.train()
    assert trainer.state.global_step == 2
    assert all(math.isfinite(r["loss"]) for r in trainer.state.log_history if "loss" in r)
    trainer.save_model()
    info = json.loads((tmp_path / "run" / FORMAT_FILE).read_text())
    assert info["group_template"] == GROUP_LINE
    assert SequenceFormat.from_info(info) == grouped  # what eval and serve prompt with


def test_without_group_in_prompt_conflicting_groups_are_warned_about(fresh_tiny_lm, tmp_path,
                                                                      caplog):
    model, tokenizer = fresh_tiny_lm
    tokenizer = copy.deepcopy(tokenizer)
    with caplog.at_level("WARNING", logger="pluralign.train.groups"):
        trainer = GDPOTrainer(model=model, args=config(tmp_path),
                              train_dataset=text_dataset(two_groups()),
                              processing_class=tokenizer, peft_config=lora())
    [warning] = [r.getMessage() for r in caplog.records]
    # Row 4 is Southmere's first row of the question Northvale answered otherwise.
    assert warning.startswith("the train dataset:4: field 'group': 'Southmere' and 'Northvale' "
                              "give the question 'toy-0' different target distributions")
    assert "set group_in_prompt" in warning
    assert "group_template" not in trainer.format_info
    prompts = [tokenizer.decode(ids) for ids in trainer.train_dataset["prompt_ids"]]
    assert prompts[0] == prompts[4]  # the same prompt asked for two distributions


def test_group_in_prompt_refuses_a_group_its_line_cannot_write(fresh_tiny_lm, tmp_path):
    model, tokenizer = fresh_tiny_lm
    data = rows_with(1, group="North<|belief|>vale")
    with pytest.raises(ValueError, match=r"^train dataset row 1: field 'group': "
                                         r"'North<\|belief\|>vale' holds '<\|belief\|>'"):
        GDPOTrainer(model=model, args=config(tmp_path, group_in_prompt=True),
                    train_dataset=data, processing_class=copy.deepcopy(tokenizer))
    assert "group_in_prompt" in {f.name for f in dataclasses.fields(GDPOConfig)}
    help_text = next(f for f in dataclasses.fields(GDPOConfig)
                     if f.name == "group_in_prompt").metadata["help"]
    assert "'Group: NAME' line" in help_text
