"""Loss functions of DPO, GDPO, KTO and GDPO-KTO as pure functions of tensors.

Every function takes log-probabilities (no model), hyperparameters as keywords,
and returns per-example losses (shape ``(B,)``, with gradients) together with
detached diagnostics. Trainers reduce the losses (usually ``.mean()``).

Notation: ``B`` batch size, ``T`` sequence length, ``V`` vocabulary size,
``K`` number of beliefs. "Sequence log-probs" ``(B,)`` are sums of token
log-probs over the response span (after the belief span, through eos).
"Token log-probs" ``(B, T)`` are aligned with ``input_ids``:
``token_logps[b, t] = log p(input_ids[b, t] | input_ids[b, :t])`` (see
:func:`token_logps_from_logits`). "Belief-token log-probs" ``(B, K)`` are the
full-vocabulary log-probs of the K belief markers at the last prompt position
(see :func:`gather_belief_logps`).

GDPO (paper eq. 5-7)::

    loss = w_cal * KL(p* || q) + w_nll * (-log p(b_c | x)) + w_pref * l_pref
           [+ w_sft * batch token mean of -log pi(b_c, y_c | x)]   (RPO; TRL's "sft" loss)
    l_pref = -log sigmoid(beta * [(log pi(y_c|x,b_c) - log ref(y_c|x,b_c))
                                  - (log pi(y_r|x,b_c) - log ref(y_r|x,b_c))])

The paper writes ``KL(p_theta || p*)``; like the reference code (which produced
the paper's numbers) this module computes the forward ``KL(p* || q)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from pluralign.beliefs.readout import masked_sum, upcast_logits
from pluralign.train.belief_loss import BeliefNormalization, NLLReduction


def _check_shape(name: str, tensor: Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {shape}")


# ---------------------------------------------------------------------- log-prob helpers


def gather_belief_logps(last_prompt_logits: Tensor, belief_token_ids: Tensor) -> Tensor:
    """Full-vocabulary log-probs of the K belief tokens: ``(B, V), (B, K) -> (B, K)``.

    ``last_prompt_logits`` are the logits at the last prompt position (they
    predict the belief marker). Not renormalised over the K tokens.
    """
    logps = torch.log_softmax(upcast_logits(last_prompt_logits), dim=-1)
    return logps.gather(-1, belief_token_ids.long())


# ---------------------------------------------------------------------- DPO


@dataclass
class DPOOutput:
    """Per-example DPO losses ``(B,)`` and detached rewards ``(B,)``."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)

    @property
    def reward_margins(self) -> Tensor:
        return self.chosen_rewards - self.rejected_rewards


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> DPOOutput:
    """Sigmoid DPO (Rafailov et al. 2023; GDPO paper eq. 7). All inputs ``(B,)``.

    ``loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``; the rewards
    are ``beta * (pi - ref)``. For GDPO both sequences carry the chosen belief.
    """
    shape = tuple(policy_chosen_logps.shape)
    for name, tensor in (
        ("policy_rejected_logps", policy_rejected_logps),
        ("reference_chosen_logps", reference_chosen_logps),
        ("reference_rejected_logps", reference_rejected_logps),
    ):
        _check_shape(name, tensor, shape)
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    # logsigmoid is the numerically stable form of log(sigmoid(x)).
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    chosen_rewards = (beta * chosen_logratios).detach()
    rejected_rewards = (beta * rejected_logratios).detach()
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "loss/preference": losses.detach().mean(),
    }
    return DPOOutput(losses, chosen_rewards, rejected_rewards, metrics)


# ---------------------------------------------------------------------- calibration


def belief_log_distribution(
    belief_token_logps: Tensor,
    *,
    normalize: BeliefNormalization = "full_vocab",
    belief_mask: Tensor | None = None,
) -> Tensor:
    """``log q`` over the K beliefs, ``(B, K) -> (B, K)``.

    ``"full_vocab"`` (reference code): the full-vocabulary log-probs as they are
    (they sum to less than 1). ``"belief_tokens"``: renormalised over the K.
    ``belief_mask`` ``(B, K)`` marks real beliefs when rows are padded to a common K;
    padded entries get ``-inf``.
    """
    if normalize not in ("full_vocab", "belief_tokens"):
        raise ValueError(f"normalize must be 'full_vocab' or 'belief_tokens', got {normalize!r}")
    log_q = belief_token_logps
    if belief_mask is not None:
        log_q = log_q.masked_fill(~belief_mask.bool(), float("-inf"))
    if normalize == "belief_tokens":
        log_q = log_q - torch.logsumexp(log_q, dim=-1, keepdim=True)
    return log_q


def belief_kl(
    belief_token_logps: Tensor,
    target_probs: Tensor,
    *,
    normalize: BeliefNormalization = "full_vocab",
    belief_mask: Tensor | None = None,
) -> Tensor:
    """Forward ``KL(p* || q) = sum_i p*_i (log p*_i - log q_i)`` per example: ``(B, K) -> (B,)``.

    Terms with ``p*_i = 0`` are 0 (the limit of ``p log p``), whatever ``q_i`` is.
    With ``normalize="full_vocab"`` ``q`` sums to ``m < 1`` and the value is the
    renormalised KL plus ``-log m``: it also pushes mass onto the belief tokens.
    """
    _check_shape("target_probs", target_probs, tuple(belief_token_logps.shape))
    log_q = belief_log_distribution(
        belief_token_logps, normalize=normalize, belief_mask=belief_mask
    )
    target = target_probs.to(log_q.dtype)
    support = target > 0
    # Fill outside the support before multiplying so that 0 * (-inf) never makes a NaN.
    safe_log_q = log_q.masked_fill(~support, 0.0)
    safe_log_p = torch.log(target.masked_fill(~support, 1.0))
    terms = torch.where(support, target * (safe_log_p - safe_log_q), torch.zeros_like(target))
    return terms.sum(dim=-1)


def belief_nll(
    token_logps: Tensor, belief_span_mask: Tensor, *, reduction: NLLReduction = "mean"
) -> Tensor:
    """NLL of the belief span (marker + description), ``(B, T), (B, T) -> (B,)``.

    ``"mean"`` (reference code): minus the mean token log-prob over the span.
    ``"sum"`` (paper eq. 6): ``-log p(b|x)``, the summed token log-probs.
    A row whose span is empty is an error (it would silently train nothing).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"belief_nll_reduction must be 'mean' or 'sum', got {reduction!r}")
    _check_shape("belief_span_mask", belief_span_mask, tuple(token_logps.shape))
    counts = belief_span_mask.to(token_logps.dtype).sum(dim=-1)
    if bool((counts == 0).any()):
        raise ValueError("belief_span_mask has a row with no belief tokens")
    total = masked_sum(token_logps, belief_span_mask)
    return -total / counts if reduction == "mean" else -total


@dataclass
class CalibrationOutput:
    """Per-example calibration losses ``(B,)`` and detached parts.

    ``belief_probs`` ``(B, K)`` is the model's belief distribution renormalised
    over the K beliefs (the one the JSD metric reads).
    """

    losses: Tensor
    kl: Tensor
    belief_nll: Tensor
    belief_probs: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


def belief_calibration_loss(
    belief_token_logps: Tensor,
    target_probs: Tensor,
    chosen_token_logps: Tensor,
    chosen_belief_mask: Tensor,
    *,
    normalize: BeliefNormalization = "full_vocab",
    belief_nll_reduction: NLLReduction = "mean",
    kl_weight: float = 1.0,
    nll_weight: float = 1.0,
    belief_mask: Tensor | None = None,
) -> CalibrationOutput:
    """Belief calibration (paper eq. 6): ``kl_weight * KL(p* || q) + nll_weight * NLL(b_c)``.

    Shapes: ``belief_token_logps`` and ``target_probs`` ``(B, K)``;
    ``chosen_token_logps`` and ``chosen_belief_mask`` ``(B, T)`` (token log-probs
    of the chosen sequence and its belief-span mask).
    """
    kl = belief_kl(belief_token_logps, target_probs, normalize=normalize, belief_mask=belief_mask)
    nll = belief_nll(chosen_token_logps, chosen_belief_mask, reduction=belief_nll_reduction)
    losses = kl_weight * kl + nll_weight * nll
    with torch.no_grad():
        belief_probs = belief_log_distribution(
            belief_token_logps, normalize="belief_tokens", belief_mask=belief_mask
        ).exp()
        full = belief_log_distribution(belief_token_logps, belief_mask=belief_mask)
        belief_mass = full.exp().sum(dim=-1)
    metrics = {
        "calibration/kl": kl.detach().mean(),
        "calibration/belief_nll": nll.detach().mean(),
        "calibration/belief_mass": belief_mass.mean(),
    }
    return CalibrationOutput(losses, kl.detach(), nll.detach(), belief_probs, metrics)


# ---------------------------------------------------------------------- GDPO


@dataclass
class GDPOOutput:
    """Per-example GDPO losses ``(B,)`` with their detached parts."""

    losses: Tensor
    preference_losses: Tensor
    kl: Tensor
    belief_nll: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    belief_probs: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)

    @property
    def reward_margins(self) -> Tensor:
        return self.chosen_rewards - self.rejected_rewards


def gdpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    belief_token_logps: Tensor,
    target_probs: Tensor,
    chosen_token_logps: Tensor,
    chosen_belief_mask: Tensor,
    *,
    beta: float = 0.1,
    calibration_weight: float = 1.0,
    belief_nll_weight: float = 1.0,
    preference_weight: float = 1.0,
    normalize: BeliefNormalization = "full_vocab",
    belief_nll_reduction: NLLReduction = "mean",
    belief_mask: Tensor | None = None,
    sft_weight: float = 0.0,
    chosen_token_counts: Tensor | None = None,
) -> GDPOOutput:
    """GDPO (paper eq. 5): calibration + belief NLL + belief-conditioned DPO.

    ``loss = calibration_weight * KL(p* || q) + belief_nll_weight * NLL(b_c)
    + preference_weight * DPO``. The four sequence log-probs ``(B,)`` are of the
    responses with *both* sequences conditioned on the chosen belief. The other
    inputs are those of :func:`belief_calibration_loss`. Weights ``(0, 0, 1)``
    give belief-conditioned DPO; ``(1, 1, 0)`` the calibration-only ablation.

    ``sft_weight > 0`` adds RPO's NLL term (TRL's ``loss_type=["sigmoid", "sft"]`` with
    ``loss_weights=[1, sft_weight]``): :func:`chosen_nll` of ``policy_chosen_logps`` over
    ``chosen_token_counts`` ``(B,)``, the tokens those log-probs sum.
    """
    preference = dpo_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        beta=beta,
    )
    calibration = belief_calibration_loss(
        belief_token_logps,
        target_probs,
        chosen_token_logps,
        chosen_belief_mask,
        normalize=normalize,
        belief_nll_reduction=belief_nll_reduction,
        kl_weight=calibration_weight,
        nll_weight=belief_nll_weight,
        belief_mask=belief_mask,
    )
    losses = calibration.losses + preference_weight * preference.losses
    metrics = {**preference.metrics, **calibration.metrics}
    if sft_weight:
        if chosen_token_counts is None:
            raise ValueError("sft_weight > 0 needs chosen_token_counts")
        nll = chosen_nll(policy_chosen_logps, chosen_token_counts)
        losses = losses + sft_weight * nll
        metrics["loss/chosen_nll"] = nll.detach().mean()
    return GDPOOutput(
        losses=losses,
        preference_losses=preference.losses.detach(),
        kl=calibration.kl,
        belief_nll=calibration.belief_nll,
        chosen_rewards=preference.chosen_rewards,
        rejected_rewards=preference.rejected_rewards,
        belief_probs=calibration.belief_probs,
        metrics={**metrics, "loss/total": losses.detach().mean()},
    )


def chosen_nll(chosen_logps: Tensor, token_counts: Tensor) -> Tensor:
    """The chosen sequences' NLL per token over the whole batch, ``-sum(chosen_logps) /
    sum(token_counts)``, repeated for each example: ``(B,), (B,) -> (B,)``.

    RPO's term (Pang et al. 2024, eq. 2), as TRL's ``"sft"`` loss type computes it (a token
    mean over the batch, so its per-example mean is that value). It keeps DPO from lowering
    the chosen likelihood along with the rejected one, which on a small model shows as
    looping text.
    """
    _check_shape("token_counts", token_counts, tuple(chosen_logps.shape))
    total = token_counts.to(chosen_logps.dtype).sum().clamp(min=1)
    return (-chosen_logps.sum() / total).expand(chosen_logps.shape)


# ---------------------------------------------------------------------- KTO


@dataclass
class KTOOutput:
    """Per-example KTO losses ``(B,)``, detached rewards ``(B,)`` and the KL baseline ``z0``."""

    losses: Tensor
    rewards: Tensor
    kl_baseline: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


def kto_loss(
    policy_logps: Tensor,
    reference_logps: Tensor,
    desirable: Tensor,
    *,
    policy_kl_logps: Tensor | None = None,
    reference_kl_logps: Tensor | None = None,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KTOOutput:
    """KTO (Ethayarajh et al. 2024; GDPO paper eq. 8-11), one label per example.

    ``r = log pi(y|x) - log ref(y|x)`` ``(B,)``; ``desirable`` ``(B,)`` bool.
    ``z0 = max(0, mean(policy_kl_logps - reference_kl_logps))`` over mismatched
    (prompt, response) pairs, detached (no gradient flows through the baseline);
    0 when no KL log-probs are given. Losses:
    ``desirable_weight * (1 - sigmoid(beta * (r - z0)))`` for desirable examples,
    ``undesirable_weight * (1 - sigmoid(beta * (z0 - r)))`` for undesirable ones.
    Rewards are ``beta * r``.
    """
    _check_shape("reference_logps", reference_logps, tuple(policy_logps.shape))
    _check_shape("desirable", desirable, tuple(policy_logps.shape))
    if (policy_kl_logps is None) != (reference_kl_logps is None):
        raise ValueError("give both policy_kl_logps and reference_kl_logps, or neither")
    if policy_kl_logps is not None and reference_kl_logps is not None:
        kl_baseline = (policy_kl_logps - reference_kl_logps).mean().clamp(min=0).detach()
    else:
        kl_baseline = policy_logps.new_zeros(())
    logratios = policy_logps - reference_logps
    is_desirable = desirable.bool()
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl_baseline)))
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (kl_baseline - logratios)))
    losses = torch.where(is_desirable, desirable_losses, undesirable_losses)
    rewards = (beta * logratios).detach()
    metrics = {"kto/kl_baseline": kl_baseline, "loss/preference": losses.detach().mean()}
    if bool(is_desirable.any()):
        metrics["rewards/desirable"] = rewards[is_desirable].mean()
    if bool((~is_desirable).any()):
        metrics["rewards/undesirable"] = rewards[~is_desirable].mean()
    return KTOOutput(losses, rewards, kl_baseline, metrics)


@dataclass
class GDPOKTOOutput:
    """Per-example GDPO-KTO losses ``(B,)`` with their detached parts."""

    losses: Tensor
    preference_losses: Tensor
    kl: Tensor
    belief_nll: Tensor
    rewards: Tensor
    kl_baseline: Tensor
    belief_probs: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


def gdpo_kto_loss(
    policy_logps: Tensor,
    reference_logps: Tensor,
    desirable: Tensor,
    belief_token_logps: Tensor,
    target_probs: Tensor,
    token_logps: Tensor,
    belief_span_mask: Tensor,
    *,
    policy_kl_logps: Tensor | None = None,
    reference_kl_logps: Tensor | None = None,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    calibration_weight: float = 1.0,
    belief_nll_weight: float = 1.0,
    preference_weight: float = 1.0,
    normalize: BeliefNormalization = "full_vocab",
    belief_nll_reduction: NLLReduction = "mean",
    belief_mask: Tensor | None = None,
) -> GDPOKTOOutput:
    """GDPO-KTO (paper appendix J, eq. 12): KTO conditioned on the desirable belief + calibration.

    Every sequence, desirable or not, carries the *desirable* belief, so
    ``policy_logps``/``reference_logps`` ``(B,)`` are response log-probs given
    ``b_desirable``, and the belief NLL (over ``token_logps``/``belief_span_mask``
    ``(B, T)``) is that of the desirable belief. ``loss = calibration_weight * KL
    + belief_nll_weight * NLL + preference_weight * KTO``.
    """
    preference = kto_loss(
        policy_logps,
        reference_logps,
        desirable,
        policy_kl_logps=policy_kl_logps,
        reference_kl_logps=reference_kl_logps,
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
    )
    calibration = belief_calibration_loss(
        belief_token_logps,
        target_probs,
        token_logps,
        belief_span_mask,
        normalize=normalize,
        belief_nll_reduction=belief_nll_reduction,
        kl_weight=calibration_weight,
        nll_weight=belief_nll_weight,
        belief_mask=belief_mask,
    )
    losses = calibration.losses + preference_weight * preference.losses
    return GDPOKTOOutput(
        losses=losses,
        preference_losses=preference.losses.detach(),
        kl=calibration.kl,
        belief_nll=calibration.belief_nll,
        rewards=preference.rewards,
        kl_baseline=preference.kl_baseline,
        belief_probs=calibration.belief_probs,
        metrics={**preference.metrics, **calibration.metrics, "loss/total": losses.detach().mean()},
    )
