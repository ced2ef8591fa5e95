"""GDPOConfig and GDPOKTOConfig used directly: defaults as documented, TRL options the
trainers do not implement refused by name (issue 16.7)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from pluralign.beliefs.formats import OPINION_FORMAT
from pluralign.data.toy import conflicting_opinions
from pluralign.train.arguments import trainer_arguments
from pluralign.train.belief_loss import BELIEF_LOSS_FIELDS, BeliefLossArgs
from pluralign.train.config import TrainConfig
from pluralign.train.dataset import preference_rows
from pluralign.train.kto import GDPOKTOConfig
from pluralign.train.preference import GDPOConfig, GDPOTrainer

BETA = 0.1


@pytest.fixture(scope="module")
def policy_and_reference(tiny_lm):
    """A perturbed copy of the tiny model (the policy) and the untouched one (the reference)."""
    base, tokenizer = tiny_lm
    policy = copy.deepcopy(base)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return policy, copy.deepcopy(base).eval(), tokenizer


def one_batch_loss(tmp_path, models, pairing: str, name: str, **config) -> tuple[float, dict]:
    """The trainer's loss on all six pairs as one batch, and a copy of that batch."""
    policy, reference, tokenizer = models
    rows = preference_rows(conflicting_opinions(3, 2, seed=5), tokenizer, OPINION_FORMAT,
                           pairing=pairing)
    args = GDPOConfig(output_dir=str(tmp_path / name), per_device_train_batch_size=len(rows),
                      report_to="none", use_cpu=True, max_steps=1, beta=BETA, **config)
    trainer = GDPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference),
                          args=args, processing_class=tokenizer,
                          train_dataset=Dataset.from_list(rows))
    batch = next(iter(trainer.get_train_dataloader()))
    kept = {k: v.clone() for k, v in batch.items()}
    trainer.model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    return float(loss), kept


def completion_logps(model, batch) -> torch.Tensor:
    """Summed log-probs of every completion token (belief span, response, EOS), by hand."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = torch.log_softmax(logits[:, :-1].float(), -1).gather(
        -1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    positions = torch.arange(1, batch["input_ids"].size(1))
    prompt_lens = torch.cat([batch["prompt_lens"], batch["prompt_lens"]])
    real = batch["attention_mask"][:, 1:].bool()
    completion = (positions[None, :] >= prompt_lens[:, None]) & real
    return (logps * completion).sum(-1)


def test_defaults_score_the_whole_completion():
    config = GDPOConfig(output_dir="unused", use_cpu=True)
    assert not config.exclude_belief_from_preference
    assert (config.calibration_weight, config.belief_nll_weight, config.preference_weight) == (
        1.0, 1.0, 1.0)


def test_belief_weights_at_zero_are_plain_dpo_as_documented(tmp_path, policy_and_reference):
    policy, reference, _ = policy_and_reference
    loss, batch = one_batch_loss(tmp_path, policy_and_reference, "dpo", "dpo",
                                 calibration_weight=0.0, belief_nll_weight=0.0)
    chosen, rejected = completion_logps(policy, batch).chunk(2)
    ref_chosen, ref_rejected = completion_logps(reference, batch).chunk(2)
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    want = float(-F.logsigmoid(BETA * margin).mean())
    assert loss == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_gdpo_pairs_give_the_same_loss_with_or_without_the_belief_span(
        tmp_path, policy_and_reference):
    kept, _ = one_batch_loss(tmp_path, policy_and_reference, "gdpo", "kept")
    excluded, _ = one_batch_loss(tmp_path, policy_and_reference, "gdpo", "excluded",
                                 exclude_belief_from_preference=True)
    assert kept == pytest.approx(excluded, rel=1e-4, abs=1e-6)
    # With DPO pairs the spans differ, and leaving them out is no longer plain DPO.
    dpo_kept, _ = one_batch_loss(tmp_path, policy_and_reference, "dpo", "dpo-kept")
    dpo_excluded, _ = one_batch_loss(tmp_path, policy_and_reference, "dpo", "dpo-excluded",
                                     exclude_belief_from_preference=True)
    assert abs(dpo_kept - dpo_excluded) > 1e-3


@pytest.mark.parametrize("option", [
    {"label_smoothing": 0.1},
    {"f_divergence_type": "forward_kl"},
    {"f_alpha_divergence_coef": 0.3},
    {"ld_alpha": 0.5},
    {"use_weighting": True},
    {"loss_type": "ipo"},
    {"loss_type": ["sft", "sigmoid"]},
    {"loss_weights": [0.5]},
    {"loss_type": ["sigmoid", "sft"], "loss_weights": [2.0, 1.0]},
    {"discopop_tau": 0.1},
    {"router_aux_loss_coef": 0.01},
    {"truncation_mode": "keep_end"},
    {"pad_to_multiple_of": 8},
])
def test_gdpo_config_refuses_trl_options_it_does_not_implement(option):
    name = "loss_weights" if "loss_weights" in option else next(iter(option))
    with pytest.raises(ValueError, match=rf"^GDPOConfig: {name}=.* is not implemented by "
                                         "GDPOTrainer: ") as caught:
        GDPOConfig(output_dir="unused", use_cpu=True, **option)
    assert "\n" not in str(caught.value)


def test_gdpo_config_accepts_values_equal_to_trl_defaults():
    config = GDPOConfig(output_dir="unused", use_cpu=True, loss_type="sigmoid", loss_weights=[1.0],
                        label_smoothing=0.0, router_aux_loss_coef=0.0, pad_to_multiple_of=None)
    assert config.loss_type == ["sigmoid"]


def test_gdpo_config_takes_trls_sft_loss_type_as_the_chosen_nll_weight():
    def weight(**options):
        return GDPOConfig(output_dir="unused", use_cpu=True, **options).chosen_nll_weight

    assert weight() == 0.0
    assert weight(loss_type=["sigmoid", "sft"]) == 1.0
    assert weight(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.25]) == 0.25
    with pytest.raises(ValueError, match=r"one weight per loss_type \['sigmoid', 'sft'\]"):
        weight(loss_type=["sigmoid", "sft"], loss_weights=[1.0])


@pytest.mark.parametrize("option", [
    {"loss_type": "apo_zero_unpaired"},
    {"router_aux_loss_coef": 0.01},
    {"pad_to_multiple_of": 8},
])
def test_kto_config_refuses_trl_options_it_does_not_implement(option):
    (name, _), = option.items()
    with pytest.raises(ValueError, match=rf"^GDPOKTOConfig: {name}=.* is not implemented by "
                                         "GDPOKTOTrainer: "):
        GDPOKTOConfig(output_dir="unused", use_cpu=True, **option)


def test_kto_config_defaults_and_weight_check():
    config = GDPOKTOConfig(output_dir="unused", use_cpu=True)
    assert config.exclude_belief_from_preference and config.loss_type == "kto"
    with pytest.raises(ValueError, match="must be >= 0 and not all 0"):
        GDPOKTOConfig(output_dir="unused", use_cpu=True, calibration_weight=0.0,
                      belief_nll_weight=0.0, preference_weight=0.0)


@pytest.mark.parametrize("config_class", [GDPOConfig, GDPOKTOConfig, TrainConfig])
def test_belief_loss_options_are_declared_once(config_class):
    declared = {f.name: f for f in dataclasses.fields(config_class)}
    for spec in dataclasses.fields(BeliefLossArgs):
        if spec.name not in declared:  # TrainConfig: the method decides the exclusion
            assert config_class is TrainConfig and spec.name == "exclude_belief_from_preference"
            continue
        assert declared[spec.name].metadata["help"].startswith(spec.metadata["help"])
    assert issubclass(config_class, BeliefLossArgs) == (config_class is not TrainConfig)


@pytest.mark.parametrize(("method", "expected"), [
    ("gdpo", (2.0, 1.0, 1.0, True)),
    ("dpo", (2.0, 0.0, 1.0, False)),
    ("kto", (2.0, 0.0, 1.0, False)),
    ("gdpo-kto", (2.0, 1.0, 1.0, True)),
])
def test_train_config_maps_its_belief_options_onto_the_trainer_config(method, expected):
    config = TrainConfig(method=method, train_file="unused", output_dir="unused",
                         calibration_weight=2.0, belief_nll_reduction="sum")
    arguments = trainer_arguments(config, has_eval=False)
    trl_config = (GDPOKTOConfig if "kto" in method else GDPOConfig)(**arguments)
    assert (trl_config.calibration_weight, trl_config.belief_nll_weight,
            trl_config.preference_weight, trl_config.exclude_belief_from_preference) == expected
    assert trl_config.belief_nll_reduction == "sum"
    assert trl_config.belief_loss() == config.belief_loss()


def test_sft_gets_no_belief_options():
    config = TrainConfig(method="sft", train_file="unused", output_dir="unused")
    assert not set(trainer_arguments(config, has_eval=False)) & set(BELIEF_LOSS_FIELDS)


def test_belief_options_are_checked_in_one_place():
    with pytest.raises(ValueError, match=r"^belief_nll_weight: must be >= 0, got -1\.0"):
        TrainConfig(method="gdpo", belief_nll_weight=-1.0)
    with pytest.raises(ValueError, match="calibration_normalize: must be one of full_vocab, "):
        GDPOConfig(output_dir="unused", use_cpu=True, calibration_normalize="softmax")
    config = TrainConfig(method="gdpo", calibration_weight=0.0, belief_nll_weight=0.0,
                         preference_weight=0.0)  # each >= 0: the set is checked once resolved
    with pytest.raises(ValueError, match="must be >= 0 and not all 0"):
        config.belief_loss()
