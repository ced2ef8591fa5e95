"""Precomputed reference log-probs are computed for the rows a run uses, when a batch first
uses them, and equal TRL's eager precompute (issue 17.5)."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig

from pluralign.beliefs.formats import PAPER_FORMAT
from pluralign.data.toy import conflicting_opinions
from pluralign.train.dataset import preference_dataset
from pluralign.train.kto import GDPOKTOConfig, GDPOKTOTrainer, kto_dataset
from pluralign.train.preference import GDPOConfig, GDPOTrainer
from pluralign.train.reference_cache import ROW_KEY


def lora() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                      task_type="CAUSAL_LM")


def settings(tmp_path, name: str, **overrides) -> dict:
    return {**dict(output_dir=str(tmp_path / name), per_device_train_batch_size=2, max_steps=2,
                   learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none",
                   use_cpu=True, disable_tqdm=True, precompute_ref_log_probs=True, seed=3),
            **overrides}


def pairs(tokenizer, n_questions: int, per_question: int):
    # The paper's format adds no token: the session tokenizer stays as it is.
    return preference_dataset(conflicting_opinions(n_questions, per_question, seed=1),
                              tokenizer, PAPER_FORMAT, pairing="gdpo")


def gdpo(tiny_lm, tmp_path, name: str, data, eval_dataset=None, **overrides) -> GDPOTrainer:
    model, tokenizer = tiny_lm
    torch.manual_seed(0)  # the same LoRA initialisation in every trainer
    return GDPOTrainer(model=copy.deepcopy(model), args=GDPOConfig(**settings(
        tmp_path, name, **overrides)), train_dataset=data, eval_dataset=eval_dataset,
        processing_class=tokenizer, peft_config=lora())


@pytest.fixture
def scored(monkeypatch) -> list[int]:
    """Rows scored by each reference forward of any GDPO or KTO trainer (set-up included)."""
    rows: list[int] = []
    for trainer_class, per_row in ((GDPOTrainer, 2), (GDPOKTOTrainer, 1)):
        original = trainer_class.compute_ref_log_probs

        def counting(self, model, inputs, original=original, per_row=per_row):
            rows.append(inputs["input_ids"].size(0) // per_row)
            return original(self, model, inputs)

        monkeypatch.setattr(trainer_class, "compute_ref_log_probs", counting)
    return rows


def record_used(trainer, method: str = "_reference_logps") -> list[tuple]:
    """(input_ids, row keys or None, reference log-probs) of every loss computed."""
    used: list[tuple] = []
    reference = getattr(trainer, method)

    def recording(inputs, rows):
        values = reference(inputs, rows)
        used.append((inputs["input_ids"].clone(), None if rows is None else rows.tolist(),
                     tuple(None if v is None else v.detach().clone() for v in values)))
        return values

    setattr(trainer, method, recording)
    return used


def assert_same_values(lazy: list[tuple], eager: list[tuple]) -> None:
    assert len(lazy) == len(eager) > 0
    for (lazy_ids, _, lazy_values), (eager_ids, _, eager_values) in zip(lazy, eager,
                                                                        strict=True):
        assert torch.equal(lazy_ids, eager_ids)  # the same batch in both runs
        for got, want in zip(lazy_values, eager_values, strict=True):
            torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-4)


def test_lazy_reference_logps_equal_trls_eager_precompute(tiny_lm, tmp_path, scored):
    data = pairs(tiny_lm[1], 3, 4)
    eager = gdpo(tiny_lm, tmp_path, "eager", data, lazy_ref_log_probs=False, max_steps=3)
    assert "ref_chosen_logps" in eager.train_dataset.column_names
    assert sum(scored) == len(data)  # TRL's pass over the whole dataset, before step 1
    lazy = gdpo(tiny_lm, tmp_path, "lazy", data, max_steps=3)
    assert "ref_chosen_logps" not in lazy.train_dataset.column_names
    eager_used, lazy_used = record_used(eager), record_used(lazy)
    eager.train()
    lazy.train()
    assert len(lazy_used) == 3 and all(rows is not None for _, rows, _ in lazy_used)
    assert_same_values(lazy_used, eager_used)


def test_a_short_run_scores_only_the_rows_of_its_steps(tiny_lm, tmp_path, scored):
    data = pairs(tiny_lm[1], 4, 6)
    trainer = gdpo(tiny_lm, tmp_path, "short", data)
    assert len(data) == 24 and scored == []  # set-up scored nothing
    used = record_used(trainer)
    trainer.train()
    assert trainer.state.global_step == 2
    assert scored == [2, 2]  # one reference forward per step, for its two rows
    assert len({row for _, rows, _ in used for row in rows}) == 4


def test_each_row_is_scored_once_over_two_epochs(tiny_lm, tmp_path, scored):
    data = pairs(tiny_lm[1], 2, 4)
    trainer = gdpo(tiny_lm, tmp_path, "epochs", data, max_steps=-1, num_train_epochs=2)
    used = record_used(trainer)
    trainer.train()
    assert trainer.state.global_step == 8  # 8 rows, 2 per step, 2 epochs
    assert sum(scored) == len(data) == 8
    first_seen: dict[int, tuple[float, float]] = {}
    for _, rows, (chosen, rejected) in used:
        for row, value in zip(rows, zip(chosen.tolist(), rejected.tolist(), strict=True),
                              strict=True):
            assert first_seen.setdefault(row, value) == value  # the second epoch reuses them
    assert sorted(first_seen) == list(range(8))


def test_evaluating_twice_scores_the_eval_rows_once(tiny_lm, tmp_path, scored):
    data, heldout = pairs(tiny_lm[1], 2, 2), pairs(tiny_lm[1], 3, 1)
    trainer = gdpo(tiny_lm, tmp_path, "eval", data, eval_dataset=heldout,
                   per_device_eval_batch_size=3)
    first = trainer.evaluate()["eval_loss"]
    assert trainer.evaluate()["eval_loss"] == first
    assert scored == [3]
    assert list(trainer.eval_dataset[ROW_KEY]) == [4, 5, 6]  # keys follow the train rows' 0..3


def kto(tiny_lm, tmp_path, name: str, data, **overrides) -> GDPOKTOTrainer:
    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    return GDPOKTOTrainer(model=copy.deepcopy(model), args=GDPOKTOConfig(**settings(
        tmp_path, name, **overrides)), train_dataset=data, processing_class=tokenizer,
        peft_config=lora())


def test_kto_reference_logps_are_lazy_and_equal_the_eager_ones(tiny_lm, tmp_path, scored):
    records = conflicting_opinions(3, 2, seed=2)
    data = kto_dataset(records, tiny_lm[1], PAPER_FORMAT, pairing="gdpo", batch_size=2)
    eager = kto(tiny_lm, tmp_path, "kto-eager", data, lazy_ref_log_probs=False)
    assert sum(scored) == len(data) == 12
    lazy = kto(tiny_lm, tmp_path, "kto-lazy", data)
    assert sum(scored) == 12 and "ref_logps" not in lazy.train_dataset.column_names
    eager_used = record_used(eager, "_kto_reference")
    lazy_used = record_used(lazy, "_kto_reference")
    eager.train()
    lazy.train()
    assert sum(scored) == 12 + 4  # the lazy run scored the 4 rows of its 2 steps
    assert all(values[1] is not None for _, _, values in lazy_used)  # KL log-probs too
    assert_same_values(lazy_used, eager_used)


def test_full_finetuning_without_a_reference_keeps_the_eager_pass(tiny_lm, tmp_path, scored):
    model, tokenizer = tiny_lm
    data = pairs(tokenizer, 2, 2)
    trainer = GDPOTrainer(model=copy.deepcopy(model), args=GDPOConfig(**settings(
        tmp_path, "full")), train_dataset=data, processing_class=tokenizer)
    # The reference is the policy before step 1: only a pass before training can score it.
    assert sum(scored) == 4 and "ref_chosen_logps" in trainer.train_dataset.column_names
