"""``GDPOConfig``: TRL's ``DPOConfig`` plus the belief-loss options, and the checks that keep
TRL options :class:`~pluralign.train.preference.GDPOTrainer` does not implement from being
silently ignored (shared with the KTO trainer's config)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, get_args

from trl import DPOConfig

from pluralign.beliefs.formats import Pairing, check_format_name
from pluralign.train.belief_loss import BeliefLossArgs
from pluralign.train.reference_cache import LAZY_REF_HELP

#: TRL ``DPOConfig`` options that :class:`GDPOTrainer` does not implement: the reason, and the
#: values besides TRL's default that mean the same. Any other value is refused.
UNIMPLEMENTED_DPO_OPTIONS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "label_smoothing": ("the sigmoid term has no label smoothing, as cDPO or robust DPO have", ()),
    "f_divergence_type": ("the DPO term is the reverse-KL one", ()),
    "f_alpha_divergence_coef": ("it only applies to an f_divergence_type of alpha_divergence",
                                ()),
    "ld_alpha": ("response log-probs are summed, without LD-DPO's length weighting", ()),
    "use_weighting": ("pairs are not WPO-weighted", ()),
    "discopop_tau": ("it only applies to the discopop loss", ()),
    "router_aux_loss_coef": ("the MoE router auxiliary loss is not added to the loss", (0.0,)),
    "truncation_mode": ("the belief collator keeps the start of each sequence, where the belief "
                        "span is", ()),
    "pad_to_multiple_of": ("the belief collator pads to the longest row of the batch",
                           (None, "none", "null")),
}


#: The ``loss_type`` lists :class:`GDPOTrainer` implements: sigmoid DPO, alone or with TRL's
#: ``"sft"`` term (the chosen sequence's NLL: RPO).
IMPLEMENTED_LOSS_TYPES = (("sigmoid",), ("sigmoid", "sft"))


def loss_types(config: Any) -> list[str]:
    """``config.loss_type`` as a list: TRL takes one name or a list (and makes a list of it in
    its own ``__post_init__``, which the checks run before)."""
    return [config.loss_type] if isinstance(config.loss_type, str) else list(config.loss_type)


def check_loss_types(config: Any) -> None:
    """``loss_type`` is one of :data:`IMPLEMENTED_LOSS_TYPES` and ``loss_weights``, when set,
    has one weight per type, the sigmoid term's at 1 (``preference_weight`` sets that)."""
    name = type(config).__name__
    types = loss_types(config)
    if tuple(types) not in IMPLEMENTED_LOSS_TYPES:
        raise ValueError(f"{name}: loss_type={config.loss_type!r} is not implemented by "
                         "GDPOTrainer: the preference term is the sigmoid DPO loss, alone or "
                         "with TRL's 'sft' term (loss_type=['sigmoid', 'sft']: RPO)")
    weights = config.loss_weights
    if weights is None:
        return
    if len(weights) != len(types):
        raise ValueError(f"{name}: loss_weights={weights!r} needs one weight per loss_type "
                         f"{types}")
    if weights[0] != 1.0:
        raise ValueError(f"{name}: loss_weights={weights!r} is not implemented by GDPOTrainer: "
                         "the sigmoid term's weight is preference_weight; leave loss_weights[0] "
                         "at 1.0")


def _trl_default(config_class: type, name: str) -> Any:
    spec = next(f for f in fields(config_class) if f.name == name)
    return spec.default_factory() if spec.default is MISSING else spec.default


def refuse_unimplemented_options(config: Any, trl_class: type, trainer: str,
                                 options: dict[str, tuple[str, tuple[Any, ...]]]) -> None:
    """Raise ``ValueError`` naming the first of ``options`` that ``config`` sets away from
    ``trl_class``'s default: TRL would honour it, pluralign's loss would silently ignore it."""
    for name, (why, same_as_default) in options.items():
        value, default = getattr(config, name), _trl_default(trl_class, name)
        if value == default or any(value == same for same in same_as_default):
            continue
        raise ValueError(f"{type(config).__name__}: {name}={value!r} is not implemented by "
                         f"{trainer}: {why}; leave it at its default {default!r}")


def bf16_off_where_unsupported(config: Any) -> None:
    """Leave ``bf16`` unset (TRL: on) off where transformers would refuse it: a machine
    without a bf16 accelerator and no ``use_cpu=True``. TRL's default otherwise fails on
    every CPU-only machine; an explicit ``bf16=True`` still gets transformers' error."""
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    if config.bf16 is None and not config.fp16 and not config.use_cpu and not (
            is_torch_bf16_gpu_available() or is_torch_xla_available()):
        config.bf16 = False


@dataclass
class GDPOConfig(BeliefLossArgs, DPOConfig):
    """``DPOConfig`` plus the GDPO loss weights and options (sigmoid DPO only).

    With the defaults the trainer computes GDPO's loss on data built with
    ``pairing="gdpo"``: calibration, belief NLL and belief-conditioned sigmoid
    DPO weighted 1:1:1, the DPO log-probs taken over the whole completion
    (belief span and response). Both sequences of a GDPO pair carry the chosen
    belief after the same prompt, so the span's log-ratio cancels in the DPO
    margin: ``exclude_belief_from_preference=True`` (what the ``gdpo`` method
    sets, the paper's response-only log-probs) gives the same loss. Plain DPO
    is the same trainer with ``calibration_weight=0`` and ``belief_nll_weight=0``
    on data built with ``pairing="dpo"``: sigmoid DPO on each whole answer,
    its belief included, as TRL's ``DPOTrainer`` computes it.

    TRL's ``loss_type=["sigmoid", "sft"]`` (with ``loss_weights=[1, w]``) adds the
    chosen sequence's NLL as TRL computes it (RPO). TRL options the trainer does
    not implement (other loss types, label smoothing, f-divergences, LD-DPO, WPO
    weighting, ...; see
    :data:`UNIMPLEMENTED_DPO_OPTIONS`) are refused with a ``ValueError`` naming
    the option when set away from TRL's default, instead of being ignored. The
    belief options and their checks are
    :class:`~pluralign.train.belief_loss.BeliefLossArgs`'.

    ``sequence_format``, ``pairing`` and ``group_in_prompt`` say how the trainer
    tokenises a text dataset (they are not read for a pre-tokenised one). Unlike TRL's
    ``DPOConfig``, gradient checkpointing is off by default (it turns
    ``share_prefix`` off), and ``bf16`` left unset is off on a machine without a
    bf16 accelerator unless ``use_cpu=True`` (where TRL's default fails).
    """

    sequence_format: str = field(
        default="separated",
        metadata={"help": "Sequence format of a text dataset (`pluralign ls sequence-formats`): "
                          "separated (default: <Q>{prompt}<A><|belief|>{class}<{description}>"
                          "{response}; the trainer adds the <|belief|> token to the tokenizer "
                          "and the model's embeddings), separated-options, "
                          "separated-marked-options, marker-options, paper, reviews, "
                          "reviews-paper. Not read for pre-tokenised datasets."},
    )
    pairing: str = field(
        default="gdpo",
        metadata={"help": "Which belief the rejected sequence of a text dataset carries: gdpo "
                          "(the chosen one: GDPO's belief-conditioned preference) or dpo (its "
                          "own rejected belief: plain DPO on whole answers, with "
                          "calibration_weight=0 and belief_nll_weight=0). Not read for "
                          "pre-tokenised datasets."},
    )
    group_in_prompt: bool = field(
        default=False,
        metadata={"help": "Name each row's group in its prompt (a 'Group: NAME' line right "
                          "before the question), so one model learns a belief distribution per "
                          "group from a dataset of several groups; save_model records it in "
                          "pluralign_format.json, and evaluation, generation and serving then "
                          "ask for a group. Off: one model per group, as in the paper (a "
                          "dataset whose groups give one question different targets is warned "
                          "about). Not read for pre-tokenised datasets."},
    )
    # None (off, resolved by transformers): TRL's True would turn share_prefix off, and an
    # explicit False would be transformers' deprecated alias, warned about on every config.
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Alias of activation_checkpointing (trade compute for memory). Off by "
                          "default, unlike TRL's DPOConfig: it disables the key/value cache from "
                          "which share_prefix runs each pair's shared prefix once, so turning it "
                          "on also turns share_prefix off (with a warning)."},
    )
    lazy_ref_log_probs: bool = field(default=True, metadata=LAZY_REF_HELP)
    compact_logprobs: bool = field(
        default=True,
        metadata={"help": "Project only the scored (response) positions through the LM head, "
                          "with pluralign's chunked log-softmax; False uses TRL's fused head, "
                          "which scores every position on CPU. Same loss within float tolerance."},
    )
    share_prefix: bool = field(
        default=True,
        metadata={"help": "Run each pair's shared prefix (prompt, and for GDPO the chosen belief) "
                          "once and continue chosen and rejected from its key/value cache. Needs "
                          "compact_logprobs; off under gradient checkpointing. Same loss within "
                          "float tolerance. It saves compute, which a CPU step is bound by; on a "
                          "GPU a small model's step is bound by kernel launches and sharing "
                          "(two passes) was 1.7x slower (BENCHMARKS.md, 'Training steps on a "
                          "GPU'): turn it off there."},
    )

    @property
    def chosen_nll_weight(self) -> float:
        """The weight of TRL's ``"sft"`` loss type (RPO's chosen NLL); 0 without it."""
        types = loss_types(self)
        if "sft" not in types:
            return 0.0
        return float(self.loss_weights[types.index("sft")]) if self.loss_weights else 1.0

    def __post_init__(self) -> None:
        # Before TRL's own checks, which would warn about (or resolve) some refused values.
        refuse_unimplemented_options(self, DPOConfig, "GDPOTrainer", UNIMPLEMENTED_DPO_OPTIONS)
        check_loss_types(self)
        bf16_off_where_unsupported(self)
        super().__post_init__()  # TRL's checks, then BeliefLossArgs' (one place)
        check_format_name(self.sequence_format, allow_auto=False)
        if self.pairing not in get_args(Pairing):
            raise ValueError(f"pairing: must be one of {', '.join(get_args(Pairing))}, got "
                             f"{self.pairing!r}")
        if self.share_prefix and not self.compact_logprobs:
            raise ValueError("share_prefix needs compact_logprobs=True (or set share_prefix=False)")
        if self.share_prefix and not self.disable_dropout:
            # One dropout mask on the shared prefix is not two independent ones.
            raise ValueError("share_prefix needs disable_dropout=True; set share_prefix=False to "
                             "train with dropout")
