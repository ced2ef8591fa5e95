"""Prompt templates of the data builders and robust parsers of the LLM's answers.

The opinion template is the data-synthesis prompt of the GDPO paper
(appendix A) with its placeholders filled in: the country, how many styles,
the question and the choices. The parsers accept the answer layouts models
really produce (markdown bold, "Style 1 -", missing blank lines) and return
nothing they did not read: a style without a question or with a missing
answer is reported as a parse failure, never filled in.

The per-belief templates split that one long request into short ones a very
small model can answer (one paraphrase, or one answer for one belief); their
parsers return None or "" for an answer they cannot use, never a made-up one.
"""

from __future__ import annotations

import itertools
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


# ------------------------------------------------- per-belief writer (small models)

#: Paraphrase styles of the per-belief writer, in the order they are used.
PARAPHRASE_STYLES = ("casual", "formal", "curious", "direct", "friendly", "polite")

# "How would a <style> person ask a friend" made the bundled SmolLM2-135M write a
# question in about 3 of 4 answers; "rewrite this question" made it answer instead.
PARAPHRASE_TEMPLATE = (
    "Here is a survey question:\n{question}\n\nHow would a {style} person ask a friend this "
    "question? Write just that one question."
)

BELIEF_RESPONSE_TEMPLATE = (
    "Question: {question}\nWrite one or two sentences answering it from the view: '{belief}'."
)

_WORDS = re.compile(r"[a-z0-9']+")
# Words too common to tell whether a paraphrase is on the question's topic (> 3 letters).
_STOPWORDS = frozenset((
    "about", "after", "also", "been", "being", "could", "does", "doing", "each", "every",
    "from", "have", "into", "more", "most", "much", "over", "says", "should", "some", "such",
    "than", "that", "their", "them", "then", "there", "these", "they", "this", "those", "very",
    "were", "what", "when", "where", "which", "while", "will", "with", "would", "your",
))
_QUOTED_QUESTION = re.compile(r"[\"\u201c]([^\"\u201c\u201d]{3,}?\?)")
_LEAD_LABEL = re.compile(r"^[^?:]{0,60}:\s+")
_ENUMERATION = re.compile(r"^\s*(?:[-*#>\u2022]+|\(?\d{1,2}[.)])\s*")
_MAX_QUESTION_WORDS = 60


def _content_words(text: str) -> set[str]:
    return {w for w in _WORDS.findall(text.lower()) if len(w) > 3 and w not in _STOPWORDS}


def _question_in_line(line: str) -> str:
    """The question a line holds: a quoted one, else the last sentence ending in '?'."""
    quoted = _QUOTED_QUESTION.search(line)
    if quoted is not None:
        return quoted.group(1)
    line = _ENUMERATION.sub("", line.strip().strip("*_ "))
    label = _LEAD_LABEL.match(line)  # "Rewritten:", "A casual person would ask:" ...
    if label is not None:
        line = line[label.end():]
    line = line[: line.rfind("?") + 1]
    return re.split(r"(?<=[.!])\s+", line)[-1]


def _is_excerpt(words: list[str], original: list[str]) -> bool:
    """Whether ``words`` occur in ``original`` in one piece."""
    n = len(words)
    return any(original[i:i + n] == words for i in range(len(original) - n + 1))


def _usable_question(question: str, original: str) -> str | None:
    question = question.strip(" \"'*_()\u201c\u201d\u2018\u2019")
    if not question.endswith("?") or not 3 <= len(question.split()) <= _MAX_QUESTION_WORDS:
        return None
    if _is_excerpt(_WORDS.findall(question.lower()), _WORDS.findall(original.lower())):
        # A copy of (part of) the question is no paraphrase; small models often copy the
        # lead-in of a survey question and drop the item it asks about.
        return None
    if not _content_words(question) & _content_words(original):
        return None  # a question on another topic is no paraphrase either
    return question


def _overlap_terms(text: str) -> set[str | tuple[str, str]]:
    """Content words and word pairs: pairs tell "American citizens" from "American government"."""
    words = _WORDS.findall(text.lower())
    return _content_words(text) | set(itertools.pairwise(words))


def fits_only_its_question(paraphrase: str, original: str, others: Sequence[str]) -> bool:
    """Whether ``paraphrase`` shares more content words and word pairs with ``original``
    than with any of ``others`` (the other questions of the build).

    Small models keep a survey question's lead-in and drop its item ("Which of these
    characteristics do you associate with the Chinese people?" for the Generous,
    Greedy, ... rows): such a question asks something else, and rows with
    different answer distributions would share one prompt.
    """
    terms = _overlap_terms(paraphrase)
    own = len(terms & _overlap_terms(original))
    return all(len(terms & _overlap_terms(other)) < own for other in others if other != original)


def parse_paraphrase(text: str, original: str) -> str | None:
    """The paraphrased question in an answer, or None when there is no usable one.

    The first line that reads as a question wins: a line with a '?' whose
    question has 3 to 60 words, is not a copy of ``original`` or of a part of
    it, and shares a content word with it.
    """
    for line in text.splitlines():
        usable = _usable_question(_question_in_line(line), original) if "?" in line else None
        if usable is not None:
            return usable
    return None


_ANSWER_LABEL = re.compile(
    r"^\s*[*_#>\s]*(?:answer|response|reply|my answer|my view|view|a)\s*[*_]*\s*:\s*[*_]*\s*",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)]*\s+")
_OPEN_QUOTES, _CLOSE_QUOTES = "\"'\u201c\u2018", "\"'\u201d\u2019"


def _unwrap(text: str) -> str:
    """``text`` without markdown emphasis and without quotes around all of it."""
    text = text.strip(" *_")
    if text and text[0] in _OPEN_QUOTES:
        text = text[1:]
        if text and text[-1] in _CLOSE_QUOTES:
            text = text[:-1]  # a quote closing inside the text ('say "no".') is kept
    return text.strip(" *_")


def clean_response(text: str, max_sentences: int = 2, max_chars: int = 300) -> str:
    """A model's answer cut to a short response; "" when nothing usable is left.

    Drops an "Answer:" label and wrapping quotes, keeps the first paragraph,
    drops repeated sentences (small models loop) and an unfinished last
    sentence, keeps ``max_sentences`` sentences and at most ``max_chars``
    characters (cut at a sentence end, else at a word, marked with "...").
    """
    paragraph = next((p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()), "")
    paragraph = _unwrap(_ANSWER_LABEL.sub("", " ".join(paragraph.split())))
    sentences: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        sentence = sentence.strip()
        if sentence and sentence not in sentences:
            sentences.append(sentence)
    if len(sentences) > 1 and not sentences[-1].rstrip(_CLOSE_QUOTES).endswith((".", "!", "?")):
        sentences.pop()  # cut off by the token cap mid-sentence
    out = ""
    for sentence in sentences[:max_sentences]:
        joined = f"{out} {sentence}".strip()
        if len(joined) > max_chars:
            break
        out = joined
    if not out and sentences:  # one sentence longer than the cap: cut at a word
        out = sentences[0][:max_chars].rsplit(" ", 1)[0].rstrip(" ,;:") + "..."
    return _unwrap(out)


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
LABELS = ("agree", "disagree", "neutral")
# Small models answer in sentences: "The statement is not relevant to the conversation."
# (neutral) or "No, the reply does not agree with ..." (disagree, not agree). The first
# phrase in the answer decides.
_LABEL_PHRASES = (
    ("neutral", r"neutral|not relevant|irrelevant|unrelated|neither"),
    ("disagree", r"disagrees?|(?:does|do|did|would)\s*(?:not|n['\u2019]t)\s+agree|not\s+agree"),
    ("agree", r"agrees?"),
)
_LABEL = re.compile(
    "|".join(rf"(?P<{name}>\b(?:{pattern})\b)" for name, pattern in _LABEL_PHRASES),
    re.IGNORECASE,
)


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
    """agree, disagree or neutral: the first such phrase in the answer ("does not agree"
    is disagree, "not relevant" is neutral); None when there is none."""
    match = _LABEL.search(text)
    return match.lastgroup if match else None
