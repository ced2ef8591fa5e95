"""Prompt templates of the data builders and robust parsers of the LLM's answers.

The opinion template is the data-synthesis prompt of the GDPO paper
(appendix A) with its placeholders filled in: the country, how many styles,
the question and the choices. The parsers accept the answer layouts models
really produce (markdown bold, "Style 1 -", missing blank lines) and return
nothing they did not read: a style without a question or with a missing
answer is reported as a parse failure, never filled in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

OPINION_TEMPLATE = (
    "Assume all talks happen in the {group}, please generate {n_styles} different styles of "
    "one-turn small talks which may happen in different scenarios for the following "
    "Question-Choices pair, for each style, please:\n"
    "1. Choose one style name and show it in the first line, for example, Style 1: Casual and "
    "Friendly\n"
    "2. Paraphrase the question as Q for each style. For example, Q: What's your stance on "
    "defeating terrorism through military force?\n"
    "3. Generate {n_choices} answers from A1 to A{n_choices}, and each of them reflect one "
    "option in the Choices array.\n"
    "4. For each answer Ai, include the choice you use to generate at the beginning of the "
    "answer by []. For example, A1: [Many of the problems facing our country can be solved by "
    "working with other countries] Yes, but in some cases, military action may be necessary "
    "to protect our national security.\n"
    "5. Don't copy the exact words in the answer or use too uncommon words\n"
    "6. Have one empty line after each style's answers, but don't have empty lines within the "
    "style.\n\n"
    "The Question-Choices pair is:\n Question: {question}\n Choices: {choices}\n please "
    "generate small talks which have {n_choices} answers."
)

_STYLE = re.compile(r"^[\s*#_]*style\s*(\d+)\s*[:.\-)]*\s*(.*)$", re.IGNORECASE)
_QUESTION = re.compile(r"^[\s*#_]*q\s*\d*[\s*_]*[:.]\s*[*_]*\s*(.+)$", re.IGNORECASE)
_ANSWER = re.compile(r"^[\s*#_]*a\s*(\d+)[\s*_]*[:.)]\s*[*_]*\s*(.*)$", re.IGNORECASE)
_BRACKET = re.compile(r"^\[([^\]]*)\]\s*(.*)$", re.DOTALL)


def opinion_prompt(group: str, question: str, choices: Sequence[str], n_styles: int) -> str:
    """The appendix-A prompt for one question, its choices and a country."""
    return OPINION_TEMPLATE.format(
        group=group, n_styles=n_styles, question=question, choices=list(choices),
        n_choices=len(choices),
    )


@dataclass
class ParsedStyle:
    """One style of an answer: its name, the paraphrased question, answers by choice index."""

    name: str
    question: str = ""
    answers: dict[int, str] = field(default_factory=dict)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _choice_index(number: int, bracket: str | None, choices: Sequence[str]) -> int | None:
    """Which choice an ``A<number>: [bracket]`` answer expresses.

    The bracket names the choice the model meant; when it names another choice
    than the number does (models reorder), the bracket wins.
    """
    if bracket is not None:
        wanted = _norm(bracket)
        for i, choice in enumerate(choices):
            if _norm(choice) == wanted:
                return i
    return number - 1 if 1 <= number <= len(choices) else None


def parse_styles(text: str, choices: Sequence[str]) -> tuple[list[ParsedStyle], int]:
    """``(complete styles, failures)``: a style counts only with Q and every choice answered."""
    styles: list[ParsedStyle] = []
    for line in text.splitlines():
        if (match := _STYLE.match(line)) is not None:
            styles.append(ParsedStyle(match.group(2).strip(" *_") or f"Style {match.group(1)}"))
            continue
        if not styles:
            continue
        current = styles[-1]
        if (match := _ANSWER.match(line)) is not None:
            body = match.group(2).strip()
            bracket = None
            if (inner := _BRACKET.match(body)) is not None:
                bracket, body = inner.group(1), inner.group(2).strip()
            index = _choice_index(int(match.group(1)), bracket, choices)
            if index is not None and body and index not in current.answers:
                current.answers[index] = body.strip(' "*_')
        elif not current.question and (match := _QUESTION.match(line)) is not None:
            current.question = match.group(1).strip(' "*_')
    complete = [s for s in styles
                if s.question and all(i in s.answers for i in range(len(choices)))]
    failures = len(styles) - len(complete) if styles else 1
    return complete, failures


# ---------------------------------------------------------------- belief mining

PRINCIPLE_TEMPLATE = (
    "Below is a conversation between a human and an assistant, followed by two possible final "
    "assistant replies. An annotator preferred reply A over reply B.\n\n"
    "Conversation:\n{prompt}\n\nReply A (preferred):\n{chosen}\n\nReply B:\n{rejected}\n\n"
    "State, in one general sentence, the principle or belief that explains preferring A over "
    "B. Answer in the format:\nPrinciple: <one sentence>"
)

NAME_TEMPLATE = (
    "The following statements express similar principles:\n{statements}\n\n"
    "Write one short general statement that summarises them all. Answer in the format:\n"
    "Statement: <one sentence>"
)

LABEL_TEMPLATE = (
    "Below is a conversation, followed by two possible final assistant replies. An annotator "
    "preferred reply A over reply B.\n\nConversation:\n{prompt}\n\nReply A (preferred):\n"
    "{chosen}\n\nReply B:\n{rejected}\n\nStatement: {statement}\n\n"
    "Does preferring A over B agree with the statement, disagree with it, or is the statement "
    "not relevant (neutral)? Answer with one word: agree, disagree or neutral."
)

_PRINCIPLE = re.compile(r"^[\s*#_]*(principle|statement)[\s*_]*:\s*[*_]*\s*(.+)$",
                        re.IGNORECASE | re.MULTILINE)
_LABEL = re.compile(r"\b(disagree|agree|neutral)\b", re.IGNORECASE)
LABELS = ("agree", "disagree", "neutral")


# Small models often answer in prose instead: "The principle ... is that <sentence>".
_PROSE_PRINCIPLE = re.compile(r"\b(principle|belief)\b[^.:\n]{0,80}?\bis\s+(?:that\s+)?([^\n]+)",
                              re.IGNORECASE)


def parse_statement(text: str) -> str | None:
    """The sentence after ``Principle:`` or ``Statement:`` (or in "the principle ... is
    that ..." prose); None when there is none."""
    match = _PRINCIPLE.search(text)
    if match is None:
        match = _PROSE_PRINCIPLE.search(text)
    if match is None:
        return None
    statement = match.group(2).strip(' "*_')
    return statement or None


def parse_label(text: str) -> str | None:
    """agree, disagree or neutral: the first of these words in the answer; None otherwise."""
    match = _LABEL.search(text)
    return match.group(1).lower() if match else None
