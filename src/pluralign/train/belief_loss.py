"""``BeliefLossArgs``: the belief-loss options, declared and checked once.

:class:`~pluralign.train.preference.GDPOConfig` and
:class:`~pluralign.train.kto.GDPOKTOConfig` inherit the dataclass (their
fields come after TRL's, as the options of the trainers they configure).
:class:`~pluralign.train.config.TrainConfig` declares the same fields with the
help of :func:`belief_loss_help` instead, since its weights are optional (unset: the
method's, :meth:`TrainConfig.weights`) and the method decides
``exclude_belief_from_preference``; :meth:`TrainConfig.belief_loss` resolves
them into one ``BeliefLossArgs``, which :mod:`pluralign.train.arguments`
hands to the trainer's config. This module imports no torch or TRL: the CLI
reads it to list ``pluralign train --fields``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

BeliefNormalization = Literal["full_vocab", "belief_tokens"]
NLLReduction = Literal["mean", "sum"]

#: The three loss weights, in the order :meth:`TrainConfig.weights` returns them.
BELIEF_WEIGHTS = ("calibration_weight", "belief_nll_weight", "preference_weight")
#: The allowed values of the options that take one of a few names.
BELIEF_CHOICES: dict[str, tuple[str, ...]] = {
    "calibration_normalize": get_args(BeliefNormalization),
    "belief_nll_reduction": get_args(NLLReduction),
}


@dataclass
class BeliefLossArgs:
    """The GDPO loss weights and options. The defaults are GDPO's loss weighted 1:1:1 with
    the DPO log-probs over the whole completion (belief span and response)."""

    calibration_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the belief calibration term, KL(p* || q) at the last "
                          "prompt position."},
    )
    belief_nll_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the chosen belief's NLL (belief token + text)."},
    )
    preference_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the preference term: the (belief-conditioned) DPO or KTO "
                          "loss."},
    )
    calibration_normalize: BeliefNormalization = field(
        default="full_vocab",
        metadata={"help": "full_vocab: log-probs of the K belief tokens under the "
                          "full-vocabulary softmax (the reference code; also pushes mass onto "
                          "belief tokens). belief_tokens: renormalise over the K tokens."},
    )
    belief_nll_reduction: NLLReduction = field(
        default="mean",
        metadata={"help": "Belief NLL over its tokens: mean (reference code) or sum (paper)."},
    )
    exclude_belief_from_preference: bool = field(
        default=False,
        metadata={"help": "Leave the belief span out of the preference log-probs (response "
                          "only; rewards conditioned on the belief). Off: the whole completion "
                          "is scored, as plain DPO and KTO do. With pairing='gdpo' the shared "
                          "span cancels in the DPO margin, so either gives GDPO's loss; KTO's "
                          "per-row reward does not cancel it."},
    )

    def __post_init__(self) -> None:
        # Cooperative: in GDPOConfig and GDPOKTOConfig this runs TRL's own __post_init__
        # (next in the method resolution order) before the belief checks, as before.
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        check_belief_loss(self)

    def belief_loss(self) -> BeliefLossArgs:
        """These options alone (from a TRL config that inherits them, too)."""
        return BeliefLossArgs(**{name: getattr(self, name) for name in BELIEF_LOSS_FIELDS})


#: The names of :class:`BeliefLossArgs`' fields.
BELIEF_LOSS_FIELDS = tuple(f.name for f in fields(BeliefLossArgs))
_FIELDS = {f.name: f for f in fields(BeliefLossArgs)}


def belief_loss_help(name: str, note: str = "") -> dict[str, Any]:
    """The ``metadata`` of :class:`BeliefLossArgs`' option ``name``, its help followed by
    ``note``: for a config that declares the option with another default."""
    metadata = dict(_FIELDS[name].metadata)
    metadata["help"] = f"{metadata['help']} {note}".strip()
    return metadata


def check_weight(name: str, value: float) -> None:
    """One loss weight on its own: it must be >= 0."""
    if value < 0:
        raise ValueError(f"{name}: must be >= 0, got {value}")


def check_choices(config: Any) -> None:
    """``calibration_normalize`` and ``belief_nll_reduction`` name a known option."""
    for name, allowed in BELIEF_CHOICES.items():
        value = getattr(config, name)
        if value not in allowed:
            raise ValueError(f"{name}: must be one of {', '.join(allowed)}, got {value!r}")


def check_belief_loss(config: Any) -> None:
    """The three loss weights are >= 0 and not all 0; the named options are known."""
    weights = tuple(getattr(config, name) for name in BELIEF_WEIGHTS)
    if min(weights) < 0 or max(weights) == 0:
        raise ValueError(
            "calibration_weight, belief_nll_weight and preference_weight must be >= 0 and "
            f"not all 0, got {weights}"
        )
    check_choices(config)
