"""Opinion QA data: GlobalOpinionQA questions -> styled dialogues -> belief pairs.

For each question and group (country) the options are mapped to belief
classes (several options of one class pool their probability), the LLM
paraphrases the question in several styles and writes one answer per belief
(a response writer of :mod:`pluralign.data.builders.writers`: the GDPO
paper's appendix-A prompt, or short per-belief requests that small models can
answer), and pairs are drawn as in the paper:
the accepted belief from the group's distribution (or uniformly, for
uniform-SFT data), the rejected one uniformly from the other beliefs, both
responses from the same style.
"""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pluralign.config import YamlConfig, reject_non_finite
from pluralign.data.builders.cards import BuildReport, BuildResult, OptionMapComparison
from pluralign.data.builders.option_rules import (
    DEFAULT_MAP,
    bundled_map_name,
    describe_option_map,
    load_option_map,
    option_map_differences,
)
from pluralign.data.builders.prompts import ParsedStyle
from pluralign.data.builders.splits import SPLIT_METHODS, split_examples
from pluralign.data.builders.writers import ORIGINAL_STYLE, RESPONSE_WRITERS
from pluralign.data.records import Belief, GroupPreferenceExample
from pluralign.llm import LLMBackend, LLMConfig, make_backend
from pluralign.registry import BUILDERS, UnknownNameError

#: The GlobalOpinionQA dataset on the Hugging Face Hub.
HUB_ID = "Anthropic/llm_global_opinions"

_DEFAULTDICT = re.compile(r"^\s*defaultdict\(\s*<class '\w+'>\s*,\s*(.*)\)\s*$", re.DOTALL)


# ------------------------------------------------------------------ input rows


@dataclass(frozen=True)
class OpinionRow:
    """One question with one group's answer distribution over its options."""

    question: str
    options: tuple[str, ...]
    distribution: tuple[float, ...]
    group: str
    source: str = ""


def parse_selections(text: str) -> dict[str, list[float]]:
    """The upstream ``selections`` string -> ``{country: [p1, p2, ...]}``.

    Upstream stores ``defaultdict(<class 'list'>, {...})``; the wrapper is
    stripped and the dict literal read with ``ast.literal_eval``, which reads
    literals only: text that would run code raises ``ValueError``.
    """
    match = _DEFAULTDICT.match(text)
    body = match.group(1) if match else text
    try:
        value = ast.literal_eval(body.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        raise ValueError(f"selections is not a dict literal: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"selections must be a dict, got {type(value).__name__}")
    out = {}
    for group, probs in value.items():
        if not isinstance(probs, (list, tuple)) or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) for p in probs
        ):
            raise ValueError(f"selections[{group!r}] must be a list of numbers")
        out[str(group)] = [float(p) for p in probs]
    return out


def parse_options(text: str | Sequence[Any]) -> list[str]:
    """An ``options`` value (a list, or its string form) -> list of option strings."""
    if isinstance(text, str):
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
            raise ValueError(f"options is not a list literal: {error}") from None
    else:
        value = text
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"options must be a list, got {type(value).__name__}")
    return [str(o) for o in value]


def _rows_from_record(data: dict[str, Any], where: str) -> Iterator[OpinionRow]:
    """Rows of one input record: our layout (distribution + group) or upstream's (selections)."""
    options = tuple(parse_options(data["options"]))
    source = str(data.get("source", ""))
    if "selections" in data and data["selections"] not in (None, ""):
        selections = data["selections"]
        if isinstance(selections, str):
            selections = parse_selections(selections)
        for group, probs in selections.items():
            yield OpinionRow(str(data["question"]), options, _checked_probs(probs, where),
                             str(group), source)
        return
    distribution = data["distribution"]
    if isinstance(distribution, str):
        distribution = json.loads(distribution)
    if "group" not in data:
        raise ValueError(f"{where}: needs a 'group' with 'distribution', or 'selections'")
    yield OpinionRow(str(data["question"]), options, _checked_probs(distribution, where),
                     str(data["group"]), source)


def _checked_probs(values: Any, where: str) -> tuple[float, ...]:
    """Floats of a source distribution; a negative or non-finite share is an error at
    ``where`` (file:line), which the loader counts and skips."""
    probs = tuple(float(p) for p in values)
    bad = [p for p in probs if not math.isfinite(p) or p < 0]
    if bad:
        raise ValueError(f"distribution has a negative or non-finite share ({bad[0]})")
    return probs


def _records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:  # type: ignore[operator]
        if ".csv" in path.suffixes:
            for n, row in enumerate(csv.DictReader(handle), start=2):
                yield f"{path}:{n}", row
            return
        for n, line in enumerate(handle, start=1):
            if line.strip():
                yield f"{path}:{n}", json.loads(line)


def load_opinion_rows(source: str, report: BuildReport | None = None) -> list[OpinionRow]:
    """Rows from a local JSONL/CSV file, or from the Hub by id (e.g. ``HUB_ID``).

    A row that cannot be read is counted in ``report`` (``bad input row``),
    with a warning naming file:line, and skipped.
    """
    path = Path(source)
    if path.exists():
        records: Iterator[tuple[str, dict[str, Any]]] = _records(path)
    else:
        from pluralign.data.builders.hub import load_hub_dataset

        # No Hub and no cache -> one line naming the id (HubUnavailableError), no traceback.
        hub = load_hub_dataset(source, split="train",
                               hint="pass a local JSONL/CSV copy with --source")
        records = ((f"{source}[{i}]", dict(r)) for i, r in enumerate(hub))
    rows: list[OpinionRow] = []
    for where, data in records:
        try:
            rows.extend(_rows_from_record(data, where))
        except (KeyError, ValueError, TypeError, json.JSONDecodeError) as error:
            if report is None:
                raise ValueError(f"{where}: {error}") from None
            report.skip("bad input row")
            report.warn(f"{where}: skipped: {type(error).__name__}: {error}")
    return rows


# ------------------------------------------------------------------ option map


#: A source distribution further than this from summing to 1 is rescaled and counted.
RESCALE_TOLERANCE = 0.01


def beliefs_of_row(
    row: OpinionRow, option_map: dict[str, int], report: BuildReport
) -> tuple[list[Belief], list[float], list[list[str]]] | None:
    """Belief set, p* and the options behind each belief; None (counted) when unmappable."""
    if len(row.options) != len(row.distribution):
        report.skip("options and distribution differ in length")
        return None
    unmapped = [o for o in row.options if o not in option_map]
    if unmapped:
        report.unmapped_options.update(unmapped)
        report.skip("row has unmapped options")
        return None
    pooled: dict[int, float] = {}
    options_of: dict[int, list[str]] = {}
    for option, prob in zip(row.options, row.distribution, strict=True):
        cls = option_map[option]
        pooled[cls] = pooled.get(cls, 0.0) + prob  # several options of one class: sum
        options_of.setdefault(cls, []).append(option)
    total = sum(pooled.values())
    if len(pooled) < 2:
        report.skip("fewer than 2 belief classes")
        return None
    if total <= 0:
        report.skip("distribution sums to 0")
        return None
    if abs(total - 1.0) > RESCALE_TOLERANCE:  # kept (p* is the shares' proportions), counted
        report.counts["distributions rescaled to sum to 1"] += 1
    classes = sorted(pooled)
    beliefs = [Belief(c, " / ".join(options_of[c])) for c in classes]
    return beliefs, [pooled[c] / total for c in classes], [options_of[c] for c in classes]


def compare_with_default(
    spec: str | None, option_map: dict[str, int], rows: Sequence[OpinionRow]
) -> OptionMapComparison:
    """Where the build's map (``spec``, loaded as ``option_map``) differs from the default,
    with how many of the build's ``rows`` carry each differing option (for the card)."""
    if bundled_map_name(spec) == DEFAULT_MAP:
        return OptionMapComparison(is_default=True)
    default = load_option_map(DEFAULT_MAP)
    carried = Counter(option for row in rows for option in set(row.options))
    return OptionMapComparison(
        differences=tuple((option, ours, theirs, carried[option]) for option, ours, theirs
                          in option_map_differences(option_map, default)),
        only_selected=len(option_map.keys() - default.keys()),
        only_default=len(default.keys() - option_map.keys()),
    )


# ------------------------------------------------------------------ the builder

#: The older LLM option names of ``pluralign data opinions`` and ``mine``
#: (``--llm-backend openai``), each on its LLMConfig field.
LLM_ALIASES: dict[str, str] = {
    "llm_backend": "llm.backend", "llm_model": "llm.model", "base_url": "llm.base_url",
    "api_key_env": "llm.api_key_env", "llm_cache": "llm.cache_dir",
    "llm_timeout": "llm.timeout", "llm_retries": "llm.max_retries"}


@dataclass
class OpinionsConfig(YamlConfig):
    """How to build opinion QA pairs from GlobalOpinionQA."""

    source: str = field(
        default=HUB_ID,
        metadata={"help": "A local JSONL/CSV file (fields question, options, distribution, "
                          "group; or upstream's selections) or a Hub dataset id."},
    )
    groups: list[str] = field(
        default_factory=list,
        metadata={"help": "Groups (countries) to build, into one dataset (repeat -g for several; "
                          "every group of a question shares its wordings and responses unless "
                          "the writer names the group, and its split); empty: every group in "
                          "the source. Train one model on several with --group_in_prompt."},
    )
    option_map: str | None = field(
        default=None,
        metadata={"help": "Option -> class map: a bundled map's name, default (pluralign's "
                          "rules) or paper (the GDPO paper's Table 5 map), or a JSON file "
                          "option -> class id; None: default. The card lists where the map "
                          "differs from the default."},
    )
    writer: str = field(
        default="per-belief",
        metadata={"help": "Who writes the styled questions and responses. per-belief (default): "
                          "short requests (one paraphrase per style, one or two sentences per "
                          "style and belief) that even the bundled SmolLM2-135M answers; a "
                          "paraphrase it cannot use is replaced by the question itself (style "
                          "'original', counted). paper: the GDPO paper's appendix-A prompt, "
                          "all styles and answers of a question in one request, for capable "
                          "models only (the bundled model never follows its layout). framed: "
                          "one response per belief to the question itself, the styles are "
                          "fixed conversational framings around the unchanged question (when "
                          "the model is too small to paraphrase: the bundled model's "
                          "paraphrases keep the question in about 1 of 10 requests)."},
    )
    n_styles: int = field(
        default=3,
        metadata={"help": "Paraphrase styles asked per question (per-belief and framed: at "
                          "most 6, casual, formal, curious, direct, friendly, polite in this "
                          "order)."},
    )
    pairs_per_question: int = field(
        default=30, metadata={"help": "Pairs drawn per question and group."}
    )
    uniform: bool = field(
        default=False,
        metadata={"help": "Draw the accepted belief uniformly (uniform-SFT data) instead of "
                          "from the group's distribution."},
    )
    max_questions: int | None = field(
        default=None, metadata={"help": "Use at most this many rows (question x group)."}
    )
    split_by: str = field(
        default="question",
        metadata={"help": "question (no question in two splits) or example."},
    )
    fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1],
        metadata={"help": "train/eval/test fractions."},
    )
    temperature: float | None = field(
        default=None,
        metadata={"help": "Sampling temperature of the LLM requests; None: the writer's "
                          "default (paper 1.0, per-belief 0.0 = greedy)."},
    )
    max_tokens: int | None = field(
        default=None,
        metadata={"help": "Token cap of one LLM answer; None: the writer's default (paper "
                          "1024, per-belief 80)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of sampling, pairs and splits."})
    llm: LLMConfig = field(
        default_factory=LLMConfig, metadata={"help": "The LLM that writes the dialogues."}
    )

    #: Older and shorter names: ``--group`` (repeated, ``-g``), ``--styles``, ``--llm-*``.
    config_aliases: ClassVar[dict[str, str]] = {
        "group": "groups", "styles": "n_styles", **LLM_ALIASES}

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if self.split_by not in SPLIT_METHODS:
            raise ValueError(f"split_by: must be one of {SPLIT_METHODS}, got {self.split_by!r}")
        try:  # an unknown map name fails now, not after the rows are read
            bundled_map_name(self.option_map)
        except ValueError as error:
            raise ValueError(f"option_map: {error}") from None
        try:
            writer = RESPONSE_WRITERS.get(self.writer)
        except UnknownNameError as error:
            raise ValueError(f"writer: {error}") from None
        for name in ("n_styles", "pairs_per_question"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if writer.max_styles is not None and self.n_styles > writer.max_styles:
            raise ValueError(f"n_styles: the {self.writer} writer has {writer.max_styles} "
                             f"styles, got {self.n_styles}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {self.max_tokens}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if self.max_questions is not None and self.max_questions < 1:
            raise ValueError(f"max_questions: must be >= 1, got {self.max_questions}")
        if len(self.fractions) != 3 or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"fractions: need 3 numbers summing to 1, got {self.fractions}")


def question_id(question: str) -> str:
    """A stable id of a question text, shared by all groups that answered it."""
    return "q-" + hashlib.sha1(question.encode("utf-8")).hexdigest()[:12]


def draw_pairs(
    probs: Sequence[float], n: int, rng: random.Random, *, uniform: bool = False
) -> list[tuple[int, int]]:
    """``n`` (chosen, rejected) belief positions.

    Chosen ~ ``probs`` (uniform with ``uniform=True``), rejected uniform over
    the other positions.
    """
    positions = list(range(len(probs)))
    pairs = []
    for _ in range(n):
        chosen = rng.choice(positions) if uniform else rng.choices(positions, weights=probs)[0]
        rejected = rng.choice([p for p in positions if p != chosen])
        pairs.append((chosen, rejected))
    return pairs


def _pairs_for_row(
    row: OpinionRow, beliefs: list[Belief], probs: list[float], options: list[list[str]],
    styles: list[ParsedStyle], config: OpinionsConfig, rng: random.Random,
) -> list[GroupPreferenceExample]:
    qid = question_id(row.question)
    examples = []
    for chosen, rejected in draw_pairs(probs, config.pairs_per_question, rng,
                                       uniform=config.uniform):
        style = rng.choice(styles)  # both responses come from the same style
        examples.append(GroupPreferenceExample(
            prompt=style.question, beliefs=beliefs, target_distribution=probs,
            chosen_belief=beliefs[chosen].class_id, rejected_belief=beliefs[rejected].class_id,
            chosen_response=style.answers[chosen], rejected_response=style.answers[rejected],
            group=row.group, question_id=qid, style=style.name,
            metadata={"question": row.question, "options": options, "source": row.source},
        ))
    return examples


@BUILDERS.register("opinions")
def build_opinions(
    config: OpinionsConfig, backend: LLMBackend | None = None
) -> BuildResult:
    """GlobalOpinionQA -> styled belief pairs written by ``config.writer``."""
    report = BuildReport("opinions", config.source, config.seed)
    option_map = load_option_map(config.option_map)
    rows = load_opinion_rows(config.source, report)
    report.counts["input rows"] = len(rows)
    wanted = set(config.groups)
    if wanted:
        missing = sorted(wanted - {r.group for r in rows})
        if missing:
            report.warn(f"groups not in the source: {missing}")
        rows = [r for r in rows if r.group in wanted]
    rows = rows[: config.max_questions] if config.max_questions else rows
    report.counts["rows of the chosen groups"] = len(rows)
    report.option_map_comparison = compare_with_default(config.option_map, option_map, rows)
    jobs = []
    for row in rows:
        mapped = beliefs_of_row(row, option_map, report)
        if mapped is not None:
            jobs.append((row, *mapped))
    if report.unmapped_options:
        report.warn(f"{len(report.unmapped_options)} options are not in the option map; "
                    f"{report.skipped['row has unmapped options']} rows skipped (see the card)")
    backend = backend or make_backend(config.llm)
    writer = RESPONSE_WRITERS.get(config.writer)
    styles_per_job = writer.write_once_per_question(backend, [(j[0], j[1]) for j in jobs],
                                                    config, report)
    rng = random.Random(config.seed)
    examples: list[GroupPreferenceExample] = []
    for (row, beliefs, probs, options), styles in zip(jobs, styles_per_job, strict=True):
        if not styles:
            report.skip("no usable style from the LLM")
            continue
        report.counts["questions kept"] += 1
        examples.extend(_pairs_for_row(row, beliefs, probs, options, styles, config, rng))
    report.counts["pairs"] = len(examples)
    failed = sum(n for what, n in report.counts.items() if what.endswith("llm failures"))
    if failed:
        report.warn(f"{failed} LLM requests failed: {backend.stats.summary()}")
    fallbacks = report.counts["paraphrase fallbacks (original question used)"]
    if fallbacks:
        report.warn(f"{fallbacks} of {report.counts['paraphrase requests']} paraphrases were "
                    f"unusable: the original question was used instead (style "
                    f"'{ORIGINAL_STYLE}')")
    splits = split_examples(examples, by=config.split_by, fractions=config.fractions,
                            seed=config.seed)
    return BuildResult(splits, report, config.split_by, describe_option_map(config.option_map))
