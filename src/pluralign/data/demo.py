"""pluralign's bundled demo opinion set: 48 survey-style questions, 3 invented regions.

The questions, answers and regions (Northvale, Southmere, Eastholm) are
written by the project (``scripts/make_demo_data.py`` generates the file from
its own phrase lists); nothing is copied from an upstream survey. Each line
of ``resources/demo/opinions.jsonl`` is one question::

    {"id": "demo-001", "topic": ..., "scale": "agree",
     "question": ..., "paraphrase": ...,
     "beliefs": [{"class_id": 1, "description": "Strongly disagree"}, ...],
     "responses": ["I strongly disagree that ...", ...],   # one per belief, same order
     "shapes": {"Northvale": "uniform", ...},               # majority / polarised / uniform
     "distributions": {"Northvale": [0.22, ...], ...}}       # p* per group, belief order

Pairs are drawn as the GDPO paper draws them (accepted belief from the
group's distribution, rejected uniformly from the others) with the opinion
builder's :func:`draw_pairs`, and split by question with
:func:`split_examples`, so the demo data is built exactly like real data.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from pluralign.config import YamlConfig
from pluralign.data.builders.cards import BuildReport, BuildResult
from pluralign.data.builders.opinions import draw_pairs
from pluralign.data.builders.splits import SPLIT_METHODS, SPLIT_NAMES, split_examples
from pluralign.data.records import SUM_TOLERANCE, Belief, GroupPreferenceExample, RecordError
from pluralign.registry import BUILDERS

#: Where the demo set lives inside the package.
DEMO_RESOURCE = ("resources", "demo", "opinions.jsonl")
#: The demo's groups, in file order.
DEMO_GROUPS = ("Northvale", "Southmere", "Eastholm")
#: Prompt styles: the question as asked, and a casual paraphrase (held out in evaluation
#: to test generalisation to new wordings, the paper's setting).
DEMO_STYLES = ("direct", "casual")


class DemoDataError(ValueError):
    """A line of a demo question file is invalid; the message gives file:line: field."""


@dataclass(frozen=True)
class DemoQuestion:
    """One question: beliefs, one response per belief and ``p*`` per group."""

    id: str
    question: str
    paraphrase: str
    beliefs: tuple[Belief, ...]
    responses: tuple[str, ...]
    distributions: dict[str, tuple[float, ...]]
    topic: str = ""
    scale: str = ""
    shapes: dict[str, str] = field(default_factory=dict)

    def prompt(self, style: str) -> str:
        """The question in a style: ``direct`` (as asked) or ``casual`` (the paraphrase)."""
        if style not in DEMO_STYLES:
            raise ValueError(f"style must be one of {DEMO_STYLES}, got {style!r}")
        return self.question if style == "direct" else self.paraphrase


def demo_path() -> Path:
    """Path of the bundled question file."""
    return Path(str(resources.files("pluralign").joinpath(*DEMO_RESOURCE)))


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(name, f"must be a non-empty string, got {value!r}")
    return value


def _question_from_dict(data: dict[str, Any]) -> DemoQuestion:
    beliefs = tuple(Belief(b["class_id"], b["description"]) for b in data.get("beliefs", []))
    if len(beliefs) < 2 or len({b.class_id for b in beliefs}) != len(beliefs):
        raise RecordError("beliefs", "need at least 2 beliefs with distinct class ids")
    responses = data.get("responses")
    if not isinstance(responses, list) or len(responses) != len(beliefs):
        raise RecordError("responses", f"need one response per belief ({len(beliefs)})")
    if not all(isinstance(r, str) and r.strip() for r in responses):
        raise RecordError("responses", "every response must be a non-empty string")
    distributions = {}
    for group, probs in (data.get("distributions") or {}).items():
        if len(probs) != len(beliefs) or any(p < 0 for p in probs):
            raise RecordError("distributions", f"{group}: need {len(beliefs)} values >= 0")
        if abs(math.fsum(probs) - 1.0) > SUM_TOLERANCE:
            raise RecordError("distributions", f"{group}: sums to {math.fsum(probs)}, not 1")
        distributions[str(group)] = tuple(float(p) for p in probs)
    if not distributions:
        raise RecordError("distributions", "no group distribution")
    return DemoQuestion(
        id=_text(data, "id"), question=_text(data, "question"),
        paraphrase=_text(data, "paraphrase"), beliefs=beliefs, responses=tuple(responses),
        distributions=distributions, topic=str(data.get("topic", "")),
        scale=str(data.get("scale", "")), shapes=dict(data.get("shapes") or {}))


def load_demo_questions(path: str | Path) -> list[DemoQuestion]:
    """Questions of a demo-format JSONL file; a bad line raises :class:`DemoDataError`."""
    questions = []
    with open(path, encoding="utf-8") as handle:
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                questions.append(_question_from_dict(json.loads(line)))
            except json.JSONDecodeError as error:
                raise DemoDataError(f"{path}:{n}: invalid JSON: {error}") from None
            except RecordError as error:
                raise DemoDataError(f"{path}:{n}: field '{error.field}': {error.reason}"
                                    ) from None
            except (KeyError, TypeError, AttributeError) as error:
                raise DemoDataError(f"{path}:{n}: malformed question: {error!r}") from None
    return questions


@lru_cache(maxsize=1)
def _bundled() -> tuple[DemoQuestion, ...]:
    return tuple(load_demo_questions(demo_path()))


def demo_questions() -> list[DemoQuestion]:
    """The bundled demo questions (read once, then cached)."""
    return list(_bundled())


def _question_pairs(
    question: DemoQuestion, group: str, n: int, styles: Sequence[str], rng: random.Random,
    uniform: bool,
) -> list[GroupPreferenceExample]:
    probs = question.distributions[group]
    out = []
    for chosen, rejected in draw_pairs(probs, n, rng, uniform=uniform):
        style = rng.choice(list(styles))  # both responses answer the same prompt
        out.append(GroupPreferenceExample(
            prompt=question.prompt(style), beliefs=question.beliefs,
            target_distribution=probs, chosen_belief=question.beliefs[chosen].class_id,
            rejected_belief=question.beliefs[rejected].class_id,
            chosen_response=question.responses[chosen],
            rejected_response=question.responses[rejected], group=group,
            question_id=question.id, style=style,
            metadata={"topic": question.topic, "scale": question.scale,
                      "shape": question.shapes.get(group, ""), "source": "pluralign demo"}))
    return out


def _check_args(groups: Sequence[str], styles: Sequence[str], known: set[str]) -> None:
    unknown = sorted(set(groups) - known)
    if unknown:
        raise ValueError(f"unknown demo groups {unknown}; known: {sorted(known)}")
    if not styles or set(styles) - set(DEMO_STYLES):
        raise ValueError(f"styles must be a non-empty subset of {DEMO_STYLES}, got {styles}")


def demo_pairs(
    groups: Sequence[str] | None = None, *, pairs_per_question: int = 8, seed: int = 0,
    uniform: bool = False, styles: Sequence[str] = DEMO_STYLES,
    questions: Sequence[DemoQuestion] | None = None,
) -> list[GroupPreferenceExample]:
    """Every question x group's pairs (not split); see :func:`demo_records`."""
    questions = list(questions) if questions is not None else demo_questions()
    groups = list(groups) if groups else list(DEMO_GROUPS)
    _check_args(groups, styles, {g for q in questions for g in q.distributions})
    if pairs_per_question < 1:
        raise ValueError(f"pairs_per_question must be >= 1, got {pairs_per_question}")
    rng = random.Random(seed)
    examples = []
    for group in groups:
        for question in questions:
            if group in question.distributions:
                examples.extend(_question_pairs(question, group, pairs_per_question, styles,
                                                rng, uniform))
    return examples


def demo_records(
    groups: Sequence[str] | None = None, *, pairs_per_question: int = 8,
    split: str | None = None, seed: int = 0, uniform: bool = False,
    styles: Sequence[str] = DEMO_STYLES, fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> list[GroupPreferenceExample]:
    """Demo pairs for ``groups`` (default: all three), as the GDPO paper draws them.

    Per question and group, ``pairs_per_question`` pairs: accepted belief ~ the
    group's ``p*`` (uniform with ``uniform=True``, for uniform-SFT data),
    rejected uniform over the other beliefs. ``split`` ("train", "eval",
    "test") returns one split of a split by question (seeded with ``seed``; a
    question's pairs of every group and style are in one split); None returns
    all pairs. ``styles`` picks the prompt wordings drawn per pair.
    """
    examples = demo_pairs(groups, pairs_per_question=pairs_per_question, seed=seed,
                          uniform=uniform, styles=styles)
    if split is None:
        return examples
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES} or None, got {split!r}")
    return split_examples(examples, by="question", fractions=fractions, seed=seed)[split]


# ------------------------------------------------------------------ the builder


@dataclass
class DemoConfig(YamlConfig):
    """How to build pairs from the bundled demo opinion set."""

    groups: list[str] = field(
        default_factory=list,
        metadata={"help": f"Groups among {', '.join(DEMO_GROUPS)}; empty: all of them."},
    )
    pairs_per_question: int = field(default=8, metadata={"help": "Pairs per question and group."})
    uniform: bool = field(
        default=False, metadata={"help": "Draw the accepted belief uniformly (uniform-SFT)."}
    )
    styles: list[str] = field(
        default_factory=lambda: list(DEMO_STYLES),
        metadata={"help": "Prompt wordings: direct (as asked) and/or casual (paraphrase)."},
    )
    split_by: str = field(default="question", metadata={"help": "question or example."})
    fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "train/eval/test fractions."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of pairs and splits."})

    #: The older option names of ``pluralign data demo``: ``--group`` (``-g``), ``--style``.
    config_aliases: ClassVar[dict[str, str]] = {"group": "groups", "style": "styles"}

    def __post_init__(self) -> None:
        if self.split_by not in SPLIT_METHODS:
            raise ValueError(f"split_by: must be one of {SPLIT_METHODS}, got {self.split_by!r}")
        if self.pairs_per_question < 1:
            raise ValueError(f"pairs_per_question: must be >= 1, got {self.pairs_per_question}")
        if len(self.fractions) != 3 or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"fractions: need 3 numbers summing to 1, got {self.fractions}")


@BUILDERS.register("demo")
def build_demo(config: DemoConfig | None = None) -> BuildResult:
    """pluralign's own demo opinion set (48 questions, 3 invented regions); no LLM needed."""
    config = config or DemoConfig()
    report = BuildReport("demo", f"pluralign bundled demo set ({demo_path().name})", config.seed)
    questions = demo_questions()
    examples = demo_pairs(config.groups or None, pairs_per_question=config.pairs_per_question,
                          seed=config.seed, uniform=config.uniform, styles=config.styles,
                          questions=questions)
    groups = config.groups or list(DEMO_GROUPS)
    report.counts["questions"] = len(questions)
    report.counts["groups"] = len(groups)
    report.counts["pairs"] = len(examples)
    report.details["pair drawing"] = (
        "accepted belief " + ("uniform" if config.uniform else "~ group p*")
        + ", rejected uniform over the other beliefs; styles " + ", ".join(config.styles))
    splits = split_examples(examples, by=config.split_by, fractions=config.fractions,
                            seed=config.seed)
    return BuildResult(splits, report, config.split_by)
