"""Validation split carved from the training file, and checkpoint selection on it."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from pluralign.data.records import write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.models import ModelConfig
from pluralign.train.api import train
from pluralign.train.config import TrainConfig
from pluralign.train.metrics import read_metrics
from pluralign.train.selection import BestStateCallback, carve_validation


def with_wordings(records, wordings: int):
    """The same records asked in ``wordings`` ways (one question id per original prompt)."""
    prompts = sorted({r.prompt for r in records})
    out = []
    for i, record in enumerate(records):
        wording = i % wordings
        prompt = record.prompt if wording == 0 else f"Tell me: {record.prompt} (v{wording})"
        out.append(dataclasses.replace(record, prompt=prompt,
                                       question_id=f"q{prompts.index(record.prompt)}"))
    return out


def test_carve_holds_out_whole_wordings_of_trained_questions():
    records = with_wordings(conflicting_opinions(6, 6, seed=0), wordings=3)
    carve = carve_validation(records, 0.2, seed=0)
    assert carve.by == "wording"
    held = {r.prompt for r in carve.validation}
    trained = {r.prompt for r in carve.train}
    assert held and not held & trained  # a held-out wording never trains
    by_question = {}
    for r in carve.validation:
        by_question.setdefault(r.question_id, set()).add(r.prompt)
    assert all(len(p) == 1 for p in by_question.values())  # at most one wording per question
    # Every validation question still trains on another wording.
    assert {r.question_id for r in carve.validation} <= {r.question_id for r in carve.train}
    assert len(carve.train) + len(carve.validation) == len(records)
    assert len(held) == round(0.2 * len(held | trained))


def test_carve_falls_back_to_records_when_every_question_has_one_wording():
    records = conflicting_opinions(4, 5, seed=0)
    carve = carve_validation(records, 0.25, seed=1)
    assert carve.by == "records"
    assert len(carve.validation) == 5 and len(carve.train) == 15
    assert sorted(map(id, carve.train + carve.validation)) == sorted(map(id, records))
    again = carve_validation(records, 0.25, seed=1)
    assert [r.to_dict() for r in again.validation] == [r.to_dict() for r in carve.validation]
    with pytest.raises(ValueError, match="fraction"):
        carve_validation(records, 1.0, seed=0)


def test_best_state_callback_restores_the_best_evaluation(tmp_path):
    model = torch.nn.Linear(2, 2)
    metrics_file = tmp_path / "metrics.jsonl"
    callback = BestStateCallback("eval_loss", metrics_file)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    snapshots = {}
    for step, loss in ((1, 0.9), (2, 0.4), (3, 0.7)):
        with torch.no_grad():
            model.weight.fill_(float(step))
        snapshots[step] = model.weight.detach().clone()
        state.global_step = step
        callback.on_evaluate(None, state, None, model=model, metrics={"eval_loss": loss})
    callback.on_train_end(None, state, None, model=model)
    torch.testing.assert_close(model.weight, snapshots[2])
    record = json.loads(metrics_file.read_text().splitlines()[-1])
    assert record["selected_step"] == 2 and record["selected_value"] == pytest.approx(0.4)


def _train_tiny_gdpo(tmp_path, **settings):
    """A tiny GDPO run on 24 training and 8 eval records, evaluated every 2 steps."""
    write_examples(tmp_path / "train.jsonl", conflicting_opinions(4, 6, seed=0))
    write_examples(tmp_path / "eval.jsonl", conflicting_opinions(4, 2, seed=1))
    return train(TrainConfig(
        method="gdpo", train_file=str(tmp_path / "train.jsonl"),
        eval_file=str(tmp_path / "eval.jsonl"), output_dir=str(tmp_path / "run"),
        model=ModelConfig(model="tiny", lora_r=4, lora_alpha=8.0, device="cpu"),
        eval_steps=2, save_steps=100, per_device_train_batch_size=4, learning_rate=5e-3,
        **settings,
    ), console_logs=False)


def test_training_selects_on_the_validation_split_only(tmp_path):
    result = _train_tiny_gdpo(tmp_path, max_steps=6, logging_steps=2, validation_fraction=0.25)
    records = read_metrics(result.output_dir)
    validation = {r["step"]: r["eval_belief/jsd"] for r in records if "eval_belief/jsd" in r}
    heldout = [r for r in records if "heldout_belief/jsd" in r]
    assert heldout  # the eval file is measured for the curves ...
    chosen = [r for r in records if "selected_step" in r][-1]
    assert chosen["selected_by"] == "eval_belief/jsd"  # ... but selection reads validation
    assert result.selected_step == chosen["selected_step"]
    assert chosen["selected_value"] == pytest.approx(min(validation.values()))
    assert validation[chosen["selected_step"]] == pytest.approx(min(validation.values()))


def test_select_best_by_a_metric_needs_a_validation_split():
    with pytest.raises(ValueError, match="validation_fraction"):
        TrainConfig(train_file="x.jsonl", select_best_by="eval_loss")
    with pytest.raises(ValueError, match="Did you mean"):
        TrainConfig(train_file="x.jsonl", select_best_by="eval_los", validation_fraction=0.1)
    assert TrainConfig(method="dpo", validation_fraction=0.1).selection_metric() == "eval_loss"
    assert TrainConfig(method="gdpo", validation_fraction=0.1).selection_metric() == (
        "eval_belief/jsd")
    assert TrainConfig(method="gdpo").selection_metric() is None


def test_the_last_step_is_evaluated_once_when_it_is_not_a_multiple_of_eval_steps(tmp_path):
    # transformers evaluates the last step by itself; pluralign's final evaluation used to
    # run again there and log every eval record twice (no selection here: a restored
    # earlier state is evaluated again, on purpose).
    result = _train_tiny_gdpo(tmp_path, max_steps=3, logging_steps=1, eval_on_start=False)
    records = read_metrics(result.output_dir)
    assert [r["step"] for r in records if "eval_loss" in r] == [2, 3]
    assert [r["step"] for r in records if "eval_belief/jsd" in r] == [2, 3]
