"""Response writers of the opinions builder: who writes the styled questions and answers.

A writer takes the (question row, belief set) jobs of a build and returns,
per job, the usable styles: a question text (the prompt of the records) and
one response per belief. Two are registered in :data:`RESPONSE_WRITERS`:

``paper``
    The GDPO paper's appendix-A prompt: one request per question asks for
    every style, paraphrase and answer in a strict layout. Faithful to the
    paper, but only capable models follow the layout (the bundled
    SmolLM2-135M never did: every answer was unparsable).
``per-belief``
    Short requests a very small model can answer: one paraphrase per
    (question, style), then one or two sentences per (style, belief). A
    paraphrase that cannot be used is counted and replaced by the original
    question (style ``original``); an empty response is counted and makes
    its style unusable. Nothing is filled in that the model did not write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from pluralign.data.builders.cards import BuildReport
from pluralign.data.builders.prompts import (
    BELIEF_RESPONSE_TEMPLATE,
    OPINION_TEMPLATE,
    PARAPHRASE_STYLES,
    PARAPHRASE_TEMPLATE,
    ParsedStyle,
    clean_response,
    fits_only_its_question,
    opinion_prompt,
    parse_paraphrase,
    parse_styles,
)
from pluralign.data.records import Belief
from pluralign.llm import ChatRequest, ChatResult, LLMBackend
from pluralign.registry import Registry

if TYPE_CHECKING:  # opinions.py imports this module: no import cycle at run time
    from pluralign.data.builders.opinions import OpinionRow, OpinionsConfig

#: One unit of work: a question row and the belief set its options map to.
Job = tuple["OpinionRow", list[Belief]]

#: Requests sent to the backend per call; the progress bar advances per chunk.
CHUNK = 32

#: The style name of a record whose prompt is the survey question itself.
ORIGINAL_STYLE = "original"


@dataclass(frozen=True)
class ResponseWriter:
    """A writer function with its sampling defaults and the most styles it can make."""

    name: str
    write: Callable[[LLMBackend, list[Job], OpinionsConfig, BuildReport],
                    list[list[ParsedStyle]]]
    temperature: float
    max_tokens: int
    max_styles: int | None = None
    help: str = ""
    #: Whether its requests name the row's group. A writer whose requests do not is asked
    #: once per question: every group of it then gets the same wordings and responses
    #: (one question, several targets), and a build of six groups costs what one does.
    names_group: bool = False

    def write_once_per_question(self, backend: LLMBackend, jobs: list[Job],
                                config: OpinionsConfig, report: BuildReport
                                ) -> list[list[ParsedStyle]]:
        """:attr:`write` for ``jobs``; unless the requests name the group, each distinct
        (question, belief set) is written once and its styles shared by all its groups."""
        if self.names_group:
            return self.write(backend, jobs, config, report)
        first: dict[tuple[str, tuple[Belief, ...]], int] = {}
        for index, (row, beliefs) in enumerate(jobs):
            first.setdefault((row.question, tuple(beliefs)), index)
        written = self.write(backend, [jobs[i] for i in first.values()], config, report)
        styles = dict(zip(first, written, strict=True))
        return [styles[(row.question, tuple(beliefs))] for row, beliefs in jobs]

    def settings(self, config: OpinionsConfig) -> tuple[float, int]:
        """(temperature, max_tokens): the config's values, or this writer's defaults."""
        temperature = self.temperature if config.temperature is None else config.temperature
        max_tokens = self.max_tokens if config.max_tokens is None else config.max_tokens
        return temperature, max_tokens


RESPONSE_WRITERS: Registry[ResponseWriter] = Registry("response writer")


def complete_in_chunks(
    backend: LLMBackend, requests: Sequence[ChatRequest], desc: str
) -> list[ChatResult]:
    """Every request answered, ``CHUNK`` per backend call, with a progress bar."""
    results: list[ChatResult] = []
    for start in tqdm(range(0, len(requests), CHUNK), desc=desc, unit="batch",
                      disable=len(requests) <= CHUNK):
        results.extend(backend.complete(list(requests[start:start + CHUNK])))
    return results


def _zero(report: BuildReport, *names: str) -> None:
    for name in names:
        report.counts[name] += 0  # zero counts are shown too: "0 failures" is information


# ------------------------------------------------------------------ paper


def write_paper(
    backend: LLMBackend, jobs: list[Job], config: OpinionsConfig, report: BuildReport
) -> list[list[ParsedStyle]]:
    """The appendix-A prompt per job; failed requests and unparsable answers are counted."""
    temperature, max_tokens = RESPONSE_WRITERS.get("paper").settings(config)
    requests = [
        ChatRequest.from_prompt(
            opinion_prompt(row.group, row.question, [b.description for b in beliefs],
                           config.n_styles),
            temperature=temperature, max_tokens=max_tokens, seed=config.seed,
        )
        for row, beliefs in jobs
    ]
    results = complete_in_chunks(backend, requests, "opinions: LLM")
    _zero(report, "llm requests", "llm failures", "style parse failures")
    report.details["response writer"] = {
        "writer": "paper", "temperature": temperature, "max_tokens": max_tokens,
        "prompt": OPINION_TEMPLATE}
    out = []
    for (_, beliefs), result in zip(jobs, results, strict=True):
        report.counts["llm requests"] += 1
        if not result.ok or result.text is None:
            report.counts["llm failures"] += 1
            out.append([])
            continue
        styles, failures = parse_styles(result.text, [b.description for b in beliefs])
        report.counts["styles parsed"] += len(styles)
        report.counts["style parse failures"] += failures
        out.append(styles)
    return out


# ------------------------------------------------------------------ per-belief


def _paraphrases(
    backend: LLMBackend, jobs: list[Job], styles: Sequence[str], params: dict[str, Any],
    report: BuildReport,
) -> list[list[tuple[str, str]]]:
    """Per job, its distinct ``(style, question)`` variants; a failed paraphrase -> original."""
    requests = [ChatRequest.from_prompt(PARAPHRASE_TEMPLATE.format(question=row.question,
                                                                   style=style), **params)
                for row, _ in jobs for style in styles]
    results = iter(complete_in_chunks(backend, requests, "opinions: paraphrases"))
    _zero(report, "paraphrase requests", "paraphrase llm failures", "paraphrase parse failures",
          "paraphrases fitting another question as well",
          "paraphrase fallbacks (original question used)", "duplicate paraphrases merged")
    questions = sorted({row.question for row, _ in jobs})
    out = []
    for row, _ in jobs:
        variants: list[tuple[str, str]] = []
        for style in styles:
            question = _paraphrase_of(next(results), row.question, questions, report)
            if question is None:
                report.counts["paraphrase fallbacks (original question used)"] += 1
                style, question = ORIGINAL_STYLE, row.question
            if any(question == seen for _, seen in variants):
                # Greedy decoding often gives two styles the same question: one suffices.
                report.counts["duplicate paraphrases merged"] += 1
                continue
            variants.append((style, question))
        out.append(variants)
    return out


def _paraphrase_of(result: ChatResult, original: str, questions: Sequence[str],
                   report: BuildReport) -> str | None:
    """The usable paraphrase in ``result``, or None (counted by the reason)."""
    report.counts["paraphrase requests"] += 1
    if not result.ok or result.text is None:
        report.counts["paraphrase llm failures"] += 1
        return None
    question = parse_paraphrase(result.text, original)
    if question is None:
        report.counts["paraphrase parse failures"] += 1
        return None
    if not fits_only_its_question(question, original, questions):
        report.counts["paraphrases fitting another question as well"] += 1
        return None
    return question


def _responses(
    backend: LLMBackend, jobs: list[Job], variants: list[list[tuple[str, str]]],
    params: dict[str, Any], report: BuildReport,
) -> list[list[ParsedStyle]]:
    """One response per (job, variant, belief); a variant missing one is unusable (counted)."""
    keys = [(j, v, b) for j, (_, beliefs) in enumerate(jobs)
            for v in range(len(variants[j])) for b in range(len(beliefs))]
    requests = [ChatRequest.from_prompt(BELIEF_RESPONSE_TEMPLATE.format(
        question=variants[j][v][1], belief=jobs[j][1][b].description), **params)
        for j, v, b in keys]
    results = complete_in_chunks(backend, requests, "opinions: responses")
    _zero(report, "response requests", "response llm failures", "empty responses",
          "styles unusable (a belief without a response)",
          "styles unusable (two beliefs got the same response)")
    styles = [[ParsedStyle(name, question) for name, question in job] for job in variants]
    for (j, v, b), result in zip(keys, results, strict=True):
        report.counts["response requests"] += 1
        if not result.ok or result.text is None:
            report.counts["response llm failures"] += 1
            continue
        text = clean_response(result.text)
        if not text:
            report.counts["empty responses"] += 1
            continue
        styles[j][v].answers[b] = text
    return [_usable_styles(job, len(beliefs), report)
            for job, (_, beliefs) in zip(styles, jobs, strict=True)]


def _usable_styles(styles: list[ParsedStyle], n_beliefs: int, report: BuildReport
                   ) -> list[ParsedStyle]:
    """Styles with a response for every belief, all different (counted otherwise)."""
    usable = []
    for style in styles:
        if len(style.answers) < n_beliefs:
            report.counts["styles unusable (a belief without a response)"] += 1
        elif len(set(style.answers.values())) < n_beliefs:
            # Greedy decoding can give two beliefs the same text: such a pair would teach
            # nothing (chosen == rejected), and the response does not show its belief.
            report.counts["styles unusable (two beliefs got the same response)"] += 1
        else:
            usable.append(style)
    report.counts["styles usable"] += len(usable)
    return usable


def write_per_belief(
    backend: LLMBackend, jobs: list[Job], config: OpinionsConfig, report: BuildReport
) -> list[list[ParsedStyle]]:
    """Short requests: a paraphrase per (question, style), a response per (style, belief)."""
    temperature, max_tokens = RESPONSE_WRITERS.get("per-belief").settings(config)
    params = {"temperature": temperature, "max_tokens": max_tokens, "seed": config.seed}
    styles = PARAPHRASE_STYLES[: config.n_styles]
    report.details["response writer"] = {
        "writer": "per-belief", "styles": list(styles), "temperature": temperature,
        "max_tokens": max_tokens, "paraphrase prompt": PARAPHRASE_TEMPLATE,
        "response prompt": BELIEF_RESPONSE_TEMPLATE}
    variants = _paraphrases(backend, jobs, styles, params, report)
    return _responses(backend, jobs, variants, params, report)


# ------------------------------------------------------------------ framed

#: The "framed" writer's styles: the survey question word for word inside a conversational
#: frame. A model too small to paraphrase (the bundled SmolLM2-135M drops the item a Pew
#: question asks about, or copies the question) still yields distinct prompts per question.
FRAMINGS = {
    "casual": "Hey, random question for you. {question}",
    "formal": "I would appreciate your view on the following survey question. {question}",
    "curious": "I've been wondering about this lately. {question} What do you think?",
    "direct": "{question} Give me your answer.",
    "friendly": "Hi! I'd love to hear your opinion on something. {question}",
    "polite": "If you don't mind me asking: {question}",
}


def write_framed(
    backend: LLMBackend, jobs: list[Job], config: OpinionsConfig, report: BuildReport
) -> list[list[ParsedStyle]]:
    """A response per belief to the question itself; the styles are framings of it.

    Every framing of a question shares the responses (they answer the same question).
    """
    temperature, max_tokens = RESPONSE_WRITERS.get("framed").settings(config)
    params = {"temperature": temperature, "max_tokens": max_tokens, "seed": config.seed}
    styles = PARAPHRASE_STYLES[: config.n_styles]
    report.details["response writer"] = {
        "writer": "framed", "temperature": temperature, "max_tokens": max_tokens,
        "framings": {style: FRAMINGS[style] for style in styles},
        "response prompt": BELIEF_RESPONSE_TEMPLATE}
    answered = _responses(backend, jobs, [[(ORIGINAL_STYLE, row.question)] for row, _ in jobs],
                          params, report)
    return [[ParsedStyle(style, FRAMINGS[style].format(question=row.question),
                         dict(usable[0].answers)) for style in styles] if usable else []
            for (row, _), usable in zip(jobs, answered, strict=True)]


RESPONSE_WRITERS.register("paper", ResponseWriter(
    "paper", write_paper, temperature=1.0, max_tokens=1024, names_group=True,
    help="GDPO appendix-A prompt: all styles and answers of a question in one request "
         "(needs a capable model)."))
RESPONSE_WRITERS.register("per-belief", ResponseWriter(
    "per-belief", write_per_belief, temperature=0.0, max_tokens=80,
    max_styles=len(PARAPHRASE_STYLES),
    help="Short requests a small model can answer: one paraphrase per style, one response "
         "per (style, belief); unusable paraphrases fall back to the original question."))
RESPONSE_WRITERS.register("framed", ResponseWriter(
    "framed", write_framed, temperature=0.0, max_tokens=80, max_styles=len(FRAMINGS),
    help="One response per belief to the question itself; the styles are fixed framings "
         "around the unchanged question (for writers too small to paraphrase)."))
