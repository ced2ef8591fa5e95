"""Belief mining (GDPO paper, appendix I) for preference sets without beliefs.

1. The LLM states the principle behind each chosen-over-rejected choice.
2. The statements are embedded (the bundled MiniLM through
   :func:`pluralign.models.embed.embed_texts`) and clustered with seeded
   k-means on the unit sphere; each cluster is named by its medoid
   statement, or by the LLM with ``name_with_llm``.
3. The LLM labels every example agree / disagree / neutral per statement.
   An example whose own principle fell into a statement's cluster agrees
   with that statement (the LLM said so when it stated the principle), so by
   default it is not asked again (``own_principle_agrees``); the card counts
   both sources and each record says which one its label came from.
4. Per statement, agree and disagree counts give the distribution; every
   non-neutral label becomes a record whose chosen belief is the label.

With the bundled SmolLM2-135M the labelling step is the weak one: it answered
"The statement is not relevant to the conversation." (neutral) to nearly
every label request, so without the own-principle labels no statement got
an agree/disagree label and no record was built. A labeller that gives one
label to everything is reported in the card's warnings.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pluralign.config import YamlConfig
from pluralign.data.builders.cards import BuildReport, BuildResult
from pluralign.data.builders.opinions import LLM_ALIASES
from pluralign.data.builders.prompts import (
    LABEL_TEMPLATE,
    NAME_TEMPLATE,
    PRINCIPLE_TEMPLATE,
    parse_label,
    parse_statement,
)
from pluralign.data.builders.splits import SPLIT_METHODS, split_examples
from pluralign.data.records import Belief, GroupPreferenceExample, distribution_from_counts
from pluralign.llm import ChatRequest, LLMBackend, LLMConfig, make_backend
from pluralign.registry import BUILDERS

ASSISTANT = "\n\nAssistant:"
DISAGREE, AGREE = 0, 1
#: Token caps by step: a principle is one sentence, a label one word (the first
#: label phrase decides), so long caps only cost time on a CPU.
MAX_TOKENS = {"principle": 96, "name": 96, "label": 32}


@dataclass
class MiningConfig(YamlConfig):
    """How to mine beliefs from a chosen/rejected preference set."""

    source: str = field(
        default="", metadata={"help": "JSONL(.gz) with chosen and rejected transcripts."}
    )
    max_examples: int = field(default=50, metadata={"help": "Use the first N examples."})
    num_statements: int = field(
        default=5, metadata={"help": "How many statements (clusters) to keep at most."}
    )
    name_with_llm: bool = field(
        default=False,
        metadata={"help": "Name each cluster with the LLM instead of its medoid statement."},
    )
    own_principle_agrees: bool = field(
        default=True,
        metadata={"help": "An example whose own stated principle is in a statement's cluster "
                          "agrees with that statement without a label request; false: the "
                          "LLM labels every example for every statement (paper, appendix I)."},
    )
    group: str = field(default="annotators", metadata={"help": "Group name of the records."})
    embedder: str | None = field(
        default=None, metadata={"help": "Sentence-transformer folder; None: the bundled one."}
    )
    split_by: str = field(default="question", metadata={"help": "question or example."})
    fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "train/eval/test fractions."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of clustering and splits."})
    llm: LLMConfig = field(
        default_factory=LLMConfig, metadata={"help": "The LLM that states and labels."}
    )

    #: The older ``--llm-*`` option names (``--llm-backend openai``).
    config_aliases: ClassVar[dict[str, str]] = dict(LLM_ALIASES)

    def __post_init__(self) -> None:
        if self.max_examples < 1 or self.num_statements < 1:
            raise ValueError("max_examples and num_statements must be >= 1")
        if self.split_by not in SPLIT_METHODS:
            raise ValueError(f"split_by: must be one of {SPLIT_METHODS}, got {self.split_by!r}")


@dataclass(frozen=True)
class PreferencePair:
    """A conversation prefix and its two final assistant replies."""

    key: str
    prompt: str
    chosen: str
    rejected: str


def split_transcript(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """``(prompt, chosen reply, rejected reply)`` of two HH-style transcripts; None if unusable."""
    cut = chosen.rfind(ASSISTANT)
    if cut < 0:
        return None
    prompt = chosen[: cut + len(ASSISTANT)]
    if rejected.startswith(prompt):
        rejected_reply = rejected[len(prompt):]
    else:
        other = rejected.rfind(ASSISTANT)
        if other < 0:
            return None
        rejected_reply = rejected[other + len(ASSISTANT):]
    reply_c, reply_r = chosen[cut + len(ASSISTANT):].strip(), rejected_reply.strip()
    if not reply_c or not reply_r or reply_c == reply_r:
        return None
    return prompt.strip(), reply_c, reply_r


def load_pairs(path: str | Path, limit: int, report: BuildReport) -> list[PreferencePair]:
    """The first ``limit`` usable pairs; unusable ones are counted."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    pairs: list[PreferencePair] = []
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        for n, line in enumerate(handle, start=1):
            if len(pairs) >= limit:
                break
            if not line.strip():
                continue
            data = json.loads(line)
            split = split_transcript(str(data.get("chosen", "")), str(data.get("rejected", "")))
            if split is None:
                report.skip("pair without two distinct final replies")
                continue
            pairs.append(PreferencePair(f"{path.name}:{n}", *split))
    return pairs


def _ask(backend: LLMBackend, prompts: Sequence[str], report: BuildReport, what: str,
         parse: Callable[[str], Any]) -> list[Any]:
    """Answers parsed with ``parse``; failed requests and unparsable answers count as None."""
    results = backend.complete([ChatRequest.from_prompt(p, max_tokens=MAX_TOKENS[what])
                                for p in prompts])
    for name in ("requests", "llm failures", "parse failures"):
        report.counts[f"{what} {name}"] += 0  # zero counts are shown too
    out = []
    for result in results:
        report.counts[f"{what} requests"] += 1
        if not result.ok or result.text is None:
            report.counts[f"{what} llm failures"] += 1
            out.append(None)
            continue
        parsed = parse(result.text)
        if parsed is None:
            report.counts[f"{what} parse failures"] += 1
        out.append(parsed)
    return out


def kmeans(vectors: np.ndarray, k: int, seed: int, iterations: int = 50) -> np.ndarray:
    """Cluster labels of unit vectors by cosine k-means (k-means++ start, seeded)."""
    rng = np.random.default_rng(seed)
    x = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        dist = np.min([1 - x @ c for c in centres], axis=0).clip(min=0)
        if dist.sum() <= 0:
            break  # fewer distinct statements than k
        centres.append(x[rng.choice(len(x), p=dist / dist.sum())])
    c = np.stack(centres)
    labels = np.zeros(len(x), dtype=int)
    for _ in range(iterations):
        new = np.argmax(x @ c.T, axis=1)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(c)):
            members = x[labels == j]
            if len(members):
                c[j] = members.mean(0) / max(np.linalg.norm(members.mean(0)), 1e-12)
    return labels


def group_statements(
    statements: list[str], k: int, seed: int, embedder: str | None = None
) -> list[tuple[str, list[int]]]:
    """``[(medoid statement, member indices)]``, largest cluster first."""
    from pluralign.models.embed import embed_texts

    vectors = np.asarray(embed_texts(statements, embedder), dtype=np.float64)
    labels = kmeans(vectors, min(k, len(statements)), seed)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    clusters = []
    for label in sorted(set(labels.tolist())):
        members = [i for i, lab in enumerate(labels) if lab == label]
        sims = unit[members] @ unit[members].T
        medoid = members[int(np.argmax(sims.sum(axis=1)))]
        clusters.append((statements[medoid], members))
    return sorted(clusters, key=lambda c: (-len(c[1]), c[0]))


def _records_for_statement(
    statement: str, sid: int, pairs: list[PreferencePair], labels: list[str | None],
    sources: list[str], group: str, report: BuildReport,
) -> list[GroupPreferenceExample]:
    counts = Counter(label for label in labels if label is not None)
    report.details.setdefault("label counts per statement", {})[statement] = dict(counts)
    if counts["agree"] + counts["disagree"] == 0:
        report.skip("statement with no agree/disagree label")
        return []
    probs = distribution_from_counts([counts["disagree"], counts["agree"]])
    beliefs = [Belief(DISAGREE, f"Disagree: {statement}"), Belief(AGREE, f"Agree: {statement}")]
    out = []
    for pair, label, source in zip(pairs, labels, sources, strict=True):
        if label not in ("agree", "disagree"):
            continue
        chosen = AGREE if label == "agree" else DISAGREE
        out.append(GroupPreferenceExample(
            prompt=pair.prompt, beliefs=beliefs, target_distribution=probs,
            chosen_belief=chosen, rejected_belief=1 - chosen,
            chosen_response=pair.chosen, rejected_response=pair.rejected, group=group,
            question_id=pair.key,
            metadata={"statement": statement, "statement_id": sid, "label_source": source},
        ))
    return out


def _label_statement(
    backend: LLMBackend, pairs: list[PreferencePair], statement: str, own: list[bool],
    report: BuildReport,
) -> tuple[list[str | None], list[str]]:
    """``(labels, sources)`` of every pair for one statement; own-cluster pairs agree."""
    asked = [i for i, mine in enumerate(own) if not mine]
    answers = _ask(backend, [LABEL_TEMPLATE.format(prompt=pairs[i].prompt, chosen=pairs[i].chosen,
                                                   rejected=pairs[i].rejected,
                                                   statement=statement) for i in asked],
                   report, "label", parse_label)
    labels: list[str | None] = ["agree"] * len(pairs)
    sources = ["own principle"] * len(pairs)
    for i, answer in zip(asked, answers, strict=True):
        labels[i], sources[i] = answer, "labeller"
        if answer is not None:
            report.details.setdefault("labeller answers", Counter())[answer] += 1
    report.counts["labels from the example's own principle"] += len(pairs) - len(asked)
    return labels, sources


def _warn_if_uninformative(report: BuildReport) -> None:
    """A labeller that gives every request the same label says nothing about the data."""
    answers = report.details.get("labeller answers")
    if answers is None:
        return
    report.details["labeller answers"] = dict(answers)
    if len(answers) == 1 and sum(answers.values()) >= 5:
        (label, n), = answers.items()
        report.warn(f"the labeller answered '{label}' to all {n} label requests it answered: "
                    "its labels carry no information about the examples (use a larger LLM)")


@BUILDERS.register("mine")
def build_mining(config: MiningConfig, backend: LLMBackend | None = None) -> BuildResult:
    """Belief mining: LLM principles -> grouped statements -> agree/disagree distributions."""
    if not config.source:
        raise ValueError("source: a chosen/rejected JSONL file is required")
    report = BuildReport("mine", config.source, config.seed)
    pairs = load_pairs(config.source, config.max_examples, report)
    report.counts["pairs read"] = len(pairs)
    backend = backend or make_backend(config.llm)
    principles = _ask(backend, [PRINCIPLE_TEMPLATE.format(prompt=p.prompt, chosen=p.chosen,
                                                          rejected=p.rejected) for p in pairs],
                      report, "principle", parse_statement)
    stated = [i for i, s in enumerate(principles) if s]  # pair index of each statement
    if not stated:
        report.warn("no principle could be read from the LLM: nothing to mine")
        return BuildResult({"train": [], "eval": [], "test": []}, report, config.split_by)
    clusters = group_statements([principles[i] for i in stated], config.num_statements,
                                config.seed, config.embedder)
    names = [c[0] for c in clusters]
    if config.name_with_llm:
        asked = _ask(backend, [NAME_TEMPLATE.format(statements="\n".join(
            f"- {principles[stated[i]]}" for i in members)) for _, members in clusters],
            report, "name", parse_statement)
        names = [a or medoid for a, medoid in zip(asked, names, strict=True)]
    report.details["statements"] = {n: len(m) for n, (_, m) in zip(names, clusters, strict=True)}
    report.counts["labels from the example's own principle"] += 0
    examples: list[GroupPreferenceExample] = []
    for sid, (name, (_, members)) in enumerate(zip(names, clusters, strict=True)):
        mine = {stated[i] for i in members} if config.own_principle_agrees else set()
        labels, sources = _label_statement(backend, pairs, name,
                                           [i in mine for i in range(len(pairs))], report)
        examples.extend(_records_for_statement(name, sid, pairs, labels, sources, config.group,
                                               report))
    _warn_if_uninformative(report)
    report.counts["records"] = len(examples)
    splits = split_examples(examples, by=config.split_by, fractions=config.fractions,
                            seed=config.seed)
    return BuildResult(splits, report, config.split_by)
