"""Loss functions against hand-computed numbers and their limiting cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from pluralign.beliefs.readout import token_logps_from_logits
from pluralign.train.losses import (
    belief_calibration_loss,
    belief_kl,
    belief_nll,
    chosen_nll,
    dpo_loss,
    gather_belief_logps,
    gdpo_kto_loss,
    gdpo_loss,
    kto_loss,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# Two examples: policy/reference summed response log-probs.
PC, PR, RC, RR = t(-10.0, -4.0), t(-12.0, -3.0), t(-11.0, -5.0), t(-11.5, -2.5)


def _expected_dpo(beta: float = 0.1) -> list[float]:
    return [
        -math.log(sigmoid(beta * ((pc - rc) - (pr - rr))))
        for pc, pr, rc, rr in zip(PC.tolist(), PR.tolist(), RC.tolist(), RR.tolist(), strict=True)
    ]


# Belief data: K = 3 full-vocabulary belief-token probabilities (sum < 1) and p*.
Q_FULL = [[0.2, 0.3, 0.1], [0.05, 0.05, 0.6]]
P_STAR = [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]
BELIEF_LOGPS = torch.log(torch.tensor(Q_FULL, dtype=torch.float64))
TARGET = torch.tensor(P_STAR, dtype=torch.float64)
# Chosen-sequence token log-probs (B=2, T=5) and the belief span (marker + description).
TOKEN_LOGPS = t(0.0, -1.0, -2.0, -3.0, -4.0).repeat(2, 1) * t(1.0, 2.0).unsqueeze(1)
BELIEF_SPAN = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1]])


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _renormalised(q: list[float]) -> list[float]:
    return [x / sum(q) for x in q]


def test_dpo_loss_matches_hand_computation():
    out = dpo_loss(PC, PR, RC, RR, beta=0.1)
    assert_close(out.losses, t(*_expected_dpo(0.1)))
    assert_close(out.chosen_rewards, t(0.1 * (-10 + 11), 0.1 * (-4 + 5)))
    assert_close(out.rejected_rewards, t(0.1 * (-12 + 11.5), 0.1 * (-3 + 2.5)))
    assert_close(out.reward_margins, t(0.15, 0.15))
    assert out.metrics["rewards/accuracies"].item() == 1.0


def test_dpo_loss_beta_and_gradient_direction():
    policy_chosen = PC.clone().requires_grad_(True)
    out = dpo_loss(policy_chosen, PR, RC, RR, beta=0.5)
    assert_close(out.losses, t(*_expected_dpo(0.5)))
    out.losses.sum().backward()
    # Raising the chosen log-prob lowers the loss: d loss / d pc = -beta * sigmoid(-beta * logit).
    logits = [
        0.5 * ((pc - rc) - (pr - rr))
        for pc, pr, rc, rr in zip(PC.tolist(), PR.tolist(), RC.tolist(), RR.tolist(), strict=True)
    ]
    assert_close(policy_chosen.grad, t(*[-0.5 * sigmoid(-x) for x in logits]))
    assert not out.chosen_rewards.requires_grad


def test_dpo_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="policy_rejected_logps has shape"):
        dpo_loss(PC, t(1.0), RC, RR)


def test_conditioned_dpo_is_invariant_to_the_shared_belief_prefix():
    # GDPO puts the chosen belief in both sequences: its log-prob is added to both sides.
    belief_logp = t(-2.7, -0.4)
    shifted = dpo_loss(PC + belief_logp, PR + belief_logp, RC, RR)
    assert_close(shifted.losses, t(*_expected_dpo()))
    # A prefix added to the chosen side only does change it (the test can fail).
    assert not torch.allclose(dpo_loss(PC + belief_logp, PR, RC, RR).losses, shifted.losses)


def test_belief_kl_full_vocab_matches_hand_computation():
    kl = belief_kl(BELIEF_LOGPS, TARGET, normalize="full_vocab")
    assert_close(kl, t(_kl(P_STAR[0], Q_FULL[0]), _kl(P_STAR[1], Q_FULL[1])))
    # Row 0: 0.5*ln(0.5/0.2) + 0.5*ln(0.5/0.3), the p*=0 term contributes nothing.
    assert kl[0].item() == pytest.approx(0.5 * math.log(2.5) + 0.5 * math.log(5 / 3))


def test_belief_kl_renormalised_matches_hand_computation():
    kl = belief_kl(BELIEF_LOGPS, TARGET, normalize="belief_tokens")
    expected = [_kl(p, _renormalised(q)) for p, q in zip(P_STAR, Q_FULL, strict=True)]
    assert_close(kl, t(*expected))


def test_full_vocab_kl_exceeds_renormalised_by_minus_log_belief_mass():
    full = belief_kl(BELIEF_LOGPS, TARGET, normalize="full_vocab")
    renorm = belief_kl(BELIEF_LOGPS, TARGET, normalize="belief_tokens")
    assert_close(full - renorm, t(-math.log(0.6), -math.log(0.7)))


def test_belief_kl_is_zero_when_q_equals_p_star_and_handles_zero_targets():
    target = t(0.25, 0.75, 0.0).unsqueeze(0)
    # q has zero mass where p* is 0: log q = -inf must not make a NaN.
    logps = torch.log(target.clone()).requires_grad_(True)
    kl = belief_kl(logps, target)
    assert_close(kl, t(0.0))
    kl.sum().backward()
    assert torch.isfinite(logps.grad).all()
    assert_close(logps.grad, t(-0.25, -0.75, 0.0).unsqueeze(0))


def test_belief_kl_padded_beliefs_are_ignored():
    mask = torch.tensor([[True, True, False], [True, True, True]])
    target = TARGET.clone()
    padded_logps = BELIEF_LOGPS.clone()
    padded_logps[0, 2] = 5.0  # garbage in a padded slot
    kl = belief_kl(padded_logps, target, normalize="belief_tokens", belief_mask=mask)
    expected_row0 = _kl([0.5, 0.5], _renormalised([0.2, 0.3]))
    assert kl[0].item() == pytest.approx(expected_row0)


def test_belief_nll_mean_and_sum():
    # Row 0 span: tokens 1,2 -> logps -1,-2. Row 1 (scaled by 2): tokens 2,3,4 -> -4,-6,-8.
    assert_close(belief_nll(TOKEN_LOGPS, BELIEF_SPAN, reduction="mean"), t(1.5, 6.0))
    assert_close(belief_nll(TOKEN_LOGPS, BELIEF_SPAN, reduction="sum"), t(3.0, 18.0))


def test_belief_nll_refuses_an_empty_span():
    empty = torch.zeros_like(BELIEF_SPAN)
    with pytest.raises(ValueError, match="no belief tokens"):
        belief_nll(TOKEN_LOGPS, empty)


def test_calibration_loss_is_kl_plus_nll_and_reports_renormalised_probs():
    out = belief_calibration_loss(BELIEF_LOGPS, TARGET, TOKEN_LOGPS, BELIEF_SPAN)
    kl = [_kl(p, q) for p, q in zip(P_STAR, Q_FULL, strict=True)]
    assert_close(out.losses, t(kl[0] + 1.5, kl[1] + 6.0))
    assert_close(out.belief_probs, torch.tensor([_renormalised(q) for q in Q_FULL]).double())
    assert out.metrics["calibration/belief_mass"].item() == pytest.approx(0.65)


def _gdpo(**weights: float):
    return gdpo_loss(PC, PR, RC, RR, BELIEF_LOGPS, TARGET, TOKEN_LOGPS, BELIEF_SPAN, **weights)


def test_gdpo_default_is_sum_of_the_three_terms():
    out = _gdpo()
    kl = [_kl(p, q) for p, q in zip(P_STAR, Q_FULL, strict=True)]
    dpo = _expected_dpo()
    assert_close(out.losses, t(kl[0] + 1.5 + dpo[0], kl[1] + 6.0 + dpo[1]))
    assert_close(out.preference_losses, t(*dpo))


def test_gdpo_without_calibration_is_belief_conditioned_dpo():
    out = _gdpo(calibration_weight=0.0, belief_nll_weight=0.0)
    assert_close(out.losses, dpo_loss(PC, PR, RC, RR).losses)


def test_gdpo_calibration_only_ablation():
    out = _gdpo(preference_weight=0.0)
    expected = belief_calibration_loss(BELIEF_LOGPS, TARGET, TOKEN_LOGPS, BELIEF_SPAN).losses
    assert_close(out.losses, expected)
    kl_only = _gdpo(preference_weight=0.0, belief_nll_weight=0.0)
    assert_close(kl_only.losses, belief_kl(BELIEF_LOGPS, TARGET))


def test_gdpo_options_change_the_loss_by_the_expected_amount():
    base = _gdpo()
    summed = _gdpo(belief_nll_reduction="sum")
    assert_close(summed.losses - base.losses, t(3.0 - 1.5, 18.0 - 6.0))
    renorm = _gdpo(normalize="belief_tokens")
    assert_close(base.losses - renorm.losses, t(-math.log(0.6), -math.log(0.7)))
    weighted = _gdpo(calibration_weight=2.0, belief_nll_weight=0.5, preference_weight=3.0)
    kl = [_kl(p, q) for p, q in zip(P_STAR, Q_FULL, strict=True)]
    dpo = _expected_dpo()
    assert_close(
        weighted.losses,
        t(*[2 * k + 0.5 * n + 3 * d for k, n, d in zip(kl, [1.5, 6.0], dpo, strict=True)]),
    )


def test_sft_weight_adds_the_chosen_token_mean_nll_as_trl_computes_it():
    # PC = (-10, -4) summed over 5 and 3 tokens: 14 / 8 = 1.75 per token, for both rows.
    counts = torch.tensor([5, 3])
    assert_close(chosen_nll(PC, counts), t(1.75, 1.75))
    out = _gdpo(sft_weight=0.5, chosen_token_counts=counts)
    assert_close(out.losses - _gdpo().losses, t(0.875, 0.875))
    assert_close(out.metrics["loss/chosen_nll"], torch.tensor(1.75, dtype=torch.float64))
    # Its gradient raises the chosen log-probs: d(mean loss)/d(PC_i) = -w / sum(counts).
    chosen = PC.clone().requires_grad_(True)
    gdpo_loss(chosen, PR, RC, RR, BELIEF_LOGPS, TARGET, TOKEN_LOGPS, BELIEF_SPAN,
              calibration_weight=0.0, belief_nll_weight=0.0, preference_weight=0.0,
              sft_weight=1.0, chosen_token_counts=counts).losses.mean().backward()
    assert_close(chosen.grad, t(-1 / 8, -1 / 8))
    with pytest.raises(ValueError, match="chosen_token_counts"):
        _gdpo(sft_weight=1.0)
    with pytest.raises(ValueError, match="token_counts has shape"):
        chosen_nll(PC, torch.tensor([1, 2, 3]))


def test_kto_loss_with_kl_baseline():
    policy, reference = t(-3.0, -6.0, -2.0), t(-4.0, -5.0, -2.5)
    desirable = torch.tensor([True, False, False])
    policy_kl, reference_kl = t(-7.0, -8.0), t(-9.0, -8.5)  # mean difference 1.25
    out = kto_loss(
        policy,
        reference,
        desirable,
        policy_kl_logps=policy_kl,
        reference_kl_logps=reference_kl,
        beta=0.2,
        desirable_weight=1.5,
        undesirable_weight=0.7,
    )
    z0 = 1.25
    expected = [
        1.5 * (1 - sigmoid(0.2 * (1.0 - z0))),
        0.7 * (1 - sigmoid(0.2 * (z0 - (-1.0)))),
        0.7 * (1 - sigmoid(0.2 * (z0 - 0.5))),
    ]
    assert_close(out.losses, t(*expected))
    assert_close(out.rewards, t(0.2, -0.2, 0.1))
    assert out.kl_baseline.item() == pytest.approx(1.25)


def test_kto_baseline_is_clamped_detached_and_optional():
    policy, reference = t(-3.0, -6.0), t(-4.0, -5.0)
    desirable = torch.tensor([True, False])
    policy_kl = t(-10.0).requires_grad_(True)
    out = kto_loss(
        policy, reference, desirable, policy_kl_logps=policy_kl, reference_kl_logps=t(-9.0)
    )
    assert out.kl_baseline.item() == 0.0  # mean KL estimate -1 is clamped at 0
    assert not out.kl_baseline.requires_grad
    no_kl = kto_loss(policy, reference, desirable)
    assert_close(no_kl.losses, t(1 - sigmoid(0.1 * 1.0), 1 - sigmoid(0.1 * 1.0)))
    with pytest.raises(ValueError, match="both"):
        kto_loss(policy, reference, desirable, policy_kl_logps=policy_kl)


def test_gdpo_kto_adds_calibration_to_kto():
    policy, reference = t(-3.0, -6.0), t(-4.0, -5.0)
    desirable = torch.tensor([True, False])
    out = gdpo_kto_loss(
        policy,
        reference,
        desirable,
        BELIEF_LOGPS,
        TARGET,
        TOKEN_LOGPS,
        BELIEF_SPAN,
        belief_nll_reduction="sum",
    )
    kl = [_kl(p, q) for p, q in zip(P_STAR, Q_FULL, strict=True)]
    kto = [1 - sigmoid(0.1 * 1.0), 1 - sigmoid(0.1 * 1.0)]
    assert_close(out.losses, t(kl[0] + 3.0 + kto[0], kl[1] + 18.0 + kto[1]))
    only_kto = gdpo_kto_loss(
        policy,
        reference,
        desirable,
        BELIEF_LOGPS,
        TARGET,
        TOKEN_LOGPS,
        BELIEF_SPAN,
        calibration_weight=0.0,
        belief_nll_weight=0.0,
    )
    assert_close(only_kto.losses, kto_loss(policy, reference, desirable).losses)


def test_log_prob_helpers_align_with_input_ids():
    logits = torch.tensor(
        [[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64
    )
    input_ids = torch.tensor([[2, 1, 0]])
    out = token_logps_from_logits(logits, input_ids)
    log_z0 = math.log(1 + math.e + math.e**2)
    log_z1 = math.log(math.e**2 + 2)
    assert_close(out, t(0.0, 1.0 - log_z0, 2.0 - log_z1).unsqueeze(0))
    belief = gather_belief_logps(logits[:, 0], torch.tensor([[2, 0]]))
    assert_close(belief, t(2.0 - log_z0, -log_z0).unsqueeze(0))


def test_kl_gradients_of_the_two_normalisations():
    # full_vocab: d KL / d log q_i = -p*_i. belief_tokens: d KL / d logit_i = q_i - p*_i.
    logps = BELIEF_LOGPS.clone().requires_grad_(True)
    belief_kl(logps, TARGET, normalize="full_vocab").sum().backward()
    assert_close(logps.grad, -TARGET)
    logps.grad = None
    belief_kl(logps, TARGET, normalize="belief_tokens").sum().backward()
    renormalised = torch.tensor([_renormalised(q) for q in Q_FULL], dtype=torch.float64)
    assert_close(logps.grad, renormalised - TARGET)


def test_half_precision_logits_are_upcast():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0]]], dtype=torch.bfloat16)
    out = token_logps_from_logits(logits, torch.tensor([[2, 1]]))
    assert out.dtype == torch.float32
    assert out[0, 1].item() == pytest.approx(1.0 - math.log(1 + math.e + math.e**2), abs=1e-6)
