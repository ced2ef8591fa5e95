"""Stage 2: which user turns carry a preference signal about the answer before them.

Each user turn that follows an assistant turn is a candidate. Cue patterns
(high precision, free) and an LLM label (recall, through the shared backend)
are combined: a cue wins, an LLM label alone is kept with ``source="llm"``.
Every candidate is written, ``none`` included, so the stage can be audited.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pluralign.gpa.common import StepStats, ask, clip
from pluralign.gpa.config import GPAConfig
from pluralign.gpa.io import read_jsonl, stage_path, write_jsonl
from pluralign.gpa.prompts import render
from pluralign.llm import LLMBackend

LABELS = ("none", "feedback_positive", "feedback_negative", "correction", "rephrase", "more",
          "less")

#: Languages a user may ask an answer to be given in (shared with the attribute cues).
LANGUAGES = (r"russian|chinese|spanish|french|german|arabic|malay|turkish|japanese|korean|"
             r"portuguese|italian|hindi|indonesian|persian|vietnamese|ukrainian|dutch")

#: Cue patterns in priority order: the first that matches names the turn's label.
CUES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((label, re.compile(pattern, re.I)) for
                                                      label, pattern in (
    ("correction", r"\b(that'?s (wrong|incorrect|not (right|correct|true))|you('re| are) wrong|"
                   r"incorrect|not what i (asked|wanted|meant)|mistake|you misunderstood|"
                   r"i said|i asked for|(did|got|done) (it|this|that) wrong|wrong again|"
                   r"i('m| am) not asking|(i|we)('m| am|'re| are| was| were) talking about|"
                   r"i meant|with (the )?correct)\b"),
    ("rephrase", r"\b(rephrase|rewrite|re-write|reword|paraphrase|in other words|"
                 r"say it differently|another way|try again|redo|regenerate|wording|phrasing|"
                 r"something (a (little|bit) )?(more )?(catchy|catchier|different|else|better)|"
                 r"another (one|version|option)|version of (the above|that|this|it|your)|"
                 rf"(translate (it|this|that|them) )?(in|into) ({LANGUAGES}))\b"),
    ("less", r"\b(shorter|shorten|too long|briefly|brief|concise|summari[sz]e|simpler|simplify|"
             r"in \d+ words|one sentence|tl;?dr|less)\b"),
    ("more", r"\b(more details?|elaborate|expand|extend|longer|at least \d+|continue|"
             r"go on(?=\W*$)|tell me more|more examples?|in depth|explain more|add more|"
             r"keep going|follow[- ]?up where)\b"),
    ("feedback_negative", r"\b(not helpful|useless|bad answer|doesn'?t work|didn'?t work|"
                          r"not good|terrible|wrong answer|that'?s not it)\b"),
    ("feedback_positive", r"\b(thanks|thank you|great|perfect|awesome|good job|excellent|"
                          r"that helps|helpful|well done)\b"),
))

_LABEL_RE = re.compile(r"\b(" + "|".join(sorted(LABELS, key=len, reverse=True)) + r")\b")


@dataclass(frozen=True)
class Candidate:
    conversation: dict[str, Any]
    user_turn: int
    assistant_turn: int
    answer: str
    message: str


def cue_head(message: str, chars: int) -> str:
    """The instruction part of a message that cues are matched in.

    Users paste stories, code and articles after their request; a cue word inside
    the pasted text ("... was going to go on a quest ...") is not a reaction.
    """
    return message[:chars]


def cue_label(message: str, chars: int = 240) -> tuple[str, str | None]:
    """(label, the matched text) from the cue patterns in the message's first ``chars``
    characters; ("none", None) when none fires."""
    head = cue_head(message, chars)
    for label, pattern in CUES:
        match = pattern.search(head)
        if match:
            return label, match.group(0)
    return "none", None


def parse_label(text: str | None) -> str | None:
    """The first label named in an LLM answer (``feedback positive`` spelled loosely too)."""
    if not text:
        return None
    match = _LABEL_RE.search(text.lower().replace("feedback positive", "feedback_positive")
                             .replace("feedback negative", "feedback_negative"))
    return match.group(1) if match else None


def candidates(conversations: list[dict[str, Any]]) -> list[Candidate]:
    """User turns right after an assistant turn, in conversations used for mining."""
    found = []
    for conv in conversations:
        if conv.get("split", "mine") != "mine":
            continue
        messages = conv["messages"]
        for prev, cur in itertools.pairwise(messages):
            if prev["role"] == "assistant" and cur["role"] == "user":
                found.append(Candidate(conv, cur["turn"], prev["turn"], prev["content"],
                                       cur["content"]))
    return found


def combine(cue: str, llm: str | None) -> tuple[str, str]:
    """(label, source): cues are precise, so they win; the LLM adds recall."""
    if cue != "none":
        return cue, "cue+llm" if llm == cue else "cue"
    if llm is not None and llm != "none":
        return llm, "llm"
    return "none", "none"


def classify_turns(conversations: list[dict[str, Any]], backend: LLMBackend | None,
                   config: GPAConfig, stats: StepStats | None = None) -> list[dict[str, Any]]:
    """One row per candidate user turn, with provenance, cue label, LLM label and the verdict."""
    stats = stats if stats is not None else StepStats()
    found = candidates(conversations)
    llm_answers: list[str | None] = [None] * len(found)
    if backend is not None and config.use_llm_labels:
        prompts = [render("classify", answer=clip(c.answer, config.label_chars),
                          message=clip(c.message, config.label_chars)) for c in found]
        llm_answers = ask(backend, prompts, stats, max_tokens=8)
    rows = []
    for cand, raw in zip(found, llm_answers, strict=True):
        cue, matched = cue_label(cand.message, config.cue_chars)
        llm = parse_label(raw)
        label, source = combine(cue, llm)
        rows.append({
            "conversation_id": cand.conversation["conversation_id"],
            "group": cand.conversation["group"], "user_turn": cand.user_turn,
            "assistant_turn": cand.assistant_turn, "label": label, "signal": label != "none",
            "source": source, "cue_label": cue, "cue_match": matched, "llm_label": llm,
            "llm_raw": raw, "message": clip(cand.message, 300),
        })
    return rows


def run_classify(config: GPAConfig, backend: LLMBackend | None) -> dict[str, Any]:
    """Stage 2: ``conversations.jsonl`` -> ``signals.jsonl``; returns a summary."""
    conversations = list(read_jsonl(stage_path(config.work_dir, "ingest")))
    stats = StepStats()
    rows = classify_turns(conversations, backend, config, stats)
    write_jsonl(stage_path(config.work_dir, "signals"), rows)
    return {"candidates": len(rows), "signals": sum(r["signal"] for r in rows),
            "labels": dict(Counter(r["label"] for r in rows)), "llm": stats.as_dict()}
