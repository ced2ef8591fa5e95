"""Sequence formats: how a prompt, a belief and a response are laid out.

Prompt formats (:class:`SequenceFormat`, registered by name in
:data:`pluralign.registry.SEQUENCE_FORMATS`):

* ``separated`` (the default where records name no format):
  ``<Q>{prompt}<A><|belief|>{class}<{description}>{response}<eos>``.
  The dedicated separator token ``<|belief|>`` (added to the tokenizer by
  :func:`pluralign.beliefs.tokenize.add_format_tokens`) ends every prompt, so
  the token before the belief slot occurs nowhere else in a sequence;
* ``separated-options``: ``separated`` with the question's answer options listed
  before it, ``<Q>Options: 1 = Oppose; 2 = Support.\n{prompt}<A><|belief|>...``
  (``{options}`` in the prompt template, each option written by
  ``option_template``). A wording such as "For or against?" does not say which
  of several scales the answers use; with the options in view the model writes
  its class's own description;
* ``separated-marked-options``: ``separated-options`` with each option written as a
  belief is written after the slot, ``<Q>Options: 1<Oppose>; 2<Support>\n{prompt}<A>...``,
  so the description after a drawn marker repeats its option token for token;
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

Group line (``group_template``, combines with every format; training's
``group_in_prompt`` sets it to :data:`GROUP_LINE`): the record's group is
written right before the question, ``<Q>Group: United States\n{prompt}<A>...``,
so one model can answer for several groups. A group name may not hold the
separator or a special belief marker: the token before the belief slot must
stay the only one of its kind in the sequence.

Belief markers: ``"digit"`` uses the class id as text (``"3"``; one token in
GPT-2 and SmolLM2); ``"special"`` uses dedicated added tokens ``<|belief_3|>``
(see :func:`pluralign.beliefs.tokenize.add_belief_tokens`). A marker that is
not exactly one token in the tokenizer at hand raises :class:`BeliefMarkerError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

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


class GroupLineError(ValueError):
    """A group cannot be written in a format's group line (missing, or holding a token that
    must stay unique); ``reason`` is the message without the field name."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"group: {reason}")
        self.reason = reason


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
    #: Line written right before the question that names the record's group (holds
    #: ``{group}``; None: none, one model per group as in the paper).
    group_template: str | None = None

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
        if self.group_template is not None and "{group}" not in self.group_template:
            raise ValueError(f"group_template must contain {{group}} (or be None): "
                             f"{self.group_template!r}")
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

    @property
    def names_group(self) -> bool:
        """Whether the prompt names the record's group (a group line): rows of two groups
        that ask the same question are then two different prompts."""
        return self.group_template is not None

    def question_text(self, prompt: str, group: str | None) -> str:
        """The question as the prompt template receives it: the group line first where
        this format writes one (ValueError for a missing group or one that holds a token
        that must stay unique)."""
        if self.group_template is None:
            return prompt
        if group is None or not group.strip():
            raise GroupLineError("this sequence format writes a group line before the question "
                                 "(the model was trained with group_in_prompt); name the group")
        reserved = [t for t in (self.separator, "<|belief_") if t and t in group]
        if reserved:
            raise GroupLineError(f"{group!r} holds {reserved[0]!r}, a token that must occur "
                                 "only before the belief slot; rename the group")
        return self.group_template.format(group=group) + prompt

    def to_info(self) -> dict[str, Any]:
        """What a run folder records (``pluralign_format.json``) to rebuild this format."""
        info = {
            "belief_format": self.marker, "use_chat_template": self.chat_template,
            "prompt_template": self.prompt_template,
            "description_template": self.description_template,
            "system_prompt": self.system_prompt, "add_bos": self.add_bos,
            "separator": self.separator, "option_template": self.option_template,
            "marker_options_template": self.marker_options_template,
        }
        # Only a group-conditioned format names it: single-group runs keep their file as it was.
        if self.group_template is not None:
            info["group_template"] = self.group_template
        return info

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
            group_template=info.get("group_template"),
        )


#: The group line of training's ``group_in_prompt``: ``Group: United States`` on a line of
#: its own right before the question.
GROUP_LINE = "Group: {group}\n"

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
#: :data:`OPTIONS_FORMAT` with each option written exactly as a belief is written after the
#: slot: ``<Q>Options: 1<Oppose>; 2<Support>\n{prompt}<A><|belief|>2<Support>...``. In
#: ``1 = Oppose`` the description is `` Oppose`` (a leading space, other tokens than
#: ``<Oppose``); here the tokens after a drawn ``2<`` repeat the ones after ``2<`` in the
#: list, so the description is a token-for-token copy of its option.
MARKED_OPTIONS_FORMAT = SequenceFormat(prompt_template="<Q>Options: {options}\n{prompt}<A>",
                                       separator=BELIEF_SEPARATOR,
                                       option_template="{class_id}<{description}>")
#: :data:`SEPARATED_FORMAT` with the answer options written right after the belief marker:
#: ``<Q>{prompt}<A><|belief|>{class}(Options: 1 = Oppose; 2 = Support)<{description}>...``.
#: The options are given text (generation writes them in after the drawn marker, no loss
#: reads them), so the belief slot sees exactly what it sees in the separated format.
MARKER_OPTIONS_FORMAT = SequenceFormat(separator=BELIEF_SEPARATOR,
                                       marker_options_template="(Options: {options})")
#: Chat-template prompt followed by ``{class}<{description}>{response}<eos>``.
CHAT_FORMAT = SequenceFormat(chat_template=True)

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
    "separated-marked-options", MARKED_OPTIONS_FORMAT,
    help="<Q>Options: 1<...>; 2<...>\n{prompt}<A><|belief|>{class}<{description}>{response}: "
         "separated-options with each option written as a belief is written after the slot, "
         "so the description is a token-for-token copy of its option.")
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


def named_format(name: str, *, group_in_prompt: bool = False) -> SequenceFormat:
    """The format registered as ``name`` (``separated``, ``paper``, ``reviews``, ...), with
    the group line (:data:`GROUP_LINE`) where ``group_in_prompt``."""
    fmt = SEQUENCE_FORMATS.get(name)
    return dataclasses.replace(fmt, group_template=GROUP_LINE) if group_in_prompt else fmt


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
