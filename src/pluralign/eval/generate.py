"""Belief-first generation: pick a belief marker, then write the description and response.

Generation mirrors the GDPO factorisation ``p(y|x) = sum_b p(y|b,x) p(b|x)``:

1. one forward pass over the prompt gives the logits at the last prompt
   position; the belief is sampled (or taken greedily) from the softmax over
   the K belief-marker logits only, so the class is always one of the record's;
2. the marker is appended and the model continues with the description and
   the response (``{class}<{description}>{response}`` in the paper's format).

The generated text is parsed back into class, description and response
(:func:`parse_generation`), and the description is mapped to a class through
the record's belief set (:func:`description_class`) for CBC.

:func:`sampled_belief_distribution` is the estimate an API-only model allows:
the share of each marker among ``n`` samples of the *first generated token*
(full vocabulary, so samples that are no marker at all are counted apart).
It is reported beside the one-forward-pass reading of
:func:`pluralign.beliefs.readout.belief_distributions`.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pluralign.beliefs.formats import (
    OPINION_FORMAT,
    MarkerMode,
    SequenceFormat,
    named_format,
    records_format_name,
)
from pluralign.beliefs.tokenize import (
    belief_marker,
    belief_marker_ids,
    encode_prompt,
    marker_options_ids,
)
from pluralign.data.records import Belief, GroupPreferenceExample
from pluralign.runs import read_format_info

_DIGIT_MARKER = re.compile(r"\s*(\d+)")
#: A digit marker is one token, one digit in SmolLM2: with no description after it,
#: ``510/10 would watch`` is class 5 and the review ``10/10 would watch``.
_ONE_DIGIT_MARKER = re.compile(r"\s*(\d)")
#: A digit marker and the ``<`` that opens its description: what a leaked marker looks like.
_DIGIT_MARKER_LEAK = re.compile(r"\s*\d+\s*<")
_SPECIAL_MARKER = re.compile(r"\s*<\|belief_(\d+)\|>")


@dataclass(frozen=True)
class SamplingOptions:
    """How generations are sampled; a temperature of 0 decodes greedily.

    The belief is drawn at ``temperature`` from the model's distribution over
    the belief markers, the quantity pluralism is about. The text after it
    (description and response) is decoded at ``response_temperature`` (None:
    the same ``temperature``) with ``top_p``: a lower value writes cleaner
    text for the drawn belief without narrowing which beliefs are drawn.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    response_temperature: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.response_temperature is not None and self.response_temperature < 0:
            raise ValueError(
                f"response_temperature must be >= 0, got {self.response_temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def text_temperature(self) -> float:
        """Temperature of the text after the belief marker."""
        return self.temperature if self.response_temperature is None else self.response_temperature


@dataclass(frozen=True)
class ParsedGeneration:
    """Class id, description and response read from a generated answer (None: unparsed)."""

    class_id: int | None
    description: str | None
    response: str


@dataclass(frozen=True)
class Generation:
    """One belief-first generation and what was parsed from it.

    ``parsed`` is false when the class or, in a format with descriptions, the
    ``<description>`` could not be read: such a response expresses no belief.
    """

    text: str
    class_id: int | None
    description: str | None
    response: str
    description_class: int | None
    parsed: bool = True
    #: False in formats without descriptions (reviews): CBC does not apply to them.
    has_description: bool = True

    @property
    def expresses_nothing(self) -> bool:
        """Empty, whitespace-only or unparsed: BPC and RS count it as no belief expressed."""
        return not self.parsed or not self.response.strip()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def starts_with_marker(response: str, marker: MarkerMode = "digit", *,
                       has_description: bool = True) -> bool:
    """Whether a response opens with another belief marker (``4<Yes>...``, ``<|belief_4|>``)
    or the separator: the leak of a format whose belief slot follows a common token.

    A digit marker counts only with its description's ``<`` after it: a response that
    opens with a number ("30 km/h is ...") is not a leak. Without descriptions (the
    ``{rating}{review}`` format) a leading digit cannot be told from the review's own
    text, so there only special markers and the separator count.
    """
    text = response.lstrip()
    if marker == "special" or text.startswith("<|belief"):
        return bool(_SPECIAL_MARKER.match(text)) or text.startswith("<|belief|>")
    return has_description and bool(_DIGIT_MARKER_LEAK.match(text))


# ----------------------------------------------------------------------- parsing


def parse_generation(
    text: str, marker: MarkerMode = "digit", *, has_description: bool = True
) -> ParsedGeneration:
    """Split ``{marker}<{description}>{response}`` into its parts.

    A missing or malformed marker gives ``class_id=None``; a missing ``<...>``
    gives ``description=None`` (the whole rest is the response), so malformed
    output is counted as unparsed instead of raising. Without a description
    (``{rating}{review}``) a digit marker is one digit: the review may start with digits.
    """
    pattern = _SPECIAL_MARKER
    if marker == "digit":
        pattern = _DIGIT_MARKER if has_description else _ONE_DIGIT_MARKER
    match = pattern.match(text)
    class_id = int(match.group(1)) if match else None
    rest = text[match.end():] if match else text
    return split_description(rest, class_id, has_description=has_description)


def split_description(
    rest: str, class_id: int | None = None, *, has_description: bool = True
) -> ParsedGeneration:
    """Split what follows the marker into ``<description>`` and the response."""
    if not has_description:
        return ParsedGeneration(class_id, None, rest.strip())
    stripped = rest.lstrip()
    close = stripped.find(">")
    if not stripped.startswith("<") or close < 0:
        return ParsedGeneration(class_id, None, rest.strip())
    description = stripped[1:close].strip()
    return ParsedGeneration(class_id, description, stripped[close + 1:].strip())


def normalise_description(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form of a description."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def description_class(description: str | None, beliefs: Sequence[Belief]) -> int | None:
    """Class id whose description matches ``description`` (exact, then normalised); else None."""
    if description is None:
        return None
    for belief in beliefs:
        if belief.description == description:
            return belief.class_id
    wanted = normalise_description(description)
    matches = [b.class_id for b in beliefs if normalise_description(b.description) == wanted]
    # Two beliefs that only differ in punctuation would make the mapping a guess.
    return matches[0] if len(matches) == 1 else None


# ----------------------------------------------------------------------- formats


def load_sequence_format(model_ref: str | Path, default: SequenceFormat = OPINION_FORMAT
                         ) -> SequenceFormat:
    """The sequence format a trained model used (``pluralign_format.json``), else ``default``
    (the paper's opinion format; :func:`untrained_format` gives the one records call for).

    A model that pluralign did not train has no separator token in its
    tokenizer, so it is prompted in the paper's format.
    """
    info = read_format_info(model_ref)
    return SequenceFormat.from_info(info) if info else default


def untrained_format(records: Sequence[GroupPreferenceExample]) -> SequenceFormat:
    """The format to prompt a model pluralign did not train with on ``records``: the one
    they name (``metadata.sequence_format``, e.g. ``reviews``) without its separator, which
    such a tokenizer lacks (``reviews`` -> ``reviews-paper``); else the paper's opinion format.
    """
    name = records_format_name(records)
    if name is None:
        return OPINION_FORMAT
    return dataclasses.replace(named_format(name), separator=None)


# ----------------------------------------------------------------------- model calls


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` of ``rows`` padded on the left to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


@torch.no_grad()
def last_position_logits(
    model: Any, prompt_ids: Sequence[Sequence[int]], *, pad_token_id: int, batch_size: int = 16
) -> torch.Tensor:
    """Full-vocabulary logits ``(N, V)`` at the last prompt position (left padding)."""
    out = []
    device = _device(model)
    for start in range(0, len(prompt_ids), batch_size):
        ids, mask = left_pad(prompt_ids[start:start + batch_size], pad_token_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids.to(device), attention_mask=mask.to(device),
            position_ids=positions.to(device), use_cache=False, logits_to_keep=1,
        ).logits
        out.append(logits[:, -1].float().cpu())
    return torch.cat(out)


def _pick(
    logits: torch.Tensor, n: int, temperature: float, generator: torch.Generator
) -> list[int]:
    """``n`` indices from ``logits`` (K,): greedy at temperature 0, else sampled."""
    if temperature == 0:
        return [int(logits.argmax())] * n
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, n, replacement=True, generator=generator).tolist()


def _continue(
    model: Any, tokenizer: Any, rows: list[list[int]], options: SamplingOptions
) -> list[str]:
    """Decode the continuation of each row (description + response) up to its eos.

    Special tokens are kept in the text: skipping them would hide a belief
    marker or separator that a model repeats inside its response.
    """
    ids, mask = left_pad(rows, tokenizer.pad_token_id)
    kwargs: dict[str, Any] = {"max_new_tokens": options.max_new_tokens}
    if options.text_temperature > 0:
        kwargs.update(do_sample=True, temperature=options.text_temperature, top_p=options.top_p)
    else:  # keep the model's generation_config sampling defaults from warning in greedy mode
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    device = _device(model)
    out = model.generate(
        input_ids=ids.to(device), attention_mask=mask.to(device),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **kwargs,
    )
    return [decode_until_eos(tokenizer, row) for row in out[:, ids.shape[1]:].tolist()]


def eos_position(tokenizer: Any, token_ids: Sequence[int]) -> int | None:
    """Index of the first eos (or pad) in ``token_ids``; None where generation never ended."""
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    return next((i for i, t in enumerate(token_ids) if t in stops), None)


def decode_until_eos(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """Text of ``token_ids`` before the first eos (or pad), special tokens kept."""
    end = eos_position(tokenizer, token_ids)
    return tokenizer.decode(list(token_ids[:end]), skip_special_tokens=False)


def _one_per_prompt(values: Sequence[Any] | None, count: int, name: str) -> list[Any]:
    """``values`` as a list of ``count`` (all None when not given); ValueError otherwise."""
    if values is None:
        return [None] * count
    if len(values) != count:
        raise ValueError(f"{count} prompts but {len(values)} {name}")
    return list(values)


@torch.no_grad()
def generate_beliefs_first(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    belief_sets: Sequence[Sequence[Belief]],
    *,
    fmt: SequenceFormat = OPINION_FORMAT,
    n: int = 1,
    options: SamplingOptions | None = None,
    batch_size: int = 16,
    progress: bool = False,
    contexts: Sequence[str | None] | None = None,
    groups: Sequence[str | None] | None = None,
) -> list[list[Generation]]:
    """``n`` belief-first generations per prompt; the class is always from its belief set.

    ``contexts`` (one per prompt, None for none) go before each prompt's
    template, as in-context fine-tuning trained them. ``groups`` (one per
    prompt) fill the group line of a format that has one (``group_in_prompt``).
    """
    options = options or SamplingOptions()
    belief_sets = _one_per_prompt(belief_sets, len(prompts), "belief sets")
    contexts = _one_per_prompt(contexts, len(prompts), "contexts")
    groups = _one_per_prompt(groups, len(prompts), "groups")
    was_training = model.training
    model.eval()
    prompt_ids = [encode_prompt(tokenizer, p, fmt, context=c, beliefs=s, group=g)
                  for p, c, s, g in zip(prompts, contexts, belief_sets, groups, strict=True)]
    marker_ids = [belief_marker_ids(tokenizer, [b.class_id for b in s], fmt.marker)
                  for s in belief_sets]
    # Options the format writes in after the marker: given, as in training, not generated.
    given = [marker_options_ids(tokenizer, fmt, s) for s in belief_sets]
    logits = last_position_logits(model, prompt_ids, pad_token_id=tokenizer.pad_token_id,
                                  batch_size=batch_size)
    generator = torch.Generator().manual_seed(options.seed)
    rows, owners, classes = [], [], []
    for i, (ids, markers) in enumerate(zip(prompt_ids, marker_ids, strict=True)):
        for k in _pick(logits[i, markers], n, options.temperature, generator):
            rows.append([*ids, markers[k], *given[i]])
            owners.append(i)
            classes.append(belief_sets[i][k].class_id)
    texts: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        starts = range(0, len(rows), batch_size)
        for start in tqdm(starts, desc="generating", disable=not progress):
            texts.extend(_continue(model, tokenizer, rows[start:start + batch_size], options))
    model.train(was_training)
    results: list[list[Generation]] = [[] for _ in prompts]
    has_description = fmt.description_template is not None
    for owner, class_id, continuation in zip(owners, classes, texts, strict=True):
        text = belief_marker(class_id, fmt.marker) + continuation
        # The marker was chosen, not generated: re-parsing "1" + "11<..." would read 111.
        parsed = split_description(continuation, class_id, has_description=has_description)
        results[owner].append(Generation(
            text=text, class_id=parsed.class_id, description=parsed.description,
            response=parsed.response,
            description_class=description_class(parsed.description, belief_sets[owner]),
            parsed=parsed.description is not None or not has_description,
            has_description=has_description,
        ))
    return results


@dataclass
class SampledEstimate:
    """Belief distributions estimated from ``n`` samples of the first generated token."""

    probs: list[list[float] | None]  #: share of each belief among the marker samples; None: none
    counts: list[list[int]]  #: samples per belief
    off_belief: list[int]  #: samples that were no belief marker at all
    n: int


def estimate_from_counts(counts: Sequence[Sequence[int]], n: int) -> SampledEstimate:
    """Shares from marker counts; None for a prompt with no marker sample at all.

    Such a prompt says nothing about the distribution: filling in the uniform
    one would score it as a fairly good prediction (the uniform line is often
    among the best), so metrics leave it out and count it instead.
    """
    probs: list[list[float] | None] = []
    off = []
    for row in counts:
        total = sum(row)
        off.append(n - total)
        probs.append([c / total for c in row] if total else None)
    return SampledEstimate(probs, [list(r) for r in counts], off, n)


@torch.no_grad()
def sampled_belief_distribution(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    belief_token_ids: Sequence[Sequence[int]],
    *,
    n: int = 32,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> SampledEstimate:
    """Sample the first generated token ``n`` times per prompt and count the belief markers.

    The first token of ``model.generate`` at this temperature (top_p 1) has
    exactly the full-vocabulary softmax of the last-position logits, so the
    samples are drawn from it directly instead of running ``n`` generations.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    was_training = model.training
    model.eval()
    logits = last_position_logits(model, prompt_ids, pad_token_id=tokenizer.pad_token_id,
                                  batch_size=batch_size)
    model.train(was_training)
    generator = torch.Generator().manual_seed(seed)
    counts = []
    for row, markers in zip(logits, belief_token_ids, strict=True):
        samples = _pick(row, n, temperature, generator)
        counts.append([samples.count(m) for m in markers])
    return estimate_from_counts(counts, n)


def marker_counts_from_texts(
    texts: Sequence[str | None], class_ids: Sequence[int], marker: MarkerMode = "digit"
) -> list[int]:
    """Counts per class of the class marker that starts each text (API samples)."""
    parsed = [parse_generation(t, marker).class_id if t is not None else None for t in texts]
    return [parsed.count(c) for c in class_ids]
