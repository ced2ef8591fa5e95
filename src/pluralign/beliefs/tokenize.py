"""Tokenise group preference records into chosen/rejected sequences with exact offsets.

A sequence is ``prompt | belief marker | belief description | response | eos``.
Each part is tokenised on its own and the token ids are concatenated, so the
offsets of the marker, the description and the response are known when the
sequence is built. They are never recovered afterwards by searching for a
token such as ``>``: BPE merges (``>"``, ``>.``) and review text (``<br />``)
make such searches fail (the bug of the GDPO reference code).

The layouts are :mod:`pluralign.beliefs.formats`.

Offsets are 0-based and spans are half-open ``(start, end)``. The belief
distribution is read from the logits at position ``prompt_length - 1`` (the
last prompt token), which predict the marker at ``marker_position ==
prompt_length``. Everything returned is plain Python lists, ints and tuples
that a collator can pad.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from pluralign.beliefs.formats import (
    DEFAULT_CLASS_IDS,
    IGNORE_INDEX,
    OPINION_FORMAT,
    BeliefMarkerError,
    MarkerMode,
    Pairing,
    SequenceFormat,
)

if TYPE_CHECKING:
    from pluralign.data.records import GroupPreferenceExample


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
            "not one; call pluralign.beliefs.tokenize.add_format_tokens(tokenizer, model, fmt) "
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
            "call pluralign.beliefs.tokenize.add_belief_tokens(tokenizer, model) first"
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
                  context: str | None = None, beliefs: Sequence[Any] | None = None,
                  group: str | None = None) -> list[int]:
    """Token ids of the prompt part: through ``<A>`` or the chat generation prompt, then
    the separator when ``fmt`` has one (the belief marker comes next).

    ``context`` (in-context examples) goes before the prompt template, as the
    reference code writes ``{context}<Q>{prompt}<A>``; with a chat template it
    opens the user turn. ``beliefs`` (objects with ``class_id`` and
    ``description``) are the question's answer options, which a format whose
    template holds ``{options}`` lists; other formats ignore them. ``group`` is
    written in the group line of a format that has one (required there) and
    ignored by the others.
    """
    context = context or ""
    prompt = fmt.question_text(prompt, group)
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
                               beliefs=example.beliefs, group=example.group)
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
