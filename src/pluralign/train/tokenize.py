"""Tokenise group preference records into chosen/rejected sequences with exact offsets.

A sequence is ``prompt | belief marker | belief description | response | eos``.
Each part is tokenised on its own and the token ids are concatenated, so the
offsets of the marker, the description and the response are known when the
sequence is built. They are never recovered afterwards by searching for a
token such as ``>``: BPE merges (``>"``, ``>.``) and review text (``<br />``)
make such searches fail (the bug of the GDPO reference code).

Prompt formats (:class:`SequenceFormat`, registered by name in
:data:`pluralign.registry.SEQUENCE_FORMATS`):

* ``separated`` (the default where records name no format):
  ``<Q>{prompt}<A><|belief|>{class}<{description}>{response}<eos>``.
  The dedicated separator token ``<|belief|>`` (added to the tokenizer by
  :func:`add_format_tokens`) ends every prompt, so the token before the belief
  slot occurs nowhere else in a sequence;
* ``separated-options``: ``separated`` with the question's answer options listed
  before it, ``<Q>Options: 1 = Oppose; 2 = Support.\n{prompt}<A><|belief|>...``
  (``{options}`` in the prompt template, each option written by
  ``option_template``). A wording such as "For or against?" does not say which
  of several scales the answers use; with the options in view the model writes
  its class's own description;
* ``paper``: the paper's exact ``<Q>{prompt}<A>{class}<{description}>{response}<eos>``.
  Its prompt ends in ``>``, and so does every description: the calibration
  terms teach "a belief marker follows ``>``", and trained models write another
  marker after the description (``4<Yes>4<Yes>...``). Kept for reproductions;
* ``reviews``: ``<Q>{prompt}<A><|belief|>{rating}{review}<eos>``, the review task's
  ``{rating}{review}`` answer (no description) behind the same separator, so the
  token before the belief slot occurs nowhere else here either (review text holds
  ``>``: ``<br />``, ``->``). The reviews builder names it in every record's
  ``metadata["sequence_format"]``, which training with ``sequence_format: auto``
  (the default) follows;
* ``reviews-paper``: the reference code's exact ``<Q>{prompt}<A>{rating}{review}<eos>``;
* :data:`REVIEW_FORMAT`: ``{prompt}{rating}{review}<eos>`` with a bare prompt (unregistered);
* chat (``chat_template=True``, combines with either): the prompt rendered with
  the tokenizer's chat template (``add_generation_prompt=True``), then the
  separator if any, marker, description and response.

Belief markers: ``"digit"`` uses the class id as text (``"3"``; one token in
GPT-2 and SmolLM2); ``"special"`` uses dedicated added tokens ``<|belief_3|>``
(see :func:`add_belief_tokens`). A marker that is not exactly one token in the
tokenizer at hand raises :class:`BeliefMarkerError`.

Offsets are 0-based and spans are half-open ``(start, end)``. The belief
distribution is read from the logits at position ``prompt_length - 1`` (the
last prompt token), which predict the marker at ``marker_position ==
prompt_length``. Everything returned is plain Python lists, ints and tuples
that a collator can pad.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pluralign.registry import SEQUENCE_FORMATS

if TYPE_CHECKING:
    from pluralign.data.records import GroupPreferenceExample

MarkerMode = Literal["digit", "special"]
Pairing = Literal["gdpo", "dpo"]

#: Label value that loss functions ignore (the prompt part of ``labels``).
IGNORE_INDEX = -100

#: Class ids of the paper's opinion beliefs (0 = no stance ... 5 = strongest agreement).
DEFAULT_CLASS_IDS = tuple(range(6))


class BeliefMarkerError(ValueError):
    """A belief marker is not exactly one token in the tokenizer at hand."""


@dataclass(frozen=True)
class SequenceFormat:
    """How a record becomes text: prompt template or chat template, marker mode, description.

    ``prompt_template`` must contain ``{prompt}``; it is ignored when
    ``chat_template`` is true. ``description_template=None`` leaves the
    description out (review format ``{rating}{review}<eos>``).
    """

    marker: MarkerMode = "digit"
    prompt_template: str = "<Q>{prompt}<A>"
    description_template: str | None = "<{description}>"
    chat_template: bool = False
    system_prompt: str | None = None
    add_bos: bool = False
    max_length: int | None = None
    #: One token appended after the prompt (None: none); it must occur nowhere
    #: else in a sequence, so that "a belief marker follows it" is learnt for
    #: the belief slot only.
    separator: str | None = None
    #: How one answer option is written where ``prompt_template`` holds ``{options}``
    #: (the options are joined by :data:`OPTION_SEPARATOR`).
    option_template: str = "{class_id} = {description}"
    #: Text written right after the belief marker, before the description, that lists the
    #: answer options (holds ``{options}``; None: none). It is given, never learnt: it is
    #: left out of every loss and generation writes it in after the drawn marker, so the
    #: description is copied from the options while everything before the belief slot, and
    #: so the belief distribution, stays as in a format without options.
    marker_options_template: str | None = None

    def __post_init__(self) -> None:
        if self.marker not in ("digit", "special"):
            raise ValueError(f"marker must be 'digit' or 'special', got {self.marker!r}")
        if not self.chat_template and "{prompt}" not in self.prompt_template:
            raise ValueError(f"prompt_template must contain {{prompt}}: {self.prompt_template!r}")
        if self.description_template is not None and "{description}" not in (
            self.description_template
        ):
            raise ValueError("description_template must contain {description} (or be None)")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.separator is not None and not self.separator.strip():
            raise ValueError(f"separator must be a non-blank token text or None, got "
                             f"{self.separator!r}")
        for key in ("{class_id}", "{description}"):
            if key not in self.option_template:
                raise ValueError(f"option_template must contain {key}: {self.option_template!r}")
        if self.marker_options_template is not None and (
                "{options}" not in self.marker_options_template):
            raise ValueError(f"marker_options_template must contain {{options}} (or be None): "
                             f"{self.marker_options_template!r}")
        if self.chat_template and "{options}" in self.prompt_template:
            # The chat template replaces prompt_template, and with it the options list.
            raise ValueError("a format that lists the answer options ({options} in its "
                             "prompt_template) cannot use the chat template, which replaces "
                             "that template; set use_chat_template false")

    @property
    def lists_options(self) -> bool:
        """Whether the prompt names the question's answer options (``{options}``)."""
        return not self.chat_template and "{options}" in self.prompt_template

    def options_text(self, beliefs: Sequence[Any] | None) -> str:
        """The answer options as the sequence lists them: ``1 = Oppose; 2 = Support``."""
        if not beliefs:
            raise ValueError("this sequence format writes the question's answer options "
                             "({options} in its prompt_template or marker_options_template): "
                             "pass the question's beliefs")
        return OPTION_SEPARATOR.join(
            self.option_template.format(class_id=b.class_id, description=b.description)
            for b in beliefs)

    def to_info(self) -> dict[str, Any]:
        """What a run folder records (``pluralign_format.json``) to rebuild this format."""
        return {
            "belief_format": self.marker, "use_chat_template": self.chat_template,
            "prompt_template": self.prompt_template,
            "description_template": self.description_template,
            "system_prompt": self.system_prompt, "add_bos": self.add_bos,
            "separator": self.separator, "option_template": self.option_template,
            "marker_options_template": self.marker_options_template,
        }

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> SequenceFormat:
        """The format a run folder recorded; keys it lacks keep the paper's values.

        Runs written before the separator existed have no ``separator`` key:
        they were trained on the paper's format, which is what they get.
        """
        paper = cls()
        return cls(
            marker=info.get("belief_format", paper.marker),
            chat_template=bool(info.get("use_chat_template", paper.chat_template)),
            prompt_template=info.get("prompt_template", paper.prompt_template),
            description_template=info.get("description_template", paper.description_template),
            system_prompt=info.get("system_prompt", paper.system_prompt),
            add_bos=bool(info.get("add_bos", paper.add_bos)),
            separator=info.get("separator", paper.separator),
            option_template=info.get("option_template", paper.option_template),
            marker_options_template=info.get("marker_options_template"),
        )


#: What joins the answer options a ``{options}`` prompt lists.
OPTION_SEPARATOR = "; "

#: The separator token of the default format (an added special token).
BELIEF_SEPARATOR = "<|belief|>"

#: The paper's exact opinion-QA format: ``<Q>{prompt}<A>{class}<{description}>{response}<eos>``.
PAPER_FORMAT = SequenceFormat()
#: Alias of :data:`PAPER_FORMAT` (the name used before the separated format existed).
OPINION_FORMAT = PAPER_FORMAT
#: The default: the paper's format with ``<|belief|>`` between the prompt and the belief.
SEPARATED_FORMAT = SequenceFormat(separator=BELIEF_SEPARATOR)
DEFAULT_FORMAT = SEPARATED_FORMAT
#: ``{prompt}{rating}{review}<eos>``: no description and a bare prompt (no ``<Q>``/``<A>``).
REVIEW_FORMAT = SequenceFormat(prompt_template="{prompt}", description_template=None)
#: The review task as the reference code runs it: ``<Q>{prompt}<A>{rating}{review}<eos>``.
REVIEWS_PAPER_FORMAT = SequenceFormat(description_template=None)
#: The reviews default: the paper's review answer after the ``<|belief|>`` separator.
REVIEWS_FORMAT = SequenceFormat(description_template=None, separator=BELIEF_SEPARATOR)
#: :data:`SEPARATED_FORMAT` with the question's answer options before the question:
#: ``<Q>Options: 1 = Oppose; 2 = Support.\n{prompt}<A><|belief|>...``. A question's
#: wording does not always say which scale its answers use ("Agree or disagree?" vs
#: "For or against?"); with the options in view the model copies its class's
#: description instead of guessing the scale.
OPTIONS_FORMAT = SequenceFormat(prompt_template="<Q>Options: {options}.\n{prompt}<A>",
                                separator=BELIEF_SEPARATOR)
#: :data:`SEPARATED_FORMAT` with the answer options written right after the belief marker:
#: ``<Q>{prompt}<A><|belief|>{class}(Options: 1 = Oppose; 2 = Support)<{description}>...``.
#: The options are given text (generation writes them in after the drawn marker, no loss
#: reads them), so the belief slot sees exactly what it sees in the separated format.
MARKER_OPTIONS_FORMAT = SequenceFormat(separator=BELIEF_SEPARATOR,
                                       marker_options_template="(Options: {options})")
#: Chat-template prompt followed by ``{class}<{description}>{response}<eos>``.
CHAT_FORMAT = SequenceFormat(chat_template=True)

#: File a trained run writes into ``final/``: its method and :meth:`SequenceFormat.to_info`,
#: so that evaluation and generation build the sequences training used.
FORMAT_FILE = "pluralign_format.json"

SEQUENCE_FORMATS.register(
    "separated", SEPARATED_FORMAT,
    help="<Q>{prompt}<A><|belief|>{class}<{description}>{response}: a dedicated separator token "
         "before the belief slot, which occurs nowhere else (default where records name no "
         "format).")
SEQUENCE_FORMATS.register(
    "separated-options", OPTIONS_FORMAT,
    help="<Q>Options: 1 = ...; 2 = ....\n{prompt}<A><|belief|>{class}<{description}>{response}: "
         "the separated format with the question's answer options listed before it, so the "
         "description written is the option's own.")
SEQUENCE_FORMATS.register(
    "marker-options", MARKER_OPTIONS_FORMAT,
    help="<Q>{prompt}<A><|belief|>{class}(Options: 1 = ...; ...)<{description}>{response}: the "
         "separated format with the answer options written in after the belief marker (given "
         "text, in no loss), so the description is copied while the belief slot sees what it "
         "sees without options.")
SEQUENCE_FORMATS.register(
    "paper", PAPER_FORMAT,
    help="The GDPO paper's exact <Q>{prompt}<A>{class}<{description}>{response}; its '>' also "
         "closes every description, and trained models repeat markers after it.")
SEQUENCE_FORMATS.register(
    "reviews", REVIEWS_FORMAT,
    help="Review task: <Q>{prompt}<A><|belief|>{rating}{review}, the paper's rating-then-review "
         "answer after the separator token (default of `pluralign data reviews` records).")
SEQUENCE_FORMATS.register(
    "reviews-paper", REVIEWS_PAPER_FORMAT,
    help="The GDPO reference code's exact review sequence <Q>{prompt}<A>{rating}{review}; "
         "review text holds '>' too (<br />), so the token before the rating is not unique.")

#: ``sequence_format`` value that takes the format the training records name.
AUTO_FORMAT = "auto"
#: Record ``metadata`` key in which a builder names the format its records are meant for.
FORMAT_METADATA_KEY = "sequence_format"


def named_format(name: str) -> SequenceFormat:
    """The format registered as ``name`` (``separated``, ``paper``, ``reviews``, ...)."""
    return SEQUENCE_FORMATS.get(name)


def check_format_name(name: str, *, allow_auto: bool = True, chat_template: bool = False
                      ) -> None:
    """ValueError naming the ``sequence_format`` field unless ``name`` is a registered format
    (or ``auto``) that can take ``chat_template``: the config-time check of every config
    with that field."""
    from pluralign.registry import UnknownNameError

    if allow_auto and name == AUTO_FORMAT:
        return
    try:
        fmt = named_format(name)
    except UnknownNameError as exc:
        raise ValueError(f"sequence_format: {exc}{f' (or {AUTO_FORMAT})' if allow_auto else ''}"
                         ) from None
    if chat_template:
        try:
            dataclasses.replace(fmt, chat_template=True)
        except ValueError as exc:
            raise ValueError(f"sequence_format {name}: {exc}") from None


def records_format_name(records: Iterable[GroupPreferenceExample], source: str = "records"
                        ) -> str | None:
    """The format that ``records`` name in ``metadata["sequence_format"]`` (None: none does).

    Records naming two formats, or an unregistered one, raise ValueError naming ``source``.
    """
    from pluralign.registry import UnknownNameError

    names = {r.metadata.get(FORMAT_METADATA_KEY) for r in records} - {None}
    if len(names) > 1:
        raise ValueError(f"{source}: records name several sequence formats "
                         f"({', '.join(sorted(map(str, names)))}); set sequence_format")
    if not names:
        return None
    name = str(names.pop())
    try:
        named_format(name)
    except UnknownNameError as exc:
        raise ValueError(f"{source}: metadata {FORMAT_METADATA_KEY}: {exc}") from None
    return name


def resolve_format_name(requested: str, records: Iterable[GroupPreferenceExample],
                        source: str = "records") -> str:
    """``requested``, or for ``auto`` the records' named format (``separated`` if none)."""
    if requested != AUTO_FORMAT:
        return requested
    return records_format_name(records, source) or "separated"


class TokenizedSequence(TypedDict):
    """One tokenised sequence; every list has the same length as ``input_ids``."""

    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]  # IGNORE_INDEX on the prompt, the token ids elsewhere
    belief_mask: list[int]  # 1 on the marker and the description tokens
    response_mask: list[int]  # 1 on the response tokens and the eos
    prompt_length: int
    marker_position: int
    description_span: tuple[int, int]
    belief_span: tuple[int, int]  # marker + given options (if any) + description
    options_span: tuple[int, int]  # the given options after the marker (empty: none)
    response_span: tuple[int, int]  # response through eos
    belief_class_id: int
    truncated: bool


class TokenizedPair(TypedDict):
    """A record tokenised for pairwise training (DPO / GDPO)."""

    chosen: TokenizedSequence
    rejected: TokenizedSequence
    prompt_input_ids: list[int]
    belief_token_ids: list[int]  # K marker ids, ordered like the record's beliefs
    target_distribution: list[float]  # p*, ordered like belief_token_ids
    chosen_belief_index: int
    rejected_belief_index: int
    margin_group: str  # the paper's subset of the pair (pluralign.data.records.margin_group)


# ---------------------------------------------------------------------- markers


def belief_marker(class_id: int, mode: MarkerMode = "digit") -> str:
    """The marker text of a class: ``"3"`` (digit mode) or ``"<|belief_3|>"`` (special)."""
    if mode == "digit":
        return str(class_id)
    if mode == "special":
        return f"<|belief_{class_id}|>"
    raise ValueError(f"marker mode must be 'digit' or 'special', got {mode!r}")


def add_belief_tokens(
    tokenizer: Any, model: Any | None = None, class_ids: Iterable[int] = DEFAULT_CLASS_IDS
) -> list[int]:
    """Add ``<|belief_k|>`` special tokens to ``tokenizer``; resize ``model``'s embeddings.

    Idempotent: tokens already present are kept. The embedding matrix only
    grows (a model whose vocabulary is padded beyond the tokenizer is left as
    it is). Returns the token ids in ``class_ids`` order.
    """
    _add_special_tokens(tokenizer, model, [belief_marker(c, "special") for c in class_ids])
    return [belief_marker_id(tokenizer, c, "special") for c in class_ids]


def _add_special_tokens(tokenizer: Any, model: Any | None, texts: Sequence[str]) -> None:
    from tokenizers import AddedToken

    from pluralign.models import resize_token_embeddings

    # normalized=False: the text must match exactly, with no prefix-space handling.
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in texts], special_tokens=True
    )
    if model is not None:
        resize_token_embeddings(model, len(tokenizer))


def add_format_tokens(tokenizer: Any, model: Any | None, fmt: SequenceFormat) -> None:
    """Add the tokens ``fmt`` needs (its separator, special markers) to ``tokenizer`` and
    ``model``'s embeddings. Idempotent; the new embedding rows start at the mean of the
    others (see :func:`pluralign.models.resize_token_embeddings`)."""
    if fmt.separator is not None:
        _add_special_tokens(tokenizer, model, [fmt.separator])
    if fmt.marker == "special":
        add_belief_tokens(tokenizer, model)


def separator_id(tokenizer: Any, fmt: SequenceFormat) -> int | None:
    """Token id of ``fmt``'s separator (None when it has none); it must be one token."""
    if fmt.separator is None:
        return None
    ids = tokenizer(fmt.separator, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise BeliefMarkerError(
            f"separator {fmt.separator!r} is {len(ids)} tokens in {type(tokenizer).__name__}, "
            "not one; call pluralign.train.tokenize.add_format_tokens(tokenizer, model, fmt) "
            "first (models trained by pluralign save their tokenizer with it)"
        )
    return ids[0]


def belief_marker_id(tokenizer: Any, class_id: int, mode: MarkerMode = "digit") -> int:
    """Token id of a belief marker; :class:`BeliefMarkerError` unless it is exactly one token."""
    marker = belief_marker(class_id, mode)
    ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        fix = (
            "call pluralign.train.tokenize.add_belief_tokens(tokenizer, model) first"
            if mode == "special"
            else "train with --belief_format special (Python: TrainConfig(belief_format="
            "'special')), which adds one token per class"
        )
        raise BeliefMarkerError(
            f"belief marker {marker!r} is {len(ids)} tokens {pieces} in "
            f"{type(tokenizer).__name__}, not exactly one token; {fix}"
        )
    return ids[0]


def belief_marker_ids(
    tokenizer: Any, class_ids: Sequence[int], mode: MarkerMode = "digit"
) -> list[int]:
    """Marker token ids of several classes, in order (see :func:`belief_marker_id`)."""
    return [belief_marker_id(tokenizer, c, mode) for c in class_ids]


# ---------------------------------------------------------------------- pieces


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def encode_prompt(tokenizer: Any, prompt: str, fmt: SequenceFormat = OPINION_FORMAT, *,
                  context: str | None = None, beliefs: Sequence[Any] | None = None
                  ) -> list[int]:
    """Token ids of the prompt part: through ``<A>`` or the chat generation prompt, then
    the separator when ``fmt`` has one (the belief marker comes next).

    ``context`` (in-context examples) goes before the prompt template, as the
    reference code writes ``{context}<Q>{prompt}<A>``; with a chat template it
    opens the user turn. ``beliefs`` (objects with ``class_id`` and
    ``description``) are the question's answer options, which a format whose
    template holds ``{options}`` lists; other formats ignore them.
    """
    context = context or ""
    if fmt.chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"{type(tokenizer).__name__} has no chat template; use chat_template=False"
            )
        messages = [{"role": "user", "content": context + prompt}]
        if fmt.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": fmt.system_prompt})
        # Render to text, then tokenise: apply_chat_template(tokenize=True) returns different
        # types across transformers versions, and the template already holds its own specials.
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        options = fmt.options_text(beliefs) if fmt.lists_options else ""
        text = context + fmt.prompt_template.format(prompt=prompt, options=options)
    ids = _encode(tokenizer, text)
    if fmt.add_bos:
        if tokenizer.bos_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no bos token; use add_bos=False")
        ids = [tokenizer.bos_token_id, *ids]
    separator = separator_id(tokenizer, fmt)
    return ids if separator is None else [*ids, separator]


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos token; sequences need one")
    return int(tokenizer.eos_token_id)


def marker_options_ids(tokenizer: Any, fmt: SequenceFormat,
                       beliefs: Sequence[Any] | None) -> list[int]:
    """Token ids of the options ``fmt`` writes after the belief marker ([] where none)."""
    if fmt.marker_options_template is None:
        return []
    return _encode(tokenizer, fmt.marker_options_template.format(
        options=fmt.options_text(beliefs)))


def build_sequence(
    tokenizer: Any,
    prompt_ids: Sequence[int],
    class_id: int,
    description: str,
    response: str,
    fmt: SequenceFormat = OPINION_FORMAT,
    *,
    beliefs: Sequence[Any] | None = None,
) -> TokenizedSequence:
    """``prompt_ids + marker + options + description + response + eos`` with its offsets.

    ``options`` (only in a format with ``marker_options_template``, built from
    ``beliefs``) are given text: labels ignore them and the belief mask leaves
    them out. The response is truncated (eos included) when ``fmt.max_length``
    is set and exceeded; a prompt plus belief that alone exceed it is an error.
    """
    marker_ids = [belief_marker_id(tokenizer, class_id, fmt.marker)]
    options_ids = marker_options_ids(tokenizer, fmt, beliefs)
    description_ids = (
        _encode(tokenizer, fmt.description_template.format(description=description))
        if fmt.description_template is not None
        else []
    )
    response_ids = [*_encode(tokenizer, response), _eos_id(tokenizer)]
    prompt_length = len(prompt_ids)
    options_end = prompt_length + 1 + len(options_ids)
    belief_end = options_end + len(description_ids)
    truncated = False
    if fmt.max_length is not None and belief_end + len(response_ids) > fmt.max_length:
        if belief_end >= fmt.max_length:
            raise ValueError(
                f"prompt and belief are {belief_end} tokens, max_length is {fmt.max_length}: "
                "no room for a response"
            )
        response_ids = response_ids[: fmt.max_length - belief_end]
        truncated = True
    input_ids = [*prompt_ids, *marker_ids, *options_ids, *description_ids, *response_ids]
    length = len(input_ids)
    given = range(prompt_length + 1, options_end)
    return TokenizedSequence(
        input_ids=input_ids,
        attention_mask=[1] * length,
        labels=[IGNORE_INDEX if i < prompt_length or i in given else t
                for i, t in enumerate(input_ids)],
        belief_mask=[1 if prompt_length <= i < belief_end and i not in given else 0
                     for i in range(length)],
        response_mask=[1 if i >= belief_end else 0 for i in range(length)],
        prompt_length=prompt_length,
        marker_position=prompt_length,
        description_span=(options_end, belief_end),
        belief_span=(prompt_length, belief_end),
        options_span=(prompt_length + 1, options_end),
        response_span=(belief_end, length),
        belief_class_id=class_id,
        truncated=truncated,
    )


# ---------------------------------------------------------------------- records


def tokenize_example(
    example: GroupPreferenceExample,
    tokenizer: Any,
    fmt: SequenceFormat = OPINION_FORMAT,
    *,
    pairing: Pairing = "gdpo",
) -> TokenizedPair:
    """Tokenise a record into a chosen and a rejected sequence.

    ``pairing="gdpo"``: the rejected sequence carries the *chosen* belief (marker
    and description), so the shared belief prefix cancels in the DPO logit and
    pairs from different beliefs do not conflict. ``pairing="dpo"``: the
    rejected sequence carries the *rejected* belief (the DPO baseline).
    """
    if pairing not in ("gdpo", "dpo"):
        raise ValueError(f"pairing must be 'gdpo' or 'dpo', got {pairing!r}")
    from pluralign.data.records import margin_group

    prompt_ids = encode_prompt(tokenizer, example.prompt, fmt, context=example.context,
                               beliefs=example.beliefs)
    chosen_belief = example.belief(example.chosen_belief)
    rejected_belief = (
        chosen_belief if pairing == "gdpo" else example.belief(example.rejected_belief)
    )
    chosen = build_sequence(
        tokenizer,
        prompt_ids,
        chosen_belief.class_id,
        chosen_belief.description,
        example.chosen_response,
        fmt,
        beliefs=example.beliefs,
    )
    rejected = build_sequence(
        tokenizer,
        prompt_ids,
        rejected_belief.class_id,
        rejected_belief.description,
        example.rejected_response,
        fmt,
        beliefs=example.beliefs,
    )
    return TokenizedPair(
        chosen=chosen,
        rejected=rejected,
        prompt_input_ids=list(prompt_ids),
        belief_token_ids=belief_marker_ids(tokenizer, example.class_ids, fmt.marker),
        target_distribution=list(example.target_distribution),
        chosen_belief_index=example.belief_index(example.chosen_belief),
        rejected_belief_index=example.belief_index(example.rejected_belief),
        margin_group=margin_group(example),
    )
