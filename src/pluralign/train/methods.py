"""Training methods as data.

Each method is a :class:`Method` value registered by name in
:data:`pluralign.registry.METHODS`. Trainers read its fields (which trainer
family, which belief the rejected sequence carries, the loss weights) and
never branch on the method's name, so an ablation or a new variant is one
more registration, not another ``if`` in a trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pluralign.beliefs.formats import Pairing
from pluralign.registry import METHODS

Family = Literal["sft", "preference", "kto"]


@dataclass(frozen=True)
class Method:
    """What a method trains; the paper's defaults for its loss weights."""

    name: str
    family: Family
    summary: str
    #: Which belief the rejected sequence carries: "chosen" conditions both
    #: responses on the chosen belief (GDPO), "rejected" is plain DPO.
    rejected_belief: Literal["chosen", "rejected"] = "rejected"
    calibration_weight: float = 0.0
    belief_nll_weight: float = 0.0
    preference_weight: float = 1.0
    #: Leave the belief span out of the preference term (it is shared by the
    #: chosen and rejected sequences when both carry the chosen belief).
    exclude_belief_from_preference: bool = False
    #: SFT on accepted beliefs drawn uniformly per prompt (the paper's baseline).
    uniform_beliefs: bool = False
    #: In-context fine-tuning: ``TrainConfig.icf_shots`` records of other questions of the
    #: training file go before each prompt's ``<Q>`` (records with a context keep theirs),
    #: and final/ records the shot count and pool so that evaluation prompts the same way.
    in_context: bool = False

    @property
    def uses_belief_terms(self) -> bool:
        return self.calibration_weight > 0 or self.belief_nll_weight > 0

    @property
    def pairing(self) -> Pairing:
        """:attr:`rejected_belief` as the tokeniser names it (``pairing=``): "gdpo" when the
        rejected sequence carries the chosen belief, "dpo" when it carries its own. Training
        records it in ``final/pluralign_format.json``, where evaluation reads it."""
        return "gdpo" if self.rejected_belief == "chosen" else "dpo"


def _register(method: Method) -> Method:
    return METHODS.register(method.name, method, help=method.summary)


SFT = _register(Method(
    "sft", "sft", "Supervised fine-tuning on the chosen belief and its response.",
))
UNIFORM_SFT = _register(Method(
    "uniform-sft", "sft",
    "SFT on accepted beliefs drawn uniformly per prompt (the paper's Uniform SFT baseline).",
    uniform_beliefs=True,
))
ICF = _register(Method(
    "icf", "sft",
    "In-context fine-tuning (the paper's ICF baseline): SFT with icf_shots examples of other "
    "questions before each prompt's <Q>; a record's own context column is kept.",
    in_context=True,
))
DPO = _register(Method(
    "dpo", "preference",
    "DPO on whole answers; the rejected answer carries the rejected belief.",
))
GDPO = _register(Method(
    "gdpo", "preference",
    "GDPO: belief calibration (KL to p*) + chosen-belief NLL + DPO conditioned on the chosen "
    "belief.",
    rejected_belief="chosen", calibration_weight=1.0, belief_nll_weight=1.0,
    exclude_belief_from_preference=True,
))
GDPO_CALIBRATION = _register(Method(
    "gdpo-calibration", "preference",
    "GDPO ablation: the belief calibration term only (KL to p* + belief NLL), no preference term.",
    rejected_belief="chosen", calibration_weight=1.0, belief_nll_weight=1.0,
    preference_weight=0.0, exclude_belief_from_preference=True,
))
GDPO_CONDITIONED = _register(Method(
    "gdpo-conditioned", "preference",
    "GDPO ablation: the belief-conditioned DPO term only, no calibration.",
    rejected_belief="chosen", exclude_belief_from_preference=True,
))
KTO = _register(Method(
    "kto", "kto",
    "KTO on unpaired answers; an undesirable answer carries its own (rejected) belief.",
))
GDPO_KTO = _register(Method(
    "gdpo-kto", "kto",
    "GDPO-KTO: KTO with rewards conditioned on the desirable belief + belief calibration.",
    rejected_belief="chosen", calibration_weight=1.0, belief_nll_weight=1.0,
    exclude_belief_from_preference=True,
))


def get_method(name: str) -> Method:
    """The registered method ``name`` (unknown names list the closest ones)."""
    return METHODS.get(name)
