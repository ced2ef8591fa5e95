"""Reward margins of a policy against its reference, split into the paper's groups of pairs."""

from __future__ import annotations

import pytest
import torch

from pluralign.beliefs.formats import IGNORE_INDEX
from pluralign.beliefs.readout import token_logps_from_logits
from pluralign.beliefs.tokenize import tokenize_example
from pluralign.data.records import MARGIN_GROUPS, is_majority_chosen, margin_group
from pluralign.data.toy import conflicting_opinions
from pluralign.eval.margins import (
    pairing_for_method,
    pairing_for_model,
    pairing_from_info,
    reward_margins,
)
from pluralign.runs import write_format_info
from pluralign.train.losses import dpo_loss


@pytest.fixture
def policy(fresh_tiny_lm):
    model, tokenizer = fresh_tiny_lm
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a nudged copy: its log-probs differ from the reference's
        for param in model.parameters():
            param.add_(0.02 * torch.randn(param.shape, generator=generator))
    return model, tokenizer


def _unpadded_logp(model, sequence) -> float:
    ids = torch.tensor([sequence["input_ids"]])
    with torch.no_grad():
        logps = token_logps_from_logits(model(input_ids=ids).logits, ids)[0]
    keep = torch.tensor([label != IGNORE_INDEX for label in sequence["labels"]])
    return float(logps[keep].sum())


def test_margins_equal_dpo_loss_rewards_computed_by_hand(policy, tiny_lm):
    model, tokenizer = policy
    reference = tiny_lm[0]
    records = conflicting_opinions(2, 3, seed=1)
    result = reward_margins(model, reference, tokenizer, records, pairing="dpo", beta=0.1,
                            batch_size=4)
    batch = records[:4]
    pairs = [tokenize_example(r, tokenizer, pairing="dpo") for r in batch]
    logps = {
        name: torch.tensor([_unpadded_logp(lm, p[part]) for p in pairs])
        for name, lm, part in (("pi_c", model, "chosen"), ("pi_r", model, "rejected"),
                               ("ref_c", reference, "chosen"), ("ref_r", reference, "rejected"))
    }
    expected = dpo_loss(logps["pi_c"], logps["pi_r"], logps["ref_c"], logps["ref_r"], beta=0.1)
    assert result.margins[:4] == pytest.approx(expected.reward_margins.tolist(), abs=1e-4)
    assert result.chosen_rewards[:4] == pytest.approx(expected.chosen_rewards.tolist(), abs=1e-4)
    assert any(abs(m) > 1e-3 for m in result.margins)


def test_margins_split_into_the_papers_three_groups(policy, tiny_lm):
    model, tokenizer = policy
    records = conflicting_opinions(4, 6, seed=2)
    result = reward_margins(model, tiny_lm[0], tokenizer, records, pairing="gdpo")
    groups = [margin_group(r) for r in records]
    assert result.groups == groups
    assert result.is_majority == [is_majority_chosen(r) for r in records]
    assert set(groups) == set(MARGIN_GROUPS)  # every kind of pair is present
    summary = result.summary
    for name in MARGIN_GROUPS:
        expected = [m for m, g in zip(result.margins, groups, strict=True) if g == name]
        assert summary[name].n == len(expected)
        assert summary[name].value == pytest.approx(sum(expected) / len(expected))
    union = [m for m, g in zip(result.margins, groups, strict=True) if g != "majority"]
    assert summary["minority"].n == len(union)  # kept: every pair that is not majority
    assert summary["minority"].value == pytest.approx(sum(union) / len(union))
    assert summary["all"].n == len(records)
    assert summary["majority"].ci_low <= summary["majority"].value <= summary["majority"].ci_high
    assert set(result.as_dict()) == {"all", "majority", "lowest_minority", "others", "minority"}


def test_a_model_against_itself_has_zero_margins(tiny_lm):
    model, tokenizer = tiny_lm
    result = reward_margins(model, model, tokenizer, conflicting_opinions(1, 3))
    assert result.margins == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_gdpo_and_dpo_pairings_differ_on_the_rejected_sequence(policy, tiny_lm):
    model, tokenizer = policy
    records = conflicting_opinions(1, 4, seed=3)
    gdpo = reward_margins(model, tiny_lm[0], tokenizer, records, pairing="gdpo")
    dpo = reward_margins(model, tiny_lm[0], tokenizer, records, pairing="dpo")
    assert gdpo.chosen_rewards == pytest.approx(dpo.chosen_rewards, abs=1e-5)
    assert gdpo.rejected_rewards != pytest.approx(dpo.rejected_rewards, abs=1e-5)


def test_pairing_follows_the_training_method():
    assert pairing_for_method("dpo") == "dpo"
    assert pairing_for_method("gdpo") == "gdpo"
    assert pairing_for_method(None) == "gdpo"


def test_the_recorded_pairing_wins_over_the_method_name(tmp_path):
    write_format_info(tmp_path, {"method": "gdpo", "pairing": "dpo"})
    assert pairing_for_model(tmp_path) == "dpo"
    with pytest.raises(ValueError, match="pairing must be one of gdpo, dpo"):
        pairing_from_info({"method": "gdpo", "pairing": "chosen"})


def test_format_files_without_a_pairing_fall_back_to_the_method(tmp_path):
    # Run folders written before training recorded the pairing name only the method.
    write_format_info(tmp_path, {"method": "dpo"})
    assert pairing_for_model(tmp_path) == "dpo"
    assert pairing_from_info({"method": "gdpo-kto"}) == "gdpo"
    assert pairing_for_model(tmp_path / "no-format-file") == "gdpo"


def test_the_margin_pairs_are_spread_over_the_file_not_its_first_prompts():
    from pluralign.eval.predict import spread_subset

    records = [f"movie{i // 200}-pair{i % 200}" for i in range(645)]
    picked = spread_subset(records, 64)
    assert len(picked) == 64 and len(set(picked)) == 64
    assert picked[0] == "movie0-pair0" and picked[-1] == records[(63 * 645) // 64]
    # Every movie contributes, where the first 64 records would all be movie 0.
    assert {p.split("-")[0] for p in picked} == {"movie0", "movie1", "movie2", "movie3"}
    assert spread_subset(records, None) == records
    assert spread_subset(records, 1000) == records
